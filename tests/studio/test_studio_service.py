"""The studio's checks on user input, its catalogue error handling, and reading a fine-tune's progress."""

from __future__ import annotations

import math

import pytest

from sampling.studio.catalogue.errors import InvalidInput
from sampling.studio.models import EMOJI_LABEL
from sampling.studio.service import Studio, StudioConfig, StudioError
from sampling.studio.settings import MAX_PANEL_CHARS, MAX_PANELS, clamp_settings, split_captions
from sampling.studio.training import TrainingError, TrainingJob, read_tensorboard, tail_text


def test_split_captions_cuts_long_and_extra_panels():
    text = "first\n\n  second  \n" + "x" * (MAX_PANEL_CHARS + 50)
    captions, messages = split_captions(text)
    assert captions[:2] == ["first", "second"] and len(captions[2]) == MAX_PANEL_CHARS
    assert "line 4 was longer" in messages[0]
    many, notes = split_captions("\n".join(f"panel {i}" for i in range(MAX_PANELS + 3)))
    assert len(many) == MAX_PANELS and "only the first" in notes[0]
    for bad in ["", "   ", "only one"]:
        with pytest.raises(InvalidInput, match="captions"):
            split_captions(bad)


def test_clamp_settings_says_what_changed():
    settings, messages = clamp_settings(500, 0, "euler", "12", upsample_steps=math.inf)
    assert settings.guidance == 50.0 and settings.steps == 1 and settings.sampler == "dpmpp_2m_sde"
    assert settings.seed == 12 and settings.upsample_steps == 1000
    assert any("guidance 500" in m for m in messages) and any("unknown sampler" in m for m in messages)
    assert any("steps 0" in m for m in messages)
    settings, messages = clamp_settings("abc", 20, "ddim", -1)
    assert settings.guidance == 3.0 and 0 <= settings.seed < 2**31 and "not a number" in messages[0]
    settings, messages = clamp_settings(3, 20, "ancestral", 5)
    assert messages == [] and settings.sampler == "ancestral"
    assert settings.placement and not clamp_settings(3, 20, "ancestral", 5, placement=False)[0].placement


def test_unreachable_database_is_shown_and_retried(tmp_path):
    from studio_helpers import free_port

    studio = Studio(
        StudioConfig(workdir=tmp_path, database=f"postgresql://u:pw@127.0.0.1:{free_port()}/x", semantic_search=False)
    )
    with pytest.raises(StudioError, match="catalogue unavailable: cannot reach PostgreSQL"):
        studio.browse()
    with pytest.raises(StudioError, match="catalogue unavailable"):  # tried again, not cached as broken
        studio.rename(1, "x")


def test_missing_image_keeps_row_and_says_so(tmp_path):
    from PIL import Image

    studio = Studio(StudioConfig(workdir=tmp_path, semantic_search=False))
    source = tmp_path / "strip.png"
    Image.new("RGB", (8, 8), "red").save(source)
    item = studio.save(source, "a red square")
    studio.catalogue.image_path(item).unlink()
    rows, status = studio.browse()
    assert [r[0].id for r in rows] == [item.id] and rows[0][1].name == "missing-image.png"
    assert f"Image file missing on disk for #{item.id}" in status
    with pytest.raises(StudioError, match="missing on disk"):
        studio.download(item.id)
    with pytest.raises(StudioError, match="generate a strip first"):
        studio.save(None, "caption")


def test_bad_training_settings_are_refused_before_starting(tmp_path):
    with pytest.raises(TrainingError, match="batch"):
        TrainingJob(tmp_path / "run", {"data": [str(tmp_path)], "preset": "tiny-base", "batch_size": 0})
    assert not (tmp_path / "run").exists()


def test_progress_is_read_from_tensorboard_and_console_log(tmp_path):
    import io

    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    for step in range(1, 6):
        writer.add_scalar("train/loss", 1.0 / step, step)
        writer.add_scalar("train/lr", 1e-4, step)
    writer.add_scalar("val/loss", 0.5, 5)
    writer.add_image("samples", np.zeros((3, 8, 8), dtype=np.uint8), 5)
    writer.close()
    scalars, images = read_tensorboard(tmp_path)
    assert [s for s, _ in scalars["tb/train/loss"]] == [1, 2, 3, 4, 5]
    assert scalars["tb/val/loss"] == [(5, 0.5)]
    [(tag, step, data)] = images
    assert tag == "tb/samples" and step == 5 and Image.open(io.BytesIO(data)).size == (8, 8)

    log = tmp_path / "studio-train.log"
    log.write_bytes(b"loading data\nstep 1/5 loss 1.0\rstep 2/5 loss 0.5\rstep 3/5 loss 0.3\n\x1b[31mdone\x1b[0m\n")
    assert tail_text(log, 1000) == "loading data\nstep 3/5 loss 0.3\ndone\n"


