"""bench/gpu_side_by_side.py keeps working: our side only (no reference checkout), the smallest presets, CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_side_by_side_bench_runs_our_side_on_cpu(tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "gpu_side_by_side.py"),
            "--size",
            "smoke",
            "--models",
            "base,upsample",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--trainer-steps",
            "3",
            "--workers",
            "0",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert [r["model"] for r in results] == ["base", "upsample"]
    for r in results:
        assert "bare_reference" not in r and "trainer_reference" not in r
        assert r["bare_ours"]["samples_per_s"] > 0 and r["trainer_ours"]["samples_per_s"] > 0
        assert r["trainer_ours"]["steps_measured"] == 3
        assert r["trainer_over_bare_ours"] == round(
            r["trainer_ours"]["samples_per_s"] / r["bare_ours"]["samples_per_s"], 3
        )
    assert "trainer_over_bare_ours" in done.stdout
