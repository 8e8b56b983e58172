"""Training / eval loaders: determinism, worker-count independence, checkpointing, sharding."""
import numpy as np
import pytest

from yolox_jax.data import SyntheticShapes, eval_loader, train_dataset, train_loader, transforms as T

SMALL = dict(input_size=(96, 96), batch_size=4, max_labels=16, mosaic_scale=(0.5, 1.5))


@pytest.fixture(scope="module")
def source():
    return SyntheticShapes(24, image_size=(64, 80), num_classes=3, seed=0)


def _equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_batch_layout(source):
    b = next(iter(train_loader(source, seed=0, **SMALL)))
    assert set(b) == {"images", "labels", "label_mask"}
    assert b["images"].shape == (4, 96, 96, 3) and b["images"].dtype == np.uint8
    assert b["labels"].shape == (4, 16, 5) and b["labels"].dtype == np.float32
    assert b["label_mask"].shape == (4, 16) and b["label_mask"].dtype == bool
    assert (b["labels"][~b["label_mask"]] == 0).all()
    lab = b["labels"][b["label_mask"]]
    assert (lab[:, 3:] > 1).all() and (lab[:, 0] >= 0).all() and (lab[:, 0] < 3).all()


def test_same_seed_same_batches_other_seed_differs(source):
    a = train_dataset(source, seed=3, **SMALL)
    b = train_dataset(source, seed=3, **SMALL)
    c = train_dataset(source, seed=4, **SMALL)
    for i in (0, 7):  # 7 is in the second epoch (6 batches per epoch)
        assert _equal(a[i], b[i])
    assert not np.array_equal(a[0]["images"], c[0]["images"])


def test_epochs_reshuffle_and_cover_each_image_once():
    ids = SyntheticShapes(10, image_size=(32, 32), seed=0)
    ds = train_dataset(ids, input_size=(32, 32), batch_size=5, seed=0, mosaic_prob=0.0, enable_mixup=False,
                       flip_prob=0.0, hsv_prob=0.0, num_epochs=2)
    assert len(ds) == 4
    # With no augmentation each output image is its source image: recover the order.
    lookup = {ids[i]["image"].tobytes(): i for i in range(10)}
    order = [lookup[img.tobytes()] for k in range(4) for img in ds[k]["images"]]
    assert sorted(order[:10]) == list(range(10)) and sorted(order[10:]) == list(range(10))
    assert order[:10] != order[10:]


def test_no_aug_phase_is_letterbox_flip_hsv_only():
    src = SyntheticShapes(4, image_size=(60, 120), seed=5)
    ds = train_dataset(src, input_size=(64, 64), batch_size=4, seed=0, mosaic_prob=0.0, enable_mixup=False,
                       flip_prob=0.0, hsv_prob=0.0, max_labels=8, num_epochs=1)
    b = ds[0]
    got = {b["images"][k].tobytes(): k for k in range(4)}
    for i in range(4):
        rec = src[i]
        img, boxes = T.prescale(rec["image"], rec["boxes_xyxy"], (64, 64))
        exp_img, r = T.letterbox(img, (64, 64))
        k = got[exp_img.tobytes()]
        cxcywh = T.xyxy_to_cxcywh(boxes) * np.float32(r)
        keep = np.minimum(cxcywh[:, 2], cxcywh[:, 3]) > 1
        np.testing.assert_allclose(b["labels"][k][b["label_mask"][k]][:, 1:], cxcywh[keep], rtol=1e-5)


def test_identical_across_worker_counts(source):
    runs = {}
    for workers in (0, 2):
        it = iter(train_loader(source, seed=1, num_workers=workers, **SMALL))
        runs[workers] = _take(it, 3)
        it.close()
    assert all(_equal(a, b) for a, b in zip(runs[0], runs[2]))


def test_iterator_state_restores_next_batch(source):
    loader = train_loader(source, seed=2, **SMALL)
    it = iter(loader)
    _take(it, 2)
    state = it.get_state()
    expected = _take(it, 2)
    fresh = iter(train_loader(source, seed=2, **SMALL))
    fresh.set_state(state)
    assert all(_equal(a, b) for a, b in zip(_take(fresh, 2), expected))


