"""The Generate tab's page options: layout, reading order and export formats."""

from __future__ import annotations

import json
import zipfile

import pytest
from PIL import Image

from sampling.studio.comic_page import EXPORT_CHOICES, LAYOUT_CHOICES, PageOptions, page_options


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from random_models import save_random_model_folder

    from finetune.model import get_preset

    folder = tmp_path_factory.mktemp("models")
    save_random_model_folder(folder / "tiny-random", get_preset("tiny-base"), seed=0)
    return folder


def test_page_options_fall_back_with_a_message():
    assert page_options(3, "wide-top", "rtl", ["cbz", "pdf"]) == (PageOptions("wide-top", "rtl", ("pdf", "cbz")), [])
    options, messages = page_options(2, "l-shape", "upwards", ["epub"])
    assert options == PageOptions("auto", "ltr", ())
    assert messages == [
        "layout l-shape holds 4 panel(s), not 2; using auto",
        "unknown reading order 'upwards'; using ltr",
    ]
    assert "grid" in LAYOUT_CHOICES and "splash" in LAYOUT_CHOICES and EXPORT_CHOICES == ("pdf", "cbz", "webtoon")


def test_a_wide_top_rtl_page_with_exports(models_dir, tmp_path):
    from sampling.studio.service import Studio, StudioConfig

    studio = Studio(StudioConfig(workdir=tmp_path / "work", models_dir=models_dir, semantic_search=False))
    captions = "a wide sea\na red boat\na blue bird"
    model = "models/tiny-random"
    out = studio.generate(model, captions, 3, 2, "ddim", 0, page_choices=("wide-top", "rtl", ["cbz", "webtoon"]))
    with Image.open(out.panels[0]) as wide, Image.open(out.panels[1]) as square:
        assert wide.width > wide.height and square.width == square.height  # panel 1 drawn at its wide box
    assert sorted(p.suffix for p in out.exports) == [".cbz", ".png"]
    with zipfile.ZipFile(next(p for p in out.exports if p.suffix == ".cbz")) as archive:
        assert archive.namelist() == ["ComicInfo.xml", "001.png"]
        assert b"<Manga>YesAndRightToLeft</Manga>" in archive.read("ComicInfo.xml")
    comic = json.loads((out.page.parent / "comic.json").read_text())
    first, second, third = (p["box"] for p in comic["panels"])
    assert second[0] > third[0]  # right to left: panel 2 right of panel 3


def test_two_generated_pages_saved_as_one_comic_item(models_dir, tmp_path):
    from sampling.studio.service import ComicPage, Studio, StudioConfig

    studio = Studio(StudioConfig(workdir=tmp_path / "work", models_dir=models_dir, semantic_search=False))
    model, comic = "models/tiny-random", []
    for seed, captions in enumerate(["a red boat\na blue bird", "a green hill\na gray cloud\na yellow sun"]):
        out = studio.generate(model, captions, 3, 2, "ddim", seed, page_choices=("auto", "rtl", ["pdf"]))
        comic = studio.add_comic_page(comic, ComicPage.from_result(out))
    item = studio.save_comic(comic, "Two pages of weather")
    assert item.is_comic and item.page_count == 2 and item.reading_order == "rtl" and item.exports == ("pdf",)
    stored = [path.read_bytes() for path in studio.catalogue.page_paths(item.id)]
    assert stored == [page.page.read_bytes() for page in comic]  # the pages as generated, in the order added
    assert item.prompt.startswith("a red boat a blue bird a green hill") and item.params["page_count"] == 2


def test_placement_is_a_setting_of_the_strip(models_dir, tmp_path):
    from sampling.studio.service import Studio, StudioConfig

    studio = Studio(StudioConfig(workdir=tmp_path / "work", models_dir=models_dir, semantic_search=False))
    captions = "a red boat in the top left\na blue bird"
    placed = studio.generate("models/tiny-random", captions, 3, 2, "ddim", 0)
    unplaced = studio.generate("models/tiny-random", captions, 3, 2, "ddim", 0, placement=False)
    assert placed.params["placement"] is True and unplaced.params["placement"] is False
