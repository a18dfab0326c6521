"""`python -m sampling comic --format png,pdf,cbz,webtoon`: non-square panels, RTL, and what readers open."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import xmlschema
from PIL import Image
from pypdf import PdfReader

from sampling.__main__ import main
from sampling.comic.export import page_names, safe_file_stem, webtoon_parts
from sampling.outputs import read_parameters

XSD = Path(__file__).parent / "data" / "ComicInfo-v2.0.xsd"
TITLE = 'Red/Blue: "Friends" <at> sea? & more'
SCRIPT = {
    "title": TITLE,
    "writer": "A. Writer & Co",
    "summary": "Two shapes <meet> at sea.",
    "reading_order": "rtl",
    "seed": 5,
    "pages": [
        {"layout": "wide-top", "panels": ["a red boat at sea", "a blue bird", {"caption": "a red circle"}]},
        {"layout": "auto", "panels": ["a", "b", "c", {"caption": "d", "narration": "The end."}]},
    ],
}


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def comic_args(tiny_models, fast_args, script, out, *extra):
    model = ["--model", tiny_models["pipeline"], "--out", out, "--panel-size", "64", "--batch-size", "4"]
    return ["comic", script, *model, *fast_args, *extra]


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    script = root / "story.json"
    script.write_text(json.dumps(SCRIPT), encoding="utf-8")
    out = root / "comic"
    fast = ["--steps", "3", "--upsample-steps", "3", "--device", "cpu", "--quiet"]
    args = comic_args(tiny_models, fast, script, out, "--format", "pdf,cbz,webtoon", "--dpi", "72")
    assert run_cli(*args) == 0
    return {"root": root, "script": script, "out": out, "args": args, "fast": fast}


def test_panels_are_drawn_at_their_box_shape(made):
    out = made["out"]
    meta = json.loads((out / "comic.json").read_text())
    assert meta["reading_order"] == "rtl" and meta["writer"] == "A. Writer & Co"
    wide = next(p for p in meta["panels"] if (p["page"], p["panel"]) == (1, 1))
    x0, y0, x1, y1 = wide["box"]
    with Image.open(out / wide["file"]) as im:
        width, height = im.size
    assert width > height and abs(width / height - (x1 - x0) / (y1 - y0)) < 0.15  # drawn wide, not cropped
    assert read_parameters(out / wide["file"])["size"] == [height, width]
    tall = next(p for p in meta["panels"] if (p["page"], p["panel"]) == (2, 1))  # auto -> l-shape: a tall column
    with Image.open(out / tall["file"]) as im:
        assert im.height > im.width
    square = next(p for p in meta["panels"] if (p["page"], p["panel"]) == (1, 2))
    assert read_parameters(out / square["file"])["size"] == 32  # square panels keep the model's own size
    # RTL: panel 1 (the wide one) spans the top; panel 2 is right of panel 3.
    boxes = {p["panel"]: p["box"] for p in meta["panels"] if p["page"] == 1}
    assert boxes[2][0] > boxes[3][0] and boxes[2][1] == boxes[3][1]


def test_file_names_are_safe_and_the_pdf_has_every_page_at_the_dpi(made):
    out = made["out"]
    stem = safe_file_stem(TITLE)
    assert stem == "Red_Blue_ _Friends_ _at_ sea_ & more"
    reader = PdfReader(out / f"{stem}.pdf")
    assert len(reader.pages) == 2
    for page, name in zip(reader.pages, ["page-01.png", "page-02.png"]):
        with Image.open(out / name) as im:
            width, height = im.size
        assert float(page.mediabox.width) == pytest.approx(width, abs=0.5)  # 72 dpi: a point per pixel
        assert float(page.mediabox.height) == pytest.approx(height, abs=0.5)


def test_the_cbz_holds_the_pages_in_order_and_a_valid_comicinfo(made):
    out = made["out"]
    with zipfile.ZipFile(out / f"{safe_file_stem(TITLE)}.cbz") as archive:
        names = archive.namelist()
        assert names == ["ComicInfo.xml", "001.png", "002.png"]
        assert archive.read("001.png") == (out / "page-01.png").read_bytes()
        assert archive.read("002.png") == (out / "page-02.png").read_bytes()
        info = archive.read("ComicInfo.xml")
    xmlschema.XMLSchema(XSD).validate(io.BytesIO(info))
    root = ET.fromstring(info)
    assert root.findtext("Title") == TITLE and root.findtext("Writer") == "A. Writer & Co"
    assert root.findtext("Summary") == "Two shapes <meet> at sea."
    assert root.findtext("PageCount") == "2" and root.findtext("Manga") == "YesAndRightToLeft"
    assert [p.get("Image") for p in root.find("Pages")] == ["0", "1"]


def test_the_webtoon_stacks_every_panel_with_gutters(made):
    out = made["out"]
    meta = json.loads((out / "comic.json").read_text())
    boxes = [p["box"] for p in meta["panels"]]
    width = max(x1 - x0 for x0, _, x1, _ in boxes)
    heights = [y1 - y0 for _, y0, _, y1 in boxes]
    with Image.open(out / f"{safe_file_stem(TITLE)}-webtoon.png") as strip:
        assert strip.size == (width, sum(heights) + 16 * (len(boxes) - 1))
        # panel 1 (wide, full strip width) at the top; panel 2 (square, narrower) centred below it after a gutter
        with Image.open(out / "page-01.png") as page:
            x0, y0, x1, y1 = boxes[0]
            assert strip.crop((0, 0, width, y1 - y0)).tobytes() == page.crop(boxes[0]).convert("RGB").tobytes()
            bx0, by0, bx1, by1 = boxes[1]
            left, top = (width - (bx1 - bx0)) // 2, heights[0] + 16
            placed = strip.crop((left, top, left + bx1 - bx0, top + by1 - by0))
            assert placed.tobytes() == page.crop(boxes[1]).convert("RGB").tobytes()


def test_a_rerun_reuses_everything_and_another_comic_is_refused(made, capsys):
    out = made["out"]
    before = snapshot(out)
    capsys.readouterr()
    assert run_cli(*made["args"]) == 0
    assert "0 panel(s) generated, 7 reused" in capsys.readouterr().out
    assert snapshot(out / "panels") == {k[7:]: v for k, v in before.items() if k.startswith("panels/")}
    other = made["root"] / "other.json"
    other.write_text(json.dumps({**SCRIPT, "title": "Another story"}), encoding="utf-8")
    before = snapshot(out)
    assert run_cli(*comic_args(made_models(made), made["fast"], other, out)) == 2
    err = capsys.readouterr().err.strip()
    assert "holds another comic" in err and "--overwrite" in err and "\n" not in err
    assert snapshot(out) == before


def made_models(made):
    return {"pipeline": made["args"][made["args"].index("--model") + 1]}


@pytest.mark.parametrize(
    "extra, message", [(["--format", "png,epub"], "choose from png, pdf, cbz, webtoon"), (["--dpi", "5"], "--dpi")]
)
def test_bad_export_options_fail_before_sampling(tiny_models, fast_args, tmp_path, capsys, extra, message):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"panels": ["a"]}), encoding="utf-8")
    assert run_cli(*comic_args(tiny_models, fast_args, script, tmp_path / "o", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_names_for_files_and_pages():
    assert safe_file_stem("CON") == "_CON" and safe_file_stem("  ...  ") == "comic" and safe_file_stem(None) == "comic"
    assert safe_file_stem("漫画: 第1話") == "漫画_ 第1話"
    assert len(safe_file_stem("é" * 500).encode()) <= 120
    assert page_names(3) == ["001.png", "002.png", "003.png"] and page_names(1200)[-1] == "1200.png"
    assert webtoon_parts([100, 100, 100], gutter=10, max_height=210) == [[0, 1], [2]]
    assert webtoon_parts([500], gutter=10, max_height=210) == [[0]]
