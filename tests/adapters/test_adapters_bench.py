"""bench/adapters.py end to end at a tiny size (2 teaching steps, 2 samples per point), so it cannot rot."""

from __future__ import annotations

import json

from tests.bench_scripts import load_bench


def test_tiny_run_teaches_measures_and_reports(monkeypatch, tmp_path, capsys):
    bench = load_bench(monkeypatch, "adapters")
    results, report = tmp_path / "results", tmp_path / "report"
    argv = ["--samples", "2", "--chunk", "2", "--batch-size", "2", "--teach-images", "2", "--steps", "2"]
    argv += ["--prior-images", "2", "--sampler-steps", "2", "--threads", "1"]
    argv += ["--results", str(results), "--report-dir", str(report)]
    assert bench.main([*argv, "--parts", "ordinary"]) == 0  # a subset fills the cache only
    assert not report.exists()
    assert bench.main(argv) == 0
    data = json.loads((report / "adapters.json").read_text())
    assert data["new"]["with"]["n"] == 2 and data["ordinary"]["with"]["n"] == 2
    assert data["page"]["panels"]["n"] == 6  # one page of six panels
    assert data["teach"]["prior_images"] == 2 and data["teach"]["adapter_bytes"] > 0
    assert len(list((results / "prior-images").glob("prior-*.png"))) == 2  # kept for the next settings
    text = (report / "adapters.md").read_text()
    assert "| new character: zorp drawn, adapter on | 2 |" in text
    assert "ordinary captions: accuracy drop (paired)" in text
    capsys.readouterr()
    assert bench.main(argv) == 0  # everything cached: no teaching, no drawing
    assert "teaching zorp" not in capsys.readouterr().out
