"""LAION metadata filtering: both schemas, every filter, bad rows, column mapping, sampling, reuse."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipeline.download.items import table_metadata
from data_pipeline.sources.laion import InputError, filter_to_parquet, prepare_kept_rows, resolve_inputs
from data_pipeline.sources.laion_filters import (
    ColumnError,
    FilterSettings,
    HashSet64,
    resolve_columns,
    schema_kind,
    whole_word_pattern,
)


def laion400m(rows: list[tuple]) -> pa.Table:
    """rows: (url, text, similarity, width, height, nsfw)"""
    return pa.table(
        {
            "SAMPLE_ID": pa.array([str(1000 + i) for i in range(len(rows))]),
            "URL": [r[0] for r in rows],
            "TEXT": [r[1] for r in rows],
            "HEIGHT": pa.array([r[4] for r in rows], pa.int32()),
            "WIDTH": pa.array([r[3] for r in rows], pa.int32()),
            "LICENSE": ["?"] * len(rows),
            "NSFW": [r[5] for r in rows],
            "similarity": pa.array([r[2] for r in rows], pa.float64()),
        }
    )


def laion2b(rows: list[tuple], aesthetic_name: str = "AESTHETIC_SCORE") -> pa.Table:
    """rows: (url, text, width, height, similarity, punsafe, pwatermark, aesthetic)"""
    return pa.table(
        {
            "URL": [r[0] for r in rows],
            "TEXT": [r[1] for r in rows],
            "WIDTH": pa.array([r[2] for r in rows], pa.float64()),
            "HEIGHT": pa.array([r[3] for r in rows], pa.float64()),
            "similarity": [r[4] for r in rows],
            "punsafe": pa.array([r[5] for r in rows], pa.float32()),
            "pwatermark": pa.array([r[6] for r in rows], pa.float32()),
            aesthetic_name: pa.array([r[7] for r in rows], pa.float32()),
        }
    )


def run_filter(tmp_path, tables, settings, shard_size=1000, overrides=None, row_group_size=None):
    paths = []
    for i, table in enumerate(tables):
        path = str(tmp_path / f"part-{i}.parquet")
        pq.write_table(table, path, row_group_size=row_group_size)
        paths.append(path)
    kept = str(tmp_path / "kept.parquet")
    report = filter_to_parquet(paths, kept, settings, shard_size, overrides, progress=False)
    return pq.read_table(kept).to_pylist(), report


def test_laion400m_filters_and_bad_rows(tmp_path):
    rows = [
        ("http://a.example/1.jpg", "A Painting of a boat", 0.35, 640, 480, "UNLIKELY"),
        ("http://a.example/2.jpg", "paintings of boats", 0.40, 640, 480, "UNLIKELY"),  # no whole word
        ("http://a.example/3.jpg", "BEACH at dawn", 0.20, 640, 480, "UNLIKELY"),  # low similarity
        ("http://a.example/4.jpg", "beach party", 0.40, 640, 480, "NSFW"),
        ("http://a.example/5.jpg", "beach tiny", 0.40, 32, 32, "UNLIKELY"),
        ("http://a.example/6.jpg", "beach panorama", 0.40, 4000, 400, "UNLIKELY"),
        ("http://a.example/7.jpg", "   ", 0.40, 640, 480, "UNLIKELY"),
        ("http://a.example/8.jpg", None, 0.40, 640, 480, "UNLIKELY"),
        (None, "beach without url", 0.40, 640, 480, "UNLIKELY"),
        ("ftp://a.example/9.jpg", "beach by ftp", 0.40, 640, 480, "UNLIKELY"),
        ("file:///etc/beach.jpg", "beach file", 0.40, 640, 480, "UNLIKELY"),
        ("http://a.example/1.jpg", "boat again", 0.40, 640, 480, "UNLIKELY"),  # duplicate URL
        ("http://a.example/10.jpg", "beach " * 100, 0.40, 640, 480, "UNLIKELY"),  # too long
        ("http://a.example/11.jpg", "a boat at the beach", None, 640, 480, "UNLIKELY"),  # no similarity
        ("http://a.example/12.jpg", "boat, unsure", 0.5, 640, 480, "UNSURE"),
        ("HTTPS://a.example/13.jpg", "Boat!", 0.5, None, 480, "UNLIKELY"),  # unknown width
    ]
    settings = FilterSettings(
        keywords=("painting", "beach", "boat"),
        min_similarity=0.3,
        nsfw_allowed=("unlikely", "UNSURE"),
        min_width=64,
        min_height=64,
        max_aspect_ratio=3.0,
        max_caption_chars=200,
    )
    kept, report = run_filter(tmp_path, [laion400m(rows)], settings)
    assert [r["url"] for r in kept] == ["http://a.example/1.jpg", "http://a.example/12.jpg"]
    assert report.rejected == {
        "missing_url": 1,
        "bad_scheme": 2,
        "empty_caption": 2,
        "caption_length": 1,
        "keywords": 1,
        "low_similarity": 2,
        "nsfw": 1,
        "too_small": 2,
        "aspect_ratio": 1,
        "duplicate_url": 1,
    }
    assert report.rows_read == len(rows) and report.rows_kept == 2
    first = kept[0]
    assert first["caption"] == "A Painting of a boat" and first["sample_id"] == "1000"
    assert first["nsfw"] == "UNLIKELY" and first["declared_width"] == 640 and first["similarity"] == 0.35
    assert first["source_file"] == "part-0.parquet" and first["source_row"] == 0
    assert report.inputs[0]["schema"] == "laion-400m"


@pytest.mark.parametrize("aesthetic_name", ["AESTHETIC_SCORE", "aesthetic"])
def test_laion2b_aesthetics_filters(tmp_path, aesthetic_name):
    rows = [
        ("http://b.example/1.jpg", "a calm sea", 512, 512, 0.31, 0.01, 0.05, 6.5),
        ("http://b.example/2.jpg", "a calm sea", 512, 512, 0.31, 0.90, 0.05, 6.5),  # unsafe
        ("http://b.example/3.jpg", "a calm sea", 512, 512, 0.31, 0.01, 0.95, 6.5),  # watermark
        ("http://b.example/4.jpg", "a calm sea", 512, 512, 0.31, 0.01, 0.05, 4.0),  # not pretty
        ("http://b.example/5.jpg", "A calm sea!", 512, 512, 0.31, 0.01, 0.05, 7.0),  # same caption
        ("http://b.example/6.jpg", "a storm", 512, 512, 0.31, None, 0.05, 7.0),  # unknown punsafe
    ]
    settings = FilterSettings(max_punsafe=0.5, max_pwatermark=0.8, min_aesthetic=5.0, dedupe_captions=True)
    kept, report = run_filter(tmp_path, [laion2b(rows, aesthetic_name)], settings)
    assert [r["url"] for r in kept] == ["http://b.example/1.jpg"]
    assert report.rejected == {"unsafe": 2, "watermark": 1, "low_aesthetic": 1, "duplicate_caption": 1}
    assert kept[0]["aesthetic"] == pytest.approx(6.5) and kept[0]["punsafe"] == pytest.approx(0.01)
    assert report.inputs[0]["schema"] == "laion-2b/aesthetics"


def test_keywords_any_all_whole_words_case_and_unicode():
    captions = pa.array(
        ["Café on the BEACH", "a beachball", "boat-house", "sea shore at dusk", "sea   shore", "über alles", "seashore"]
    )
    import pyarrow.compute as pc

    def matches(words):
        return pc.match_substring_regex(captions, whole_word_pattern(words), ignore_case=True).to_pylist()

    assert matches(("beach",)) == [True, False, False, False, False, False, False]
    assert matches(("café", "Über")) == [True, False, False, False, False, True, False]
    assert matches(("boat",)) == [False, False, True, False, False, False, False]
    assert matches(("sea shore",)) == [False, False, False, True, True, False, False]
    assert matches(("a.b*",)) == [False] * 7  # regex characters are literal


def test_keyword_mode_all_exclusions_and_regex(tmp_path):
    rows = [
        (f"http://c.example/{i}.jpg", text, 0.3, 100, 100, "UNLIKELY")
        for i, text in enumerate(
            ["a boat on the beach", "a boat", "a beach", "a boat on the beach, watermark", "boat beach 2021"]
        )
    ]
    kept, report = run_filter(
        tmp_path,
        [laion400m(rows)],
        FilterSettings(
            keywords=("boat", "beach"), keyword_mode="all", exclude_keywords=("watermark",), caption_regex=r"^a\s"
        ),
    )
    assert [r["caption"] for r in kept] == ["a boat on the beach"]
    assert report.rejected == {"keywords": 2, "excluded_keywords": 1, "caption_regex": 1}
    with pytest.raises(ValueError, match="RE2"):
        FilterSettings(caption_regex="(unclosed")


def test_columns_mapping_and_clear_errors(tmp_path):
    table = pa.table({"image_url": ["http://d.example/1.jpg"], "alt_text": ["a red boat"], "clip_sim": [0.4]})
    with pytest.raises(InputError, match=r"no url or caption column.*image_url, alt_text.*--column url=NAME"):
        run_filter(tmp_path, [table], FilterSettings())
    overrides = {"url": "image_url", "caption": "alt_text", "similarity": "clip_sim"}
    kept, report = run_filter(tmp_path, [table], FilterSettings(min_similarity=0.3), overrides=overrides)
    assert kept[0]["caption"] == "a red boat" and kept[0]["similarity"] == 0.4
    assert report.inputs[0]["schema"] == "custom"
    with pytest.raises(ColumnError, match="no such column"):
        resolve_columns(["URL", "TEXT"], {"caption": "nope"})
    with pytest.raises(ColumnError, match="unknown field"):
        resolve_columns(["URL", "TEXT"], {"colour": "x"})
    # a filter that needs a column the file lacks says which flag and which column
    laion = laion400m([("http://d.example/2.jpg", "boat", 0.3, 10, 10, "UNLIKELY")])
    with pytest.raises(InputError, match=r"--max-punsafe needs a punsafe column"):
        run_filter(tmp_path, [laion], FilterSettings(max_punsafe=0.5))
    # lower-case variants are recognised
    assert resolve_columns(["url", "caption", "Similarity"]) == {
        "url": "url",
        "caption": "caption",
        "similarity": "Similarity",
    }
    assert schema_kind(resolve_columns(["URL", "TEXT", "punsafe"])) == "laion-2b/aesthetics"


def test_string_typed_numbers_and_nulls(tmp_path):
    table = pa.table(
        {
            "URL": ["http://e.example/1.jpg", "http://e.example/2.jpg", "http://e.example/3.jpg"],
            "TEXT": ["one", "two", "three"],
            "similarity": ["0.5", "n/a", None],
            "WIDTH": ["640", "640", "640"],
            "HEIGHT": ["480", "480", "480"],
        }
    )
    kept, report = run_filter(tmp_path, [table], FilterSettings(min_similarity=0.3, min_width=100))
    assert [r["caption"] for r in kept] == ["one"] and kept[0]["declared_width"] == 640
    assert report.rejected == {"low_similarity": 2}


def test_many_files_row_groups_dedupe_across_files_and_shard_row_groups(tmp_path):
    rng = np.random.default_rng(0)
    tables = []
    for _ in range(3):
        ids = rng.integers(0, 400, size=500)  # many repeats within and across files
        tables.append(
            pa.table({"URL": [f"http://f.example/{i}.jpg" for i in ids], "TEXT": [f"caption {i}" for i in ids]})
        )
    kept, report = run_filter(tmp_path, tables, FilterSettings(), shard_size=64, row_group_size=100)
    urls = [r["url"] for r in kept]
    all_ids = np.concatenate(
        [np.array([int(u.rsplit("/", 1)[1][:-4]) for u in t.column("URL").to_pylist()]) for t in tables]
    )
    _, first = np.unique(all_ids, return_index=True)
    assert urls == [f"http://f.example/{all_ids[i]}.jpg" for i in sorted(first)]  # first occurrences, in order
    assert report.rejected == {"duplicate_url": 1500 - len(first)}
    pf = pq.ParquetFile(tmp_path / "kept.parquet")
    sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    assert all(s == 64 for s in sizes[:-1]) and sum(sizes) == len(first)


def test_hash_set_first_seen():
    hs = HashSet64()
    rng = np.random.default_rng(1)
    reference: set[int] = set()
    for _ in range(40):
        values = rng.integers(0, 5000, size=300).astype(np.uint64)
        mask = hs.add_first_seen(values)
        expected = []
        for v in values.tolist():
            expected.append(v not in reference)
            reference.add(v)
        assert mask.tolist() == expected
    assert len(hs) == len(reference) and len(hs.blocks) < 12


def test_sampling_fraction_and_max_samples(tmp_path):
    table = pa.table(
        {"URL": [f"http://g.example/{i}.jpg" for i in range(2000)], "TEXT": [f"picture {i}" for i in range(2000)]}
    )
    kept, report = run_filter(tmp_path, [table], FilterSettings(sample_fraction=0.25, seed=3))
    assert 400 < len(kept) < 600 and report.rejected["not_sampled"] == 2000 - len(kept)
    again, _ = run_filter(tmp_path, [table], FilterSettings(sample_fraction=0.25, seed=3))
    assert again == kept
    other, _ = run_filter(tmp_path, [table], FilterSettings(sample_fraction=0.25, seed=4))
    assert other != kept

    first, report = run_filter(tmp_path, [table], FilterSettings(max_samples=10))
    assert [r["source_row"] for r in first] == list(range(10))
    assert report.rejected == {"over_max_samples": 1990}

    seeded, report = run_filter(tmp_path, [table], FilterSettings(max_samples=50, seed=7), row_group_size=300)
    rows = [r["source_row"] for r in seeded]
    assert len(rows) == 50 and rows == sorted(rows) and max(rows) > 1000  # spread over the whole file
    assert report.rejected == {"not_sampled": 1950}
    assert run_filter(tmp_path, [table], FilterSettings(max_samples=50, seed=7))[0] == seeded
    assert run_filter(tmp_path, [table], FilterSettings(max_samples=50, seed=8))[0] != seeded


def test_inputs_globs_errors_and_reuse_of_kept_rows(tmp_path):
    table = laion400m(
        [
            ("http://h.example/1.jpg", "a boat", 0.3, 100, 100, "UNLIKELY"),
            ("http://h.example/2.jpg", "a beach", 0.3, 100, 100, "UNLIKELY"),
        ]
    )
    for name in ("b.parquet", "a.parquet"):
        pq.write_table(table, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not parquet")
    assert resolve_inputs([str(tmp_path / "*.parquet")], str(tmp_path)) == [
        str(tmp_path / "a.parquet"),
        str(tmp_path / "b.parquet"),
    ]
    with pytest.raises(InputError, match="no file matches"):
        resolve_inputs([str(tmp_path / "*.csv")], str(tmp_path))
    with pytest.raises(InputError, match="only local paths and http"):
        resolve_inputs(["s3://bucket/x.parquet"], str(tmp_path))
    with pytest.raises(InputError, match="no such file"):
        resolve_inputs([str(tmp_path / "missing.parquet")], str(tmp_path))
    out = str(tmp_path / "out")
    with pytest.raises(InputError, match="not a readable parquet"):
        prepare_kept_rows([str(tmp_path / "notes.txt")], out, FilterSettings(), 10, progress=False)

    settings = FilterSettings(keywords=("boat",))
    kept, report = prepare_kept_rows([str(tmp_path / "a.parquet")], out, settings, 10, progress=False)
    assert report["rows_kept"] == 1 and table_metadata(kept)["report"] == report
    mtime = os.stat(kept).st_mtime_ns
    again, report2 = prepare_kept_rows([str(tmp_path / "a.parquet")], out, settings, 10, progress=False)
    assert again == kept and report2 == report and os.stat(kept).st_mtime_ns == mtime  # reused
    with pytest.raises(InputError, match="other inputs, filters or shard size"):
        prepare_kept_rows([str(tmp_path / "a.parquet")], out, FilterSettings(keywords=("beach",)), 10, progress=False)
    assert not [n for n in os.listdir(out) if ".tmp-" in n]
