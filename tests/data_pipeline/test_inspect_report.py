"""`inspect DIR`: totals, histograms, failure reasons and the contact sheet agree with what was built."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from data_pipeline.__main__ import main
from data_pipeline.inspect import format_report, inspect_dataset
from data_pipeline.runner import build_dataset
from data_pipeline.shards import Failure, Sample, WriterConfig, plan_shards


def _produce(task):
    for index, item in enumerate(task.items):
        if isinstance(item, str):
            yield Failure(index, item)
        else:
            data, caption, size = item
            yield Sample(index=index, image=data, caption=caption, source="unit", width=size[0], height=size[1])


@pytest.fixture
def dataset(tmp_path, image_bytes):
    items = [(image_bytes("jpg", 30, 30, seed=i), " ".join(["word"] * (3 + 4 * i)), (100 * (i + 1), 900))
             for i in range(7)]
    items[3] = "http_404"
    items[5] = "timeout"
    config = WriterConfig(tmp_path / "ds", sizes=(16, 32), shard_size=3, val_fraction=0.5)
    _, manifest = build_dataset(plan_shards(items, 3), _produce, config, progress=False)
    return config.out_dir, manifest


def test_report_matches_the_manifest(dataset, tmp_path):
    out, manifest = dataset
    sheet = tmp_path / "sheet" / "contact.png"
    report = inspect_dataset(out, samples=4, seed=1, sheet_path=str(sheet))
    assert report["inspected_size"] == 32 and report["sizes"] == [16, 32]
    assert report["samples"] == manifest["totals"]["samples"] == 5
    assert report["items"] == 7 and report["failures"] == {"http_404": 1, "timeout": 1}
    assert report["splits"] == manifest["splits"] and sum(report["splits"].values()) == 5
    assert report["sources"] == {"unit": 5}
    # captions of 3, 7, 11, 19, 27 words; original short sides 100, 200, 300, 500, 700
    assert report["caption_words"] == {"0-4": 1, "5-9": 1, "10-14": 1, "15-19": 1, "20-29": 1, "30-49": 0, "50+": 0}
    assert report["original_short_side"]["64-127"] == 1 and report["original_short_side"]["256-511"] == 2
    assert report["original_short_side"]["512-1023"] == 1
    with Image.open(sheet) as img:
        assert img.mode == "RGB" and img.width >= 2 * 192 and img.height >= 2 * 192
    text = format_report(report)
    assert "http_404" in text and "contact sheet" in text
    same = inspect_dataset(out, size=16, samples=4, seed=1)
    assert same["samples"] == 5 and same["contact_sheet"] is None


def test_cli_json_output_and_errors(dataset, tmp_path, capsys):
    out, _ = dataset
    assert main(["inspect", out, "--json", "--samples", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 5 and report["contact_sheet"].endswith("contact_sheet.png")
    with pytest.raises(SystemExit, match="no shards of size 99"):
        main(["inspect", out, "--size", "99"])
    with pytest.raises(SystemExit, match="not a directory"):
        main(["inspect", str(tmp_path / "missing")])
