"""End to end in a real browser: headless Debian Chromium driven by Playwright against the running studio.

Generate uses the bundled model (the default choice) with captions from the synthetic world it was trained
on; Train fine-tunes the bundled model in a real trainer process on a small synthetic dataset, watches its loss
plot and logged samples, and cancels it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from studio_helpers import apt_install, free_port, missing_dependency

from sampling.studio.models import EMOJI_LABEL

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "studio"
TIMEOUT_MS = 90_000

# Two strips in the bundled model's world (the test checks the flow; bench/quality.py measures accuracy).
STRIP_ONE = (
    "a large yellow triangle in the center on a gray background\n"
    "a large green circle in the center on a cyan background",
    12,
)
STRIP_TWO = (
    "a large red triangle in the center on a pink background\na large orange circle in the center on a cyan background",
    0,
)
SAVED = [
    "over-guided test strip: guidance clamped to fifty",
    "a yellow triangle on gray beside a green circle on cyan",
    "a red triangle on pink next to an orange ball on cyan",
]
LOGIN = ("comics", "a long: shared password")
PARAPHRASE = "crimson pyramid on a rose backdrop with a tangerine sphere"  # no word in common with SAVED[2]


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        apt_install("chromium", "chromium-driver")
    if not Path(CHROMIUM).exists():
        missing_dependency("Chromium is not installed at /usr/bin/chromium and apt-get could not install it")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing_dependency("the playwright Python package is not installed")
    return CHROMIUM


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A models directory holding one tiny random-weight folder, offered beside the bundled model."""
    from random_models import save_random_model_folder

    from finetune.model import get_preset

    folder = tmp_path_factory.mktemp("models")
    save_random_model_folder(folder / "tiny-random", get_preset("tiny-base"), seed=0)
    return folder


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> Path:
    """A few dozen 32 px images of the synthetic world, built by the data pipeline's own command."""
    from data_pipeline.__main__ import main

    out = tmp_path_factory.mktemp("datasets") / "shapes48"  # offered by name: the studio's datasets folder
    status = main(
        [
            "synthetic",
            "--out",
            str(out),
            "--count",
            "48",
            "--sizes",
            "32",
            "--image-format",
            "png",
            "--shard-size",
            "16",
            "--val-fraction",
            "0.2",
            "--processes",
            "1",
            "--no-progress",
        ]
    )
    assert status == 0
    return out


@pytest.fixture(scope="module")
def studio_url(models_dir, train_data, tmp_path_factory, embedder):
    from sampling.studio.cli import add_arguments, serve

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    port = free_port()
    args = parser.parse_args(
        [
            "--workdir",
            str(tmp_path_factory.mktemp("studio")),
            "--models-dir",
            str(models_dir),
            "--datasets-dir",
            str(train_data.parent),
            "--port",
            str(port),
            "--device",
            "cpu",
        ]
    )
    with pytest.MonkeyPatch.context() as patch:  # a login, as a shared studio has one
        patch.setenv("AUTOCOMICS_STUDIO_AUTH", f"{LOGIN[0]}:{LOGIN[1]}")
        studio, demo = serve(args, block=False)
    try:
        yield f"http://127.0.0.1:{port}/", studio
    finally:
        if studio.job is not None and studio.job.running:  # a test that failed mid-run leaves no trainer behind
            studio.job.cancel(grace_s=30)
        demo.close()


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # a fresh profile folder per run (Playwright's way of passing --user-data-dir)
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")),
            executable_path=chromium,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 1000},
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def signed_in(browser, studio_url):
    """The browser, logged in once through the studio's login page (a wrong password is refused first)."""
    url, _ = studio_url
    page = _new_page(browser, url)
    page.get_by_role("heading", name="Login").wait_for()
    assert page.locator("#gen-captions").count() == 0  # nothing of the studio before logging in

    def log_in(password: str) -> None:
        page.fill("input[data-testid='textbox']", LOGIN[0])
        page.fill("input[data-testid='password']", password)
        page.get_by_role("button", name="Login").click()

    log_in("not the password")
    page.get_by_text("Incorrect Credentials").wait_for()
    log_in(LOGIN[1])
    page.wait_for_selector("#gen-captions textarea")
    page.close()
    return browser


@pytest.fixture(scope="module")
def screenshots() -> Path:
    shots = Path(tempfile.mkdtemp(prefix="studio-screenshots-"))
    print(f"screenshots in {shots}")
    return shots


def _publish(shots: Path, *names: str) -> None:
    """Copy screenshots of a passing run to docs/studio/ when asked to (AUTOCOMICS_UPDATE_SCREENSHOTS=1)."""
    if os.environ.get("AUTOCOMICS_UPDATE_SCREENSHOTS"):
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(shots / f"{name}.png", DOCS_SHOTS / f"{name}.png")


