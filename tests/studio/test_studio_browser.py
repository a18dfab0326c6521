"""End to end in a real browser: headless Debian Chromium driven by Playwright against the running studio."""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from studio_helpers import apt_install, free_port, missing_dependency

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "studio"
TIMEOUT_MS = 90_000


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
    """A tiny random base model folder (stands in for the bundled model until that ships)."""
    import torch
    from finetune.checkpoints import save_model_folder
    from finetune.model import build_model, get_preset
    from finetune.tokenizers import get_tokenizer

    torch.manual_seed(0)
    model = build_model(get_preset("tiny-base"))
    folder = tmp_path_factory.mktemp("models")
    tokenizer = get_tokenizer(model.options["tokenizer"], model.options["text_ctx"])
    save_model_folder(folder / "tiny-comic", model, tokenizer=tokenizer)
    return folder


@pytest.fixture(scope="module")
def studio_url(models_dir, tmp_path_factory, embedder):
    from sampling.studio.cli import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    port = free_port()
    args = parser.parse_args(["--workdir", str(tmp_path_factory.mktemp("studio")), "--models-dir", str(models_dir),
                              "--port", str(port), "--device", "cpu"])
    studio, demo = run(args, block=False)
    try:
        yield f"http://127.0.0.1:{port}/", studio
    finally:
        demo.close()


def _value(page, selector: str) -> str:
    return page.input_value(selector)


def _wait_text(page, selector: str, needle: str) -> None:
    page.wait_for_function(
        "([sel, needle]) => { const el = document.querySelector(sel); return el && el.value.includes(needle); }",
        arg=[selector, needle], timeout=TIMEOUT_MS,
    )


def test_generate_save_search_rename_download_delete(chromium, studio_url, tmp_path):
    from playwright.sync_api import sync_playwright

    url, studio = studio_url
    shots = Path(tempfile.mkdtemp(prefix="studio-screenshots-"))
    print(f"screenshots in {shots}")
    with sync_playwright() as pw:
        # a fresh profile folder per run (Playwright's way of passing --user-data-dir)
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 1000}, accept_downloads=True,
        )
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)

        # --- Generate: a two-panel strip; an absurd guidance value is clamped with a visible message
        page.wait_for_selector("#gen-captions textarea")
        page.fill("#gen-captions textarea", "a lighthouse on a cliff\n\na small boat in a storm")
        page.click("#gen-advanced .label-wrap")
        # The accordion renders its inputs as it opens: fill each one once it is visible, blur it so Gradio
        # takes the value, and check the value held before generating.
        for selector, value in (("#gen-guidance input", "500"), ("#gen-steps input", "3")):
            field = page.locator(selector)
            field.wait_for(state="visible")
            field.fill(value)
            field.press("Tab")
            assert field.input_value() == value
        page.click("#gen-run")
        _wait_text(page, "#gen-status textarea", "seed 0")
        status = _value(page, "#gen-status textarea")
        assert "guidance 500 is outside" in status and "using 50" in status
        assert _value(page, "#gen-guidance input") == "50"
        page.wait_for_selector("#gen-strip img")
        assert page.locator("#gen-panels .thumbnail-item").count() == 2
        page.screenshot(path=str(shots / "generate.png"), full_page=True)

        # --- save the strip and two more items with other captions
        captions = [
            "a lighthouse keeper waving at a passing ship",
            "a bowl of ramen noodles on a wooden table",
            "a red sports car racing through the desert",
        ]
        for number, caption in enumerate(captions, 1):
            page.fill("#gen-save-caption input", caption)
            page.click("#gen-save")
            _wait_text(page, "#gen-status textarea", f"saved to the catalogue as #{number}")
        page.fill("#gen-save-caption input", "   ")
        page.click("#gen-save")
        page.get_by_text("caption is empty").first.wait_for()

        # --- Catalogue: a paraphrase finds the right item first
        page.get_by_role("tab", name="Catalogue").click()
        page.wait_for_selector("#cat-grid .thumbnail-item")
        page.fill("#cat-query textarea, #cat-query input", "man at a lighthouse greeting a boat")
        page.click("#cat-search")
        _wait_text(page, "#cat-status textarea, #cat-status input", "ranked by meaning")
        first = page.locator("#cat-grid .caption-label").first
        assert first.inner_text().startswith("#1 a lighthouse keeper")
        assert page.locator("#cat-grid .thumbnail-item").count() == 3
        page.screenshot(path=str(shots / "catalogue.png"), full_page=True)

        # rename
        page.locator("#cat-grid .thumbnail-item").first.click()
        _wait_text(page, "#cat-selected textarea, #cat-selected input", "#1")
        page.fill("#cat-new-caption input, #cat-new-caption textarea", "the keeper says goodbye to the ship")
        page.click("#cat-rename")
        _wait_text(page, "#cat-status textarea, #cat-status input", "renamed #1")
        assert studio.catalogue.get(1).caption == "the keeper says goodbye to the ship"

        # download: the same bytes as the stored image
        with page.expect_download() as info:
            page.click("#cat-download")
        saved = tmp_path / "download.png"
        info.value.save_as(saved)
        assert saved.read_bytes() == studio.catalogue.image_path(1).read_bytes()
        assert info.value.suggested_filename.endswith("-1.png")

        # delete, after confirmation; "keep" first to check nothing happens without it
        page.click("#cat-delete")
        page.wait_for_selector("#cat-confirm", state="visible")
        page.click("#cat-keep")
        page.wait_for_selector("#cat-confirm", state="hidden")
        assert studio.catalogue.count() == 3
        page.click("#cat-delete")
        page.click("#cat-confirm")
        _wait_text(page, "#cat-status textarea, #cat-status input", "deleted #1")
        assert studio.catalogue.count() == 2
        assert page.locator("#cat-grid .thumbnail-item").count() == 2

        # --- Train tab, for the record
        page.get_by_role("tab", name="Train").click()
        page.wait_for_selector("#train-start")
        page.screenshot(path=str(shots / "train.png"), full_page=True)
        browser.close()

    if os.environ.get("AUTOCOMICS_UPDATE_SCREENSHOTS"):
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        for name in ("generate", "train", "catalogue"):
            shutil.copyfile(shots / f"{name}.png", DOCS_SHOTS / f"{name}.png")
