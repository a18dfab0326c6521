"""scripts/quickstart.py end to end on tiny settings, its argument checks, and the main job's example script."""
from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from data_pipeline.synthetic import DEFAULT_WORLD, canonical_caption, make_world
from sampling.comic.script import load_script
from sampling.commands.comic import example_scripts


def run_quickstart(repo_root, *args):
    return subprocess.run([sys.executable, str(repo_root / "scripts" / "quickstart.py"), *args],
                          capture_output=True, text=True, timeout=300)


def test_quickstart_end_to_end(repo_root, tmp_path, quickstart_models):
    out = tmp_path / "qs"
    args = ["--out", str(out), "--base-model", str(quickstart_models["base"]), "--no-upsample", "--count", "40",
            "--steps", "2", "--batch-size", "2", "--eval-samples", "3", "--sample-steps", "2"]
    proc = run_quickstart(repo_root, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for command in ("python -m data_pipeline synthetic", "python -m finetune train", "python -m sampling comic",
                    "python -m sampling generate"):
        assert f"$ {command}" in proc.stdout
    assert "SMALL-SAMPLE figures: 3 images per model" in proc.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["figures"]) == {"before", "after"}
    for figures in summary["figures"].values():
        assert figures["n"] == 3
        assert {"all_three", "position", "style_rate"} <= set(figures)
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["sources"][0]["style"] == "comic"
    provenance = json.loads((out / "finetune" / "model" / "provenance.json").read_text())
    assert provenance["steps"] == 2 and provenance["init_checkpoint"] == str(quickstart_models["base"])

    # the same page, same seeds, different weights: different pictures
    pages = {name: Image.open(summary["pages"][name]).convert("RGB") for name in ("before", "after")}
    assert pages["before"].size == pages["after"].size
    assert pages["before"].tobytes() != pages["after"].tobytes()
    before = json.loads((out / "page-before" / "comic.json").read_text())["panels"]
    after = json.loads((out / "page-after" / "comic.json").read_text())["panels"]
    assert [p["seed"] for p in before] == [p["seed"] for p in after]

    # a rerun resumes: nothing is trained or generated again
    again = run_quickstart(repo_root, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already has 2 steps; reusing it" in again.stdout
    assert "0 panel(s) generated, 4 reused" in again.stdout
    assert "0 to generate, 3 already written" in again.stdout

    # the same --out with another base model: refused rather than mixing two runs
    other = tmp_path / "other-base"
    shutil.copytree(quickstart_models["base"], other)
    mixed = run_quickstart(repo_root, *args[:2], "--base-model", str(other), *args[4:])
    assert mixed.returncode == 1 and "fine-tuned another model" in mixed.stderr


def test_quickstart_rejects_bad_settings(repo_root, tmp_path, quickstart_models):
    proc = run_quickstart(repo_root, "--out", str(tmp_path), "--steps", "0")
    assert proc.returncode == 2 and "--steps must be at least 1" in proc.stderr
    proc = run_quickstart(repo_root, "--out", str(tmp_path), "--base-model", str(tmp_path / "missing"), "--no-upsample")
    assert proc.returncode == 1 and "is not a model folder" in proc.stderr
    proc = run_quickstart(repo_root, "--out", str(tmp_path), "--base-model", str(quickstart_models["upsampler"]),
                          "--no-upsample")
    assert proc.returncode == 1 and "is an upsampler" in proc.stderr


def bundled_world(repo_root):
    """The world the bundled models are trained on (scripts/bundled/world.json)."""
    spec = json.loads((repo_root / "scripts" / "bundled" / "world.json").read_text())
    return make_world(shapes=spec["shapes"], colors=spec["colors"], backgrounds=spec["backgrounds"],
                      positions=spec.get("positions"), sizes=spec.get("shape_sizes"))


@pytest.mark.parametrize("world", ["default", "bundled"])
def test_shapes_story_speaks_the_synthetic_world(world, repo_root):
    """Every panel caption is a canonical caption of a scene the world can draw."""
    w = DEFAULT_WORLD if world == "default" else bundled_world(repo_root)
    vocabulary = {
        canonical_caption({"shape": s, "color": c, "background": b, "position": p, "size": z}, len(w.sizes) > 1)
        for s, (c, b), p, z in itertools.product(w.shapes, w.color_background_pairs, w.positions, w.sizes)
    }
    script = load_script(example_scripts()["shapes_story"])
    captions = [panel.caption for page in script.pages for panel in page.panels]
    assert len(captions) >= 4
    assert [c for c in captions if c not in vocabulary] == []
    # no style or character text is added to the prompts: the model sees exactly these captions
    assert [script.prompt_for(panel) for page in script.pages for panel in page.panels] == captions