def _new_page(browser, url: str):
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    return page


def _set(page, selector: str, value: str) -> None:
    """Fill an input once visible and blur it, so Gradio takes the value; check that it held. Filled again when a
    late event from the page's start-up overwrote it (seen once on a loaded CPU: steps went back to the
    sampler's default)."""
    field = page.locator(selector)
    field.wait_for(state="visible")
    for _ in range(3):
        field.fill(value)
        field.press("Tab")
        page.wait_for_timeout(250)
        if field.input_value() == value:
            break
    assert field.input_value() == value


def _wait_match(page, selector: str, pattern: str) -> str:
    """Wait until the value of the input at ``selector`` matches the JavaScript regex ``pattern``; return it."""
    try:
        page.wait_for_function(
            "([sel, pattern]) => { const el = document.querySelector(sel); "
            "return el && new RegExp(pattern).test(el.value); }",
            arg=[selector, pattern],
            timeout=TIMEOUT_MS,
        )
    except Exception as exc:  # say what the page showed instead
        raise AssertionError(f"{selector} never matched {pattern!r}; it shows {page.input_value(selector)!r}") from exc
    return page.input_value(selector)


def _wait_text(page, selector: str, needle: str) -> str:
    page.wait_for_function(
        "([sel, needle]) => { const el = document.querySelector(sel); return el && el.value.includes(needle); }",
        arg=[selector, needle],
        timeout=TIMEOUT_MS,
    )
    return page.input_value(selector)


def _dismiss_toast(page, needle: str) -> None:
    """Wait for the pop-up message saying ``needle``, then close it (so later screenshots are clean)."""
    toast = page.locator("[data-testid='toast-body']", has_text=needle).first
    toast.wait_for()
    toast.locator("[data-testid='toast-close']").click()
    toast.wait_for(state="detached")


def _generate(page, strip: tuple[str, int], guidance: str, expect_guidance: str) -> str:
    captions, seed = strip
    page.fill("#gen-captions textarea", captions)
    _set(page, "#gen-guidance input", guidance)
    _set(page, "#gen-seed input", str(seed))
    page.click("#gen-run")
    # the last line of the messages names the model and the settings used
    status = _wait_match(
        page,
        "#gen-status textarea",
        rf"bundled_weights/base@\w+: seed {seed}, dpmpp_2m_sde × 10 steps, guidance {expect_guidance}$",
    )
    page.wait_for_selector("#gen-strip img")
    assert page.locator("#gen-panels .thumbnail-item").count() == 2
    return status


def _save(page, caption: str, number: int) -> None:
    page.fill("#gen-save-caption input", caption)
    page.click("#gen-save")
    _wait_text(page, "#gen-status textarea", f"saved to the catalogue as #{number}")


def test_generate_save_search_rename_download_delete(signed_in, studio_url, screenshots, tmp_path):
    url, studio = studio_url
    page = _new_page(signed_in, url)

    # --- model choice: the bundled model is the default; the models directory adds its folders
    page.wait_for_selector("#gen-captions textarea")
    assert page.input_value("#gen-model input") == "bundled model"
    assert [label for label, _ in studio.model_choices()] == ["bundled model", EMOJI_LABEL, "tiny-random"]
    page.click("#gen-model input")
    page.get_by_role("option", name="tiny-random").wait_for()
    page.keyboard.press("Escape")
    assert page.input_value("#gen-model input") == "bundled model"

    # --- Generate: a two-panel strip with the default sampler at few steps; an absurd guidance value is clamped with a
    # message
    page.click("#gen-advanced .label-wrap")
    _set(page, "#gen-steps input", "10")
    status = _generate(page, STRIP_ONE, "500", "50")
    assert "guidance 500 is outside" in status and "using 50" in status
    assert page.input_value("#gen-guidance input") == "50"
    _save(page, SAVED[0], 1)

    status = _generate(page, STRIP_ONE, "5", "5")
    assert "outside" not in status
    _save(page, SAVED[1], 2)

    _generate(page, STRIP_TWO, "5", "5")
    page.screenshot(path=str(screenshots / "generate.png"), full_page=True)
    _save(page, SAVED[2], 3)
    assert studio.catalogue.get(3).params["model"].startswith("bundled_weights/base@")
    assert studio.catalogue.get(3).image_hash != studio.catalogue.get(2).image_hash

    page.fill("#gen-save-caption input", "   ")
    page.click("#gen-save")
    _dismiss_toast(page, "caption is empty")
    assert studio.catalogue.count() == 3

    # --- Catalogue: a paraphrase finds the right item first
    page.get_by_role("tab", name="Catalogue").click()
    page.wait_for_selector("#cat-grid .thumbnail-item")
    page.fill("#cat-query textarea, #cat-query input", PARAPHRASE)
    page.click("#cat-search")
    _wait_text(page, "#cat-status textarea, #cat-status input", "ranked by meaning")
    assert page.locator("#cat-grid .caption-label").first.inner_text() == f"#3 {SAVED[2]}"
    assert page.locator("#cat-grid .thumbnail-item").count() == 3
    page.screenshot(path=str(screenshots / "catalogue.png"), full_page=True)

    # rename
    page.locator("#cat-grid .thumbnail-item").first.click()
    _wait_text(page, "#cat-selected textarea, #cat-selected input", "#3")
    page.fill("#cat-new-caption input, #cat-new-caption textarea", "red and orange shapes on bright backgrounds")
    page.click("#cat-rename")
    _wait_text(page, "#cat-status textarea, #cat-status input", "renamed #3")
    assert studio.catalogue.get(3).caption == "red and orange shapes on bright backgrounds"

    # download: the same bytes as the stored image
    with page.expect_download() as info:
        page.click("#cat-download")
    saved = tmp_path / "download.png"
    info.value.save_as(saved)
    assert saved.read_bytes() == studio.catalogue.image_path(3).read_bytes()
    assert info.value.suggested_filename.endswith("-3.png")

    # delete, after confirmation; "keep" first to check nothing happens without it
    page.click("#cat-delete")
    page.wait_for_selector("#cat-confirm", state="visible")
    page.click("#cat-keep")
    page.wait_for_selector("#cat-confirm", state="hidden")
    assert studio.catalogue.count() == 3
    page.click("#cat-delete")
    page.click("#cat-confirm")
    _wait_text(page, "#cat-status textarea, #cat-status input", "deleted #3")
    assert studio.catalogue.count() == 2
    assert page.locator("#cat-grid .thumbnail-item").count() == 2
    page.close()
    _publish(screenshots, "generate", "catalogue")


