"""Every notebook in notebooks/ runs top to bottom on tiny settings (so the worked examples never rot)."""
from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = ("01_build_dataset.ipynb", "02_finetune.ipynb", "03_comic_pages.ipynb")


def execute(path, workdir, timeout=240):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def text_output(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or "".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_every_notebook_is_tested(repo_root):
    assert sorted(p.name for p in (repo_root / "notebooks").glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_outputs_are_stripped(repo_root, name):
    nb = nbformat.read(repo_root / "notebooks" / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: commit notebooks without outputs"


@pytest.fixture
def tiny_settings(monkeypatch, tmp_path, quickstart_models):
    settings = {
        "AUTOCOMICS_NB_OUT": str(tmp_path / "runs"),
        "AUTOCOMICS_NB_COUNT": "64",
        "AUTOCOMICS_NB_STEPS": "2",
        "AUTOCOMICS_NB_EVAL_SAMPLES": "3",
        "AUTOCOMICS_NB_SAMPLE_STEPS": "2",
        "AUTOCOMICS_NB_BASE_MODEL": str(quickstart_models["base"]),
        "AUTOCOMICS_NB_UPSAMPLER": str(quickstart_models["upsampler"]),
        "AUTOCOMICS_NB_UPSAMPLE": "1",
        "AUTOCOMICS_NB_UPSAMPLE_STEPS": "3",
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    return tmp_path


def test_build_dataset_notebook(repo_root, tiny_settings):
    nb = execute(repo_root / "notebooks" / "01_build_dataset.ipynb", tiny_settings)
    data = tiny_settings / "runs" / "01" / "shapes"
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["sources"][0]["style"] == "comic" and manifest["sources"][0]["count"] == 64
    assert (data / "32").is_dir() and (data / "128").is_dir()
    assert "all_three" in text_output(nb)


def test_finetune_notebook(repo_root, tiny_settings, quickstart_models):
    nb = execute(repo_root / "notebooks" / "02_finetune.ipynb", tiny_settings)
    model = tiny_settings / "runs" / "02" / "run" / "model"
    provenance = json.loads((model / "provenance.json").read_text())
    assert provenance["steps"] == 2 and provenance["init_checkpoint"] == str(quickstart_models["base"])
    out = text_output(nb)
    assert "small-sample figures (3 images per model)" in out
    assert "before" in out and "after" in out


def test_comic_pages_notebook(repo_root, tiny_settings):
    nb = execute(repo_root / "notebooks" / "03_comic_pages.ipynb", tiny_settings)
    story = tiny_settings / "runs" / "03" / "shapes_story"
    meta = json.loads((story / "comic.json").read_text())
    assert meta["seed_overrides"] == {"1.2": 5}
    assert len(meta["panels"]) == 4 and (story / "page-01.png").is_file()
    assert (tiny_settings / "runs" / "03" / "three_friends" / "page-01.png").is_file()
    assert "dialog" in text_output(nb)  # the misspelt field is reported
