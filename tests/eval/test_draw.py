"""Labels: one text colour on a filled background of the box colour, placed in the image."""
import numpy as np
import pytest

from yolox_jax.eval.draw import PALETTE, draw_boxes, label_rect, text_colour

GREY = 90


def label_pixels(image, text, box):
    x0, y0, x1, y1 = label_rect(text, box, image.shape[:2])
    return image[y0:y1 + 1, x0:x1 + 1].reshape(-1, 3).astype(float)


@pytest.mark.parametrize("cls", range(len(PALETTE)))
def test_label_is_text_in_one_colour_on_the_box_colour(cls):
    img = np.full((80, 120, 3), GREY, np.uint8)
    box = np.array([[20, 30, 100, 70.0]])
    out = draw_boxes(img, box, np.array([cls]), np.array([0.86]), None)
    pixels = label_pixels(out, f"{cls} 0.86", box[0])
    bg, fg = np.array(PALETTE[cls], float), np.array(text_colour(PALETTE[cls]), float)
    # Every pixel lies on the segment from the background to the text colour (anti-aliased
    # blends of those two only, to rounding): no third colour, no outline.
    d = fg - bg
    t = np.clip((pixels - bg) @ d / (d @ d), 0, 1)
    assert np.abs(pixels - (bg + t[:, None] * d)).max() <= 1.5
    assert (t < 0.05).mean() > 0.5  # mostly background
    assert (t > 0.95).sum() >= 10  # and text in its own colour
    assert np.all(np.abs(pixels[:1] - bg) <= 1)  # a corner is background


def test_text_colour_follows_brightness():
    assert text_colour((255, 255, 0)) == (0, 0, 0)
    assert text_colour((255, 0, 255)) == (255, 255, 255)
    assert text_colour((0, 0, 0)) == (255, 255, 255)


def test_label_above_the_box_inside_at_the_top_and_in_the_image():
    hw = (60, 100)
    x0, y0, x1, y1 = label_rect("0 0.50", (10, 40, 50, 55), hw)
    assert y1 < 40 and x0 == 10  # above the box, at its left edge
    x0, y0, x1, y1 = label_rect("0 0.50", (10, 0, 50, 30), hw)
    assert y0 == 0 and y1 < 30  # at the top edge: inside the box
    x0, y0, x1, y1 = label_rect("0 0.50", (95, 20, 100, 30), hw)
    assert x1 == hw[1] - 1 and x0 < 95  # at the right edge: moved left to fit
    x0, y0, x1, y1 = label_rect("a very long label 0.50", (0, 0, 20, 20), (20, 30))
    assert (x0, y0) == (0, 0) and x1 == 29 and y1 <= 19  # larger than the image: clipped


def test_draw_boxes_leaves_input_untouched():
    img = np.zeros((40, 40, 3), np.uint8)
    out = draw_boxes(img, np.array([[5, 5, 30, 30.0]]), np.array([1]), np.array([0.9]), ["a", "b"])
    assert img.sum() == 0 and out.sum() > 0
