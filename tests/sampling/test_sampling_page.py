"""Comic page composition: layout, borders, lettering drawn legibly away from the panel centre."""

from __future__ import annotations

import numpy as np
from PIL import Image

from sampling.comic.layout import Box
from sampling.comic.lettering import NARRATION_FILL, centre_box
from sampling.comic.page import PageStyle, compose_page
from sampling.comic.script import DialogueLine, Layout, Page, Panel

COLOURS = [(200, 40, 40), (40, 160, 40), (40, 40, 200), (180, 160, 20), (120, 20, 140)]
STYLE = PageStyle(panel_px=160, margin=20, gutter=12, border=3, title_height=40)
LETTERING_STYLE = PageStyle(panel_px=320)  # the default panel size


def tiles(n, size=16):
    return [Image.new("RGB", (size, size), COLOURS[i]) for i in range(n)]


def runs_of_colour(row: np.ndarray, colour) -> int:
    """How many separate runs of `colour` a line of pixels crosses."""
    hit = np.all(row == np.array(colour), axis=-1).astype(int)
    return int(np.sum(np.diff(np.concatenate([[0], hit])) == 1))


def test_grid_layout_panel_count_and_borders():
    page = Page("Title", Layout(2, 2), tuple(Panel(caption=f"p{i}") for i in range(4)))
    image, layout, warnings = compose_page(page, tiles(4), STYLE)
    pixels = np.asarray(image)
    assert image.size == (2 * 20 + 2 * 160 + 12, 20 + 40 + 12 + 2 * 160 + 12 + 20)
    assert len(layout["panels"]) == 4 and not warnings
    # Scan through the middle of each row and column: two panels each, in reading order.
    top_row_y, bottom_row_y = 20 + 40 + 12 + 80, 20 + 40 + 12 + 160 + 12 + 80
    left_x = 20 + 80
    assert runs_of_colour(pixels[top_row_y], COLOURS[0]) == 1 and runs_of_colour(pixels[top_row_y], COLOURS[1]) == 1
    assert (
        runs_of_colour(pixels[bottom_row_y], COLOURS[2]) == 1 and runs_of_colour(pixels[bottom_row_y], COLOURS[3]) == 1
    )
    assert runs_of_colour(pixels[:, left_x], COLOURS[0]) == 1 and runs_of_colour(pixels[:, left_x], COLOURS[2]) == 1
    for panel, colour in zip(layout["panels"], COLOURS):
        x0, y0, x1, y1 = panel["box"]
        assert x1 - x0 == 160 and y1 - y0 == 160
        cy = (y0 + y1) // 2
        assert tuple(pixels[cy, x0 + 1]) == (0, 0, 0) and tuple(pixels[cy, x1 - 2]) == (0, 0, 0)  # border
        assert tuple(pixels[cy, (x0 + x1) // 2]) == colour
        assert tuple(pixels[cy, x0 - 2]) == (255, 255, 255) or x0 - 2 < 20  # gutter / margin stay white
    title = pixels[20:60, 20:-20]
    assert (title.sum(axis=-1) < 200).mean() > 0.01  # title text is there


def test_strip_and_centred_short_row():
    strip, layout, _ = compose_page(Page(None, Layout(1, 3), tuple(Panel("c") for _ in range(3))), tiles(3), STYLE)
    assert strip.size == (2 * 20 + 3 * 160 + 2 * 12, 2 * 20 + 160)  # no title band
    assert runs_of_colour(np.asarray(strip)[20 + 80], COLOURS[1]) == 1
    _, layout, _ = compose_page(Page(None, Layout(2, 2), tuple(Panel("c") for _ in range(3))), tiles(3), STYLE)
    x0, _, x1, _ = layout["panels"][2]["box"]
    page_width = 2 * 20 + 2 * 160 + 12
    assert abs((x0 + x1) / 2 - page_width / 2) <= 1  # the lone panel of the last row is centred


def _dark_fraction(pixels: np.ndarray, box) -> float:
    x0, y0, x1, y1 = box
    region = pixels[y0:y1, x0:x1].astype(int)
    return float((region.sum(axis=-1) < 250).mean())


def test_lettering_is_drawn_inside_its_boxes_and_clear_of_the_centre():
    dialogue = (
        DialogueLine("Ana", "Look at the boats in the harbour!", "speech"),
        DialogueLine("Ben", "I wonder where they go.", "thought"),
        DialogueLine("Gull", "Squawk!", "shout"),
    )
    page = Page(None, Layout(1, 1), (Panel("c", narration="It was a windy morning.", dialogue=dialogue),))
    image, layout, warnings = compose_page(page, tiles(1), LETTERING_STYLE)
    pixels = np.asarray(image)
    items = layout["panels"][0]["lettering"]
    assert [i["kind"] for i in items] == ["narration", "speech", "thought", "shout"] and not warnings
    panel_box = Box(*layout["panels"][0]["box"])
    clear = centre_box(panel_box.inset(LETTERING_STYLE.border))
    boxes = [Box(*i["box"]) for i in items]
    for n, box in enumerate(boxes):
        assert panel_box.contains(box)
        assert box.overlap(clear) == 0
        assert all(box.overlap(other) == 0 for other in boxes[n + 1 :])
        assert items[n]["font_size"] >= 14  # legible at the default panel size
    # Text: dark strokes on a light background inside every balloon and the narration box.
    for item in items:
        x0, y0, x1, y1 = item["box"]
        inner = (x0 + 8, y0 + 6, x1 - 8, y1 - 6)
        assert 0.03 < _dark_fraction(pixels, inner) < 0.6, item
    narration = items[0]["box"]
    region = pixels[narration[1] : narration[3], narration[0] : narration[2]]
    assert np.all(region == np.array(NARRATION_FILL), axis=-1).mean() > 0.4
    speech = items[1]["box"]
    region = pixels[speech[1] + 4 : speech[3] - 4, speech[0] + 10 : speech[2] - 10]
    assert np.all(region == 255, axis=-1).mean() > 0.4
    # The centre of the panel still shows the picture.
    cx0, cy0, cx1, cy1 = clear.as_list()
    assert np.all(pixels[cy0:cy1, cx0:cx1] == np.array(COLOURS[0]), axis=-1).mean() > 0.97
    # Different words give different pixels: the text itself is drawn.
    other = Page(
        None,
        Layout(1, 1),
        (
            Panel(
                "c",
                narration="It was a windy morning.",
                dialogue=(DialogueLine("Ana", "Look at the ships in the harbour!", "speech"),) + dialogue[1:],
            ),
        ),
    )
    other_pixels = np.asarray(compose_page(other, tiles(1), LETTERING_STYLE)[0])
    x0, y0, x1, y1 = speech
    assert (other_pixels[y0:y1, x0:x1] != pixels[y0:y1, x0:x1]).any()
    assert (other_pixels[:y0] == pixels[:y0]).all()


def test_overlong_text_is_cut_with_a_warning():
    page = Page(None, Layout(1, 1), (Panel("c", narration="word " * 400),))
    _, layout, warnings = compose_page(page, tiles(1), STYLE)
    assert layout["panels"][0]["lettering"][0]["truncated"]
    assert warnings and "cut to fit" in warnings[0]


def test_crowded_panel_still_places_everything_and_warns():
    dialogue = tuple(DialogueLine("A", f"line number {i} of a long conversation here", "speech") for i in range(8))
    _, layout, warnings = compose_page(Page(None, Layout(1, 1), (Panel("c", dialogue=dialogue),)), tiles(1), STYLE)
    assert len(layout["panels"][0]["lettering"]) == 8
    assert any("could not avoid" in w for w in warnings)
