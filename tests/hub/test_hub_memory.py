"""Converting a full-size glide-base checkpoint (1.5 GB, generated here with the released keys and shapes) holds
about one copy of it in memory, and the result has every released tensor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors import safe_open

from finetune.hub.manifest import manifest_entry

REPO_ROOT = Path(__file__).resolve().parents[2]
PEAK_RSS_LIMIT = 1.3  # x the checkpoint's size

MAKE_CHECKPOINT = """
import sys, torch
from finetune.hub.manifest import manifest_entry
keys = manifest_entry("glide-base")["keys"]
torch.save({k: torch.zeros(shape) for k, shape in keys.items()}, sys.argv[1])
"""

CONVERT_AND_MEASURE = """
import json, resource, sys
from pathlib import Path
from finetune.hub.convert import convert_release
from finetune.hub.manifest import manifest_entry
convert_release("glide-base", Path(sys.argv[1]), Path(sys.argv[2]), manifest_entry("glide-base"), source={})
print(json.dumps({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def run_python(code: str, *args) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOCOMICS_")}  # the packaged manifest
    env.update(PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_full_size_conversion_peak_memory(tmp_path):
    checkpoint, folder = tmp_path / "base.pt", tmp_path / "glide-base"
    try:
        run_python(MAKE_CHECKPOINT, checkpoint)
        size = checkpoint.stat().st_size
        assert size > 1.5e9
        peak = json.loads(run_python(CONVERT_AND_MEASURE, checkpoint, folder).splitlines()[-1])["peak_rss_bytes"]
        print(f"checkpoint {size / 2**30:.2f} GiB, conversion peak RSS {peak / 2**30:.2f} GiB ({peak / size:.2f}x)")
        assert peak <= PEAK_RSS_LIMIT * size
        config = json.loads((folder / "config.json").read_text())
        assert config["preset"] == "glide-base" and config["tokenizer"] == "gpt2"
        with safe_open(folder / "model.safetensors", "pt") as weights:
            shapes = {k: list(weights.get_slice(k).get_shape()) for k in weights.keys()}
        assert shapes == manifest_entry("glide-base")["keys"]
    finally:
        checkpoint.unlink(missing_ok=True)
        for f in folder.glob("*"):
            f.unlink()