def test_iterator_state_through_orbax(source, tmp_path):
    import grain
    import orbax.checkpoint as ocp

    it = iter(train_loader(source, seed=2, **SMALL))
    _take(it, 3)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
    expected = next(it)
    fresh = iter(train_loader(source, seed=2, **SMALL))
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.restore(mngr.latest_step(), args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    assert _equal(next(fresh), expected)


def test_global_batches_do_not_depend_on_the_number_of_hosts():
    """Global batch i (images, labels, every augmentation draw) is a function of (seed, i):
    3 hosts x 2 rows, each materialising its slice, give exactly the 1-host batches of 6, with
    Mosaic, MixUp, flip and HSV on; hosts get equal numbers of batches; the first epoch is a
    permutation of every image."""
    src = SyntheticShapes(13, image_size=(48, 48), seed=0)
    kw = dict(input_size=(48, 48), seed=5, mosaic_prob=0.7, enable_mixup=True, num_epochs=2,
              max_labels=8)
    one = train_dataset(src, batch_size=6, **kw)
    hosts = [train_dataset(src, batch_size=2, shard_index=s, shard_count=3, **kw) for s in range(3)]
    assert len(one) == 26 // 6 and [len(h) for h in hosts] == [len(one)] * 3
    for i in range(len(one)):
        for key in ("images", "labels", "label_mask"):
            joined = np.concatenate([h[i][key] for h in hosts])
            np.testing.assert_array_equal(joined, one[i][key], err_msg=f"batch {i} {key}")
    plain = dict(kw, mosaic_prob=0.0, enable_mixup=False, flip_prob=0.0, hsv_prob=0.0,
                 num_epochs=1)
    lookup = {src[i]["image"].tobytes(): i for i in range(13)}
    firsts = train_dataset(src, input_size=(48, 48), batch_size=13, **{k: v for k, v in plain.items()
                                                                       if k != "input_size"})
    assert sorted(lookup[img.tobytes()] for img in firsts[0]["images"]) == list(range(13))


def test_max_labels_truncation_is_counted(caplog):
    crowded = SyntheticShapes(8, image_size=(96, 96), seed=0, objects=(6, 6), size_range=(0.15, 0.2))
    loader = train_loader(crowded, input_size=(96, 96), batch_size=4, seed=0, mosaic_prob=0.0,
                          enable_mixup=False, max_labels=3)
    it = iter(loader)
    b = next(it)
    assert b["label_mask"].sum(1).tolist() == [3, 3, 3, 3]
    assert loader.stats["truncated_images"] == 4 and loader.stats["dropped_labels"] >= 4
    next(it)
    assert loader.stats["truncated_images"] == 8 and loader.stats["batches"] == 2
    assert sum("max_labels" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("shard_count", [1, 2])
def test_eval_loader_every_image_once_padded(shard_count):
    src = SyntheticShapes(7, image_size=(40, 64), seed=3)
    ids, n_batches = [], set()
    for s in range(shard_count):
        batches = list(eval_loader(src, input_size=(32, 32), batch_size=3, shard_index=s, shard_count=shard_count))
        n_batches.add(len(batches))
        for b in batches:
            assert b["images"].shape == (3, 32, 32, 3) and b["images"].dtype == np.uint8
            assert b["image_id"].dtype == np.int64 and b["scale"].dtype == np.float32
            assert b["orig_hw"].dtype == np.int32 and b["orig_hw"].shape == (3, 2) and b["valid"].dtype == bool
            ids += b["image_id"][b["valid"]].tolist()
            assert (b["image_id"][~b["valid"]] == -1).all()
            for k in np.flatnonzero(b["valid"]):
                exp, r = T.letterbox(src[int(b["image_id"][k])]["image"], (32, 32))
                np.testing.assert_array_equal(b["images"][k], exp)
                assert b["scale"][k] == np.float32(r) and b["orig_hw"][k].tolist() == [40, 64]
    assert sorted(ids) == list(range(7)) and len(n_batches) == 1  # all shards in lock-step


def test_iter_from_step_count_resumes_exactly(source):
    loader = train_loader(source, seed=2, **SMALL)
    expected = _take(iter(loader), 8)[5:]  # crosses the epoch boundary at batch 6
    assert all(_equal(a, b) for a, b in zip(_take(loader.iter_from(5), 3), expected))
