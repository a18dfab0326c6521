"""Named layouts, gutters and bleed, and right-to-left pages: script parsing, page geometry, composed pages."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sampling.comic.arrange import mirror_box, page_boxes, page_style, panel_aspects
from sampling.comic.layout import Box
from sampling.comic.layouts import NAMED_LAYOUTS
from sampling.comic.page import PageStyle, compose_page
from sampling.comic.script import Layout, ScriptError, parse_script
from sampling.shapes import fit_shape

STYLE = PageStyle(panel_px=96, margin=10, gutter=8, title_height=0, avoid_subject=False)


def page_of(yaml_panels: int, **keys):
    data = {"panels": [{"caption": f"c{i}"} for i in range(yaml_panels)], **keys}
    return parse_script(data, "t.yaml").pages[0]


def tiles(n, size=(64, 64)):
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


@pytest.mark.parametrize("name, count", [("splash", 1), ("3-tier", 3), ("wide-top", 3), ("l-shape", 4)])
def test_named_layouts_parse_and_give_each_panel_its_own_shape(name, count):
    page = page_of(count, layout=name)
    assert page.layout is NAMED_LAYOUTS[name] and page.layout.describe() == name
    boxes = page_boxes(page, STYLE).panel_boxes
    assert len(boxes) == count
    for i, a in enumerate(boxes):  # inside the page, apart by at least the gutter
        assert a.x0 >= STYLE.margin and a.y0 >= STYLE.margin
        for b in boxes[i + 1 :]:
            assert a.overlap(b) == 0


def test_panel_aspects_of_the_named_layouts():
    step = STYLE.panel_px + STYLE.gutter
    wide = (2 * step - STYLE.gutter) / STYLE.panel_px
    assert panel_aspects(page_of(3, layout="wide-top"), STYLE) == pytest.approx([wide, 1, 1])
    assert panel_aspects(page_of(4, layout="l-shape"), STYLE) == pytest.approx([1 / wide, 1, 1, wide])
    splash = panel_aspects(page_of(1, layout="splash"), STYLE)[0]
    assert splash == pytest.approx((2 * step - STYLE.gutter) / (3 * step - STYLE.gutter))
    # a wide-top's first panel is drawn wide, not cropped from a square: 2:1 within a 32px model's budget
    assert fit_shape(wide, 32, 4) == (20, 40)


def test_auto_fits_the_panel_count_and_named_layouts_refuse_other_counts():
    assert page_of(1, layout="auto").layout.describe() == "splash"
    assert page_of(3, layout="auto").layout.describe() == "wide-top"
    assert page_of(4, layout="auto").layout.describe() == "l-shape"
    assert page_of(5, layout="auto").layout == Layout(2, 3)  # no named layout for 5: the default grid
    with pytest.raises(ScriptError, match="layout wide-top holds exactly 3 panel\\(s\\) but the page has 4; use"):
        page_of(4, layout="wide-top")
    with pytest.raises(ScriptError, match="splash, 3-tier, wide-top, l-shape, auto"):
        page_of(2, layout="spread")
    with pytest.raises(ScriptError, match="reading_order: must be one of ltr, rtl"):
        page_of(2, reading_order="up")
    with pytest.raises(ScriptError, match="gutter: must be between 0 and 200"):
        page_of(2, gutter=-1)
    with pytest.raises(ScriptError, match="bleed: expected true or false"):
        page_of(2, bleed="yes")


def test_script_keys_for_export_and_per_page_settings():
    script = parse_script(
        {
            "title": "T",
            "writer": "Ann",
            "summary": "A story.",
            "reading_order": "rtl",
            "gutter": 4,
            "pages": [{"panels": ["a"]}, {"panels": ["b", "c"], "gutter": 30, "bleed": True}],
        },
        "t.yaml",
    )
    assert (script.writer, script.summary, script.reading_order) == ("Ann", "A story.", "rtl")
    first, second = script.pages
    assert (first.gutter, first.bleed, first.reading_order) == (4, False, "rtl")
    assert (second.gutter, second.bleed, second.reading_order) == (30, True, "rtl")


def test_gutter_and_bleed_change_the_geometry():
    page = page_of(3, layout="wide-top", gutter=30)
    boxes = page_boxes(page, page_style(page, STYLE)).panel_boxes
    assert boxes[2].x0 - boxes[1].x1 == 30 and boxes[1].y0 - boxes[0].y1 == 30
    bled = page_of(3, layout="wide-top", bleed=True)
    geometry = page_boxes(bled, page_style(bled, STYLE))
    assert geometry.panel_boxes[0].x0 == geometry.panel_boxes[0].y0 == 0
    assert geometry.panel_boxes[2].x1 == geometry.size[0] and geometry.panel_boxes[2].y1 == geometry.size[1]
    image, _, _ = compose_page(bled, tiles(3), STYLE)
    corner = np.asarray(image)[:3, :3].astype(int)
    assert (corner.sum(axis=-1) > 0).all()  # art, not a black border, at the paper's edge


@pytest.mark.parametrize("layout", ["2x2", "wide-top", "l-shape", "3-tier"])
def test_an_rtl_page_mirrors_the_ltr_page(layout):
    count = {"2x2": 4, "wide-top": 3, "l-shape": 4, "3-tier": 3}[layout]
    dialogue = [{"speaker": "A", "text": "Hello there!"}, {"speaker": "B", "text": "Hi."}]
    panels = [{"caption": f"c{i}", "narration": "Later.", "dialogue": dialogue} for i in range(count)]
    ltr = parse_script({"layout": layout, "panels": panels}, "t.yaml").pages[0]
    rtl = parse_script({"layout": layout, "reading_order": "rtl", "panels": panels}, "t.yaml").pages[0]
    _, ltr_layout, _ = compose_page(ltr, tiles(count), STYLE)
    _, rtl_layout, _ = compose_page(rtl, tiles(count), STYLE)
    width = ltr_layout["size"][0]
    assert rtl_layout["size"] == ltr_layout["size"]
    for a, b in zip(ltr_layout["panels"], rtl_layout["panels"]):
        assert b["box"] == [width - a["box"][2], a["box"][1], width - a["box"][0], a["box"][3]]
        inner = Box(*b["box"]).inset(STYLE.border)
        shift = b["box"][0] - a["box"][0]
        assert len(a["lettering"]) == len(b["lettering"]) == 3
        for la, lb in zip(a["lettering"], b["lettering"]):  # placed as on the mirrored panel: the first one right
            x0, y0, x1, y1 = la["box"]
            assert lb["box"] == mirror_box(Box(x0 + shift, y0, x1 + shift, y1), inner.x0, inner.x1).as_list()
            assert (la["text"], la["font_size"]) == (lb["text"], lb["font_size"])
    if layout == "2x2":  # reading order: panel 1 top right, panel 2 to its left
        first, second = (p["box"] for p in rtl_layout["panels"][:2])
        assert first[1] == second[1] and first[0] > second[0]


def test_rtl_art_and_lettering_are_not_flipped():
    panels = [{"caption": "a"}, {"caption": "b"}, {"caption": "c"}]
    ltr = parse_script({"layout": "wide-top", "panels": panels}, "t.yaml").pages[0]
    rtl = parse_script({"layout": "wide-top", "reading_order": "rtl", "panels": panels}, "t.yaml").pages[0]
    art = tiles(3, size=(80, 40))
    ltr_image, ltr_layout, _ = compose_page(ltr, art, STYLE)
    rtl_image, rtl_layout, _ = compose_page(rtl, art, STYLE)
    for a, b in zip(ltr_layout["panels"], rtl_layout["panels"]):
        assert (np.asarray(ltr_image.crop(a["box"])) == np.asarray(rtl_image.crop(b["box"]))).all()
    # Lettering is moved, not mirrored: the narration box reads the same, pixel for pixel, at its new place.
    narrated = {"panels": [{"caption": "a", "narration": "Then the storm came."}]}
    ltr_image, ltr_layout, _ = compose_page(parse_script(narrated, "t").pages[0], tiles(1), STYLE)
    rtl_script = parse_script({**narrated, "reading_order": "rtl"}, "t")
    rtl_image, rtl_layout, _ = compose_page(rtl_script.pages[0], tiles(1), STYLE)
    a, b = (Box(*lay["panels"][0]["lettering"][0]["box"]).inset(4) for lay in (ltr_layout, rtl_layout))
    assert a != b and a.width == b.width
    text_ltr, text_rtl = np.asarray(ltr_image.crop(a.as_list())), np.asarray(rtl_image.crop(b.as_list()))
    assert (text_ltr == text_rtl).all() and (text_ltr != text_ltr[:, ::-1]).any()


def test_a_panel_shape_the_model_cannot_make_is_one_clear_error():
    from types import SimpleNamespace

    from finetune.model import get_preset
    from sampling.comic.panel_shapes import PanelShapeError, panel_shapes

    base = SimpleNamespace(options=get_preset("tiny-base"), image_size=32)
    pipeline = SimpleNamespace(models=SimpleNamespace(base=base, upsampler=None))
    fine = parse_script({"layout": "3-tier", "panels": ["a", "b", "c"]}, "t.yaml")
    assert panel_shapes(fine, STYLE, pipeline)[(1, 1)] == (20, 40)
    thin = parse_script({"layout": "3-tier", "gutter": 200, "panels": ["a", "b", "c"]}, "t.yaml")
    with pytest.raises(PanelShapeError, match=r"^page 1 panel 1: aspect ratio 4\.08 \(width/height\) is outside 1:4"):
        panel_shapes(thin, STYLE, pipeline)