def test_train_tab_starts_watches_and_cancels_a_fine_tune(signed_in, studio_url, train_data, screenshots, monkeypatch):
    from finetune.bundled_models import bundled_model_path
    from finetune.train.resume_state import list_checkpoints

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the trainer process: one core is enough here
    url, studio = studio_url
    page = _new_page(signed_in, url)
    page.get_by_role("tab", name="Train").click()
    page.wait_for_selector("#train-start")
    assert page.input_value("#train-init input") == "scratch"
    assert page.input_value("#train-preset input") == "tiny-base"
    # fine-tune the bundled model (its logged samples then show shapes, not noise)
    page.click("#train-init input")
    page.get_by_role("option", name="bundled model").click()
    assert page.input_value("#train-init input") == "bundled model"
    page.wait_for_selector("#train-preset input:disabled")  # the preset only matters from scratch
    page.click("#train-data input")
    page.get_by_role("option", name=train_data.name).click()
    assert page.input_value("#train-data input") == train_data.name
    _set(page, "#train-steps input", "2000")
    _set(page, "#train-ckpt input", "1000")  # no periodic checkpoint before the cancel
    _set(page, "#train-sample input", "30")
    page.click("#train-start")

    # live progress: wait for a sample grid and for train loss points at steps 10, 20 and 30 in the plot
    _wait_match(page, "#train-status textarea, #train-status input", r"running: step ([3-9]\d|\d{3,}) of 2000")
    page.wait_for_function(
        "() => { const img = document.querySelector('#train-samples img');"
        " return img && img.complete && img.naturalWidth > 0; }",
        timeout=TIMEOUT_MS,
    )
    assert "samples/grid at step" in page.locator("#train-samples").inner_text()
    page.wait_for_selector("#train-plot .vega-embed svg")
    assert "train/loss" in page.locator("#train-plot").inner_text()
    page.screenshot(path=str(screenshots / "train.png"), full_page=True)
    job = studio.job
    assert job.settings["init"] == str(bundled_model_path("base"))
    assert job.running and not list_checkpoints(job.run_dir)
    losses = job.progress().losses["tensorboard/train/loss"]
    assert [step for step, _ in losses][:3] == [10, 20, 30]

    # cancel: the trainer checkpoints on SIGINT, stops, and the UI says where the checkpoint is
    page.click("#train-cancel")
    status = _wait_text(page, "#train-status textarea, #train-status input", "cancelled at step")
    _dismiss_toast(page, "checkpoint saved in")
    assert not job.running and job.returncode == 130  # 128 + SIGINT: the trainer's "interrupted" status
    [checkpoint] = list_checkpoints(job.run_dir)
    assert f"checkpoint saved in {checkpoint}" in status
    assert int(checkpoint.name.split("-")[1]) >= 30
    assert "--resume latest" in status
    page.close()
    _publish(screenshots, "train")