def test_progress_describes_running_finished_cancelled_and_failed_runs(tmp_path):
    from finetune.train.resume_state import RESUME_STATE_FORMAT_VERSION
    from sampling.studio.training import Progress, latest_checkpoint

    assert latest_checkpoint(tmp_path) == (None, 0)
    for step in (20, 42):
        folder = tmp_path / "checkpoints" / f"step-{step:08d}"
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(f'{{"format_version": {RESUME_STATE_FORMAT_VERSION}, "step": {step}}}')
    (tmp_path / "checkpoints" / ".tmp-step-00000050").mkdir()  # a save in progress is not a checkpoint
    checkpoint, step = latest_checkpoint(tmp_path)
    assert checkpoint == tmp_path / "checkpoints" / "step-00000042" and step == 42

    def progress(**kw):
        return Progress(
            **{"running": False, "returncode": None, "step": 40, "max_steps": 100, "run_dir": tmp_path, **kw}
        )

    assert progress(running=True).describe() == "running: step 40 of 100"
    assert progress(running=True, cancelled=True).describe().endswith("(cancelling…)")
    assert progress(returncode=0, step=100).describe().startswith("finished: step 100 of 100; model in ")
    cancelled = progress(returncode=130, cancelled=True, step=42, checkpoint=checkpoint).describe()
    assert cancelled.startswith(f"cancelled at step 42; checkpoint saved in {checkpoint}; resume")
    assert "--resume latest" in cancelled
    crashed = progress(returncode=1).describe()
    assert crashed.startswith("stopped (exit code 1) at step 40") and "no checkpoint was written" in crashed


def test_strips_made_in_the_same_second_get_their_own_folders(tmp_path):
    studio = Studio(StudioConfig(workdir=tmp_path, semantic_search=False))
    folders = [studio._new_output_dir() for _ in range(3)]
    assert len(set(folders)) == 3 and all(f.is_dir() and not any(f.iterdir()) for f in folders)


def test_fine_tunes_can_start_from_the_bundled_model_or_a_pipeline_folder(tmp_path):
    import json

    from finetune.bundled_models import bundled_model_path
    from finetune.model_folder import MODEL_FOLDER_FORMAT_VERSION

    models = tmp_path / "models"
    for part, options in (("base", {}), ("upsampler", {"super_res": True})):
        (models / "pipeline" / part).mkdir(parents=True)
        (models / "pipeline" / part / "config.json").write_text(
            json.dumps({"format_version": MODEL_FOLDER_FORMAT_VERSION, "options": options})
        )
    studio = Studio(StudioConfig(workdir=tmp_path / "work", models_dir=models, semantic_search=False))
    assert studio.model_choices() == [
        ("bundled model", "bundled"),
        (EMOJI_LABEL, "bundled-emoji"),  # the shipped emoji pair
        ("pipeline (with upsampler)", "models/pipeline"),
    ]
    init = studio._training_init
    assert init("bundled") == str(bundled_model_path("base"))
    assert init("models/pipeline") == str(models / "pipeline" / "base")
    assert init("scratch") == "scratch"
    with pytest.raises(StudioError, match="not one of the studio's models"):
        init(str(models / "pipeline"))  # a path, even of a listed model, is not a choice


def _comic_pages(folder, colors, reading_order="ltr"):
    from PIL import Image

    from sampling.studio.service import ComicPage

    pages = []
    for number, color in enumerate(colors, 1):
        path = folder / f"page-{number}.png"
        Image.new("RGB", (10, 14), color).save(path)
        pages.append(ComicPage(path, f"page {number}", {"model": "m"}, reading_order, ("cbz",)))
    return pages


def test_a_comic_in_progress_is_saved_as_one_item_and_paged_through(tmp_path):
    studio = Studio(StudioConfig(workdir=tmp_path / "work", semantic_search=False))
    first, second, third = _comic_pages(tmp_path, ["red", "green", "blue"], "rtl")
    comic = studio.add_comic_page(studio.add_comic_page([], first), second)
    with pytest.raises(StudioError, match="in the comic already"):
        studio.add_comic_page(comic, second)
    (tmp_path / "other").mkdir()
    [ltr] = _comic_pages(tmp_path / "other", ["white"])
    with pytest.raises(StudioError, match="this page reads ltr but the comic reads rtl"):
        studio.add_comic_page(comic, ltr)
    with pytest.raises(StudioError, match="generate a page first"):
        studio.add_comic_page(comic, None)
    with pytest.raises(StudioError, match="no pages yet"):
        studio.save_comic([], "empty")
    item = studio.save_comic(studio.add_comic_page(comic, third), "Traffic lights")
    assert (item.page_count, item.reading_order, item.exports) == (3, "rtl", ("cbz",))
    assert item.params == {"page_count": 3, "models": ["m"]}
    [(listed, cover)] = studio.browse()[0]
    assert listed.id == item.id and cover.read_bytes() == first.page.read_bytes()
    path, index, count = studio.comic_page(item.id, 7)  # clamped to the last page
    assert (index, count) == (2, 3) and path.read_bytes() == third.page.read_bytes()
    assert studio.comic_page(item.id, -1)[1] == 0
    assert studio.download(item.id).suffix == ".cbz"
    with pytest.raises(StudioError, match="select a comic"):
        studio.comic_page(None, 0)


def test_a_comic_with_a_missing_page_keeps_its_row_and_says_so(tmp_path):
    studio = Studio(StudioConfig(workdir=tmp_path / "work", semantic_search=False))
    item = studio.save_comic(_comic_pages(tmp_path, ["red", "green"]), "Half gone")
    studio.catalogue.page_paths(item)[1].unlink()
    rows, status = studio.browse()
    assert rows[0][1].name == "missing-image.png" and f"missing on disk for #{item.id}" in status
    for action in (lambda: studio.download(item.id), lambda: studio.comic_page(item.id, 0)):
        with pytest.raises(StudioError, match=r"missing 1 of its 2 page files on disk: page\(s\) 2 under"):
            action()
    studio.delete(item.id)
    assert studio.catalogue.count() == 0 and not any(studio.config.images_dir.rglob("*.png"))
