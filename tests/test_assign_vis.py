"""yolox-jax assign-vis: the drawing (a dot of gt k's colour at each anchor assigned to gt k,
nothing at unassigned anchors) and the command end to end."""
import numpy as np
import pytest
from PIL import Image

from yolox_jax.eval import assign_vis as av

GREY = (100, 100, 100)


def _grid(hw):
    from yolox_jax.ops.anchors import anchor_grid

    g, s = anchor_grid(hw)
    return np.asarray(g), np.asarray(s)


def _index(grid_xy, strides, stride, x, y):
    return int(np.flatnonzero((strides == stride) & (grid_xy[:, 0] == x) & (grid_xy[:, 1] == y))[0])


def _case(quality=False):
    hw = (64, 96)
    image = np.full((*hw, 3), GREY, np.uint8)
    grid_xy, strides = _grid(hw)
    a = len(strides)
    gt_boxes = np.array([[12, 12, 10, 10], [71, 40, 20, 14], [0, 0, 0, 0]], np.float32)
    gt_mask = np.array([True, True, False])
    fg = np.zeros(a, bool)
    matched = np.zeros(a, np.int32)
    cand = np.zeros(a, bool)
    picks = {(8, 8, 4): 1, (8, 1, 1): 0, (16, 4, 2): 1, (32, 2, 1): 0}   # (stride, x, y) -> gt
    for (s, x, y), k in picks.items():
        i = _index(grid_xy, strides, s, x, y)
        fg[i], matched[i] = True, k
    cand_at = (8, 6, 6)
    cand[_index(grid_xy, strides, *cand_at)] = True
    cand |= fg
    q = np.where(fg, np.linspace(0.1, 1.0, a), 0.0).astype(np.float32) if quality else None
    asg = {"fg_mask": fg, "matched_gt": matched, "candidate_mask": cand, "quality": q}
    return image, gt_boxes, gt_mask, grid_xy, strides, asg, picks, cand_at


def _centre_px(s, x, y, scale):
    return int(np.floor((x + 0.5) * s * scale)), int(np.floor((y + 0.5) * s * scale))


@pytest.mark.parametrize("quality", [False, True])
def test_cell_has_gt_coloured_dots_at_assigned_anchors_only(quality):
    image, gt_boxes, gt_mask, grid_xy, strides, asg, picks, cand_at = _case(quality)
    scale = 2
    centres = av.anchor_centres(grid_xy, strides)
    for start, end, s in av.level_ranges(grid_xy, strides):
        sl = slice(start, end)
        cell = np.asarray(av.draw_cell(image, gt_boxes, gt_mask, centres[sl], asg["fg_mask"][sl],
                                       asg["matched_gt"][sl], asg["candidate_mask"][sl],
                                       None if asg["quality"] is None else asg["quality"][sl],
                                       scale))
        assert cell.shape == (64 * scale, 96 * scale, 3)
        for i in range(start, end):
            x, y = _centre_px(s, *grid_xy[i], scale)
            key = (s, int(grid_xy[i, 0]), int(grid_xy[i, 1]))
            if key in picks:
                assert tuple(cell[y, x]) == av.gt_colour(picks[key]), key
            elif key == cand_at:
                assert tuple(cell[y, x]) != GREY           # faint grey, not a gt colour
                assert all(tuple(cell[y, x]) != av.gt_colour(k) for k in range(3))
            else:
                assert tuple(cell[y, x]) == GREY, key      # nothing at unassigned anchors
        # gt 0's box outline is drawn in its colour (left edge at x = (12 - 5) * scale).
        assert tuple(cell[12 * scale, 7 * scale]) == av.gt_colour(0)


def test_grid_layout_places_cells_and_headers():
    image, gt_boxes, gt_mask, grid_xy, strides, asg, picks, _ = _case()
    other = {**asg, "fg_mask": np.zeros_like(asg["fg_mask"])}
    pic = av.assignment_grid(image, gt_boxes, gt_mask, grid_xy, strides,
                             {"first": asg, "second": other}, title="t", scale=2)
    assert pic.size == av.grid_size((64, 96), 2, 3, 2)
    arr = np.asarray(pic)
    ch, cw = 64 * 2, 96 * 2
    for (s, x, y), k in picks.items():
        col = [8, 16, 32].index(s)
        px, py = _centre_px(s, x, y, 2)
        ox = av.GAP + col * (cw + av.GAP)
        top0 = av.TITLE_H + av.COLUMN_H + av.ROW_HEADER_H
        assert tuple(arr[top0 + py, ox + px]) == av.gt_colour(k)
        top1 = top0 + av.ROW_HEADER_H + ch + av.GAP
        assert tuple(arr[top1 + py, ox + px]) != av.gt_colour(k)   # row 2: no foreground
    assert list(av.fg_counts(asg["fg_mask"], asg["matched_gt"], 3)) == [2, 2, 0]


def test_parse_boxes_and_options():
    from yolox_jax.cli.assign_vis import parse_options
    from yolox_jax.errors import UserError

    rows = av.parse_boxes("0,10,20,5,6; 2,30,40,7,8")
    assert rows.shape == (2, 5) and rows[1, 0] == 2
    for bad in ("", "0,1,2,3", "a,1,2,3,4", "0,1,2,0,4", "-1,1,2,3,4"):
        with pytest.raises(ValueError):
            av.parse_boxes(bad)
    assert parse_options(['tal={"topk": 9}'], ["tal"]) == {"tal": {"topk": 9}}
    for bad in (['tal=[1]'], ['dsl={"topk": 9}'], ["tal={topk"]):
        with pytest.raises(UserError):
            parse_options(bad, ["tal"])


TINY = ["data.input_size=(96,128)", "data.synthetic_image_size=(96,128)",
        "model.width=0.125", "data.synthetic_train_images=4"]


@pytest.mark.slow
def test_cli_writes_one_grid_per_image(tmp_path, capsys):
    from yolox_jax.cli import main

    out = tmp_path / "vis"
    rc = main(["assign-vis", "-f", "synthetic", "--assigners", "simota,tal", "--images", "2",
               "--scale", "1", "--options", 'tal={"topk": 9}', "--out", str(out), *TINY])
    assert rc == 0
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == ["image_000.png", "image_001.png"]
    with Image.open(out / files[0]) as img:
        assert img.size == av.grid_size((96, 128), 2, 3, 1)
    printed = capsys.readouterr().out
    assert "image_000.png: " in printed and "simota" in printed and "tal" in printed


def test_cli_user_errors(tmp_path, capsys):
    from yolox_jax.cli import main

    assert main(["assign-vis", "-f", "synthetic", "--assigners", "simota,nope",
                 "--out", str(tmp_path)]) == 2
    assert "unknown assigner" in capsys.readouterr().err
    assert main(["assign-vis", "-f", "synthetic", "--image", str(tmp_path / "x.png"),
                 "--out", str(tmp_path)]) == 2
    assert "--image and --boxes" in capsys.readouterr().err
