"""Comic scripts are untrusted input: their size, nesting, alias expansion and text lengths are bounded
(sampling.comic.script.LIMITS), and lettering takes bounded time whatever the length of its text.

Each hostile input is built here; each used to expand into hundreds of thousands of panels, letter for minutes
or end in a RecursionError traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sampling.comic.layout import Box
from sampling.comic.lettering import fit_text, place_lettering
from sampling.comic.script import LIMITS, DialogueLine, ScriptError, load_script

REPO_ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "script.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_fails(path: Path, fragment: str, seconds: float = 5.0) -> str:
    started = time.monotonic()
    with pytest.raises(ScriptError) as err:
        load_script(path)
    assert time.monotonic() - started < seconds
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and fragment in message, message
    return message


def alias_pages_script(pages: int) -> str:
    """~140 kB of YAML that names one 24-panel page once and repeats it by alias: 20,001 pages, 480,024 panels."""
    panels = "[" + ", ".join(["*p"] * 23) + "]"
    head = f"pages:\n  - &g {{panels: [&p {{caption: a cat on a boat, narration: Morning.}}, {panels[1:-1]}]}}\n"
    return head + "  - *g\n" * pages


def nested_lists(depth: int) -> str:
    return "[" * depth + "]" * depth


# ------------------------------------------------------------------------------------------ aliases and nesting
@pytest.mark.timeout(60)
def test_alias_expansion_is_refused_before_it_is_expanded(tmp_path):
    text = alias_pages_script(20_000)
    assert 100_000 < len(text) < 150_000
    load_fails(write(tmp_path, text), f"line 2: the script expands to more than {LIMITS.yaml_nodes} values")


@pytest.mark.timeout(60)
def test_exponential_alias_bomb_is_refused(tmp_path):
    lines = ["style: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [
        f"character: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]"
        if i == 1
        else f"title: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]"
        for i in (1, 2)
    ]
    text = "\n".join(lines) + "\npanels: [" + ", ".join(["*a2"] * 200) + "]\n"  # 10**5 * 200 values
    load_fails(write(tmp_path, text), "expands to more than")


def test_self_referencing_alias_is_refused(tmp_path):
    load_fails(write(tmp_path, "panels: &a [a cat, *a]\n"), "line 1: an alias refers to a value that contains it")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "name, text",
    [
        ("deep.yaml", f"panels: {nested_lists(5000)}\n"),
        ("deep.json", f'{{"panels": {nested_lists(5000)}}}\n'),
    ],
)
def test_deep_nesting_is_refused_without_a_traceback(tmp_path, name, text):
    load_fails(write(tmp_path, text, name), f"line 1: nested deeper than {LIMITS.yaml_depth} levels")


def test_script_file_size_is_capped(tmp_path):
    text = "panels: [a cat]\n" + "#" * LIMITS.file_bytes + "\n"
    load_fails(write(tmp_path, text), f"a script may have at most {LIMITS.file_bytes}")


def test_huge_integer_is_refused_in_one_line(tmp_path):
    load_fails(write(tmp_path, "seed: " + "9" * 5000 + "\npanels: [a cat]\n"), "not a usable script")


# ------------------------------------------------------------------------------------------ counts and lengths
def test_page_count_is_capped(tmp_path):
    pages = [{"panels": ["a cat"]}] * (LIMITS.pages + 1)
    load_fails(
        write(tmp_path, json.dumps({"pages": pages}, indent=1), "s.json"),
        f"pages: at most {LIMITS.pages} pages, got {LIMITS.pages + 1}",
    )


def test_panel_count_is_capped_across_pages(tmp_path):
    per_page = LIMITS.panels_per_page
    pages = [{"panels": ["a cat"] * per_page}] * (LIMITS.panels // per_page + 1)
    load_fails(
        write(tmp_path, json.dumps({"pages": pages}, indent=1), "s.json"),
        f"the script has more than {LIMITS.panels} panels",
    )


def test_dialogue_lines_per_panel_are_capped(tmp_path):
    dialogue = [{"speaker": "A", "text": "hi"}] * (LIMITS.dialogue_per_panel + 1)
    load_fails(
        write(tmp_path, json.dumps({"panels": [{"caption": "c", "dialogue": dialogue}]}, indent=1), "s.json"),
        f"panels[0].dialogue: at most {LIMITS.dialogue_per_panel} dialogue lines per panel",
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("field, limit", [("caption", LIMITS.prompt_chars), ("narration", LIMITS.lettering_chars)])
def test_megabyte_text_fields_are_refused(tmp_path, field, limit):
    text = "word " * 200_000
    script = {"panels": [{"caption": "a cat", field: text}]}
    load_fails(
        write(tmp_path, json.dumps(script), "s.json"),
        f"panels[0].{field}: text of {len(text)} characters; at most {limit} are allowed",
    )


def test_bare_caption_and_style_lengths_are_capped(tmp_path):
    long = "x" * (LIMITS.prompt_chars + 1)
    load_fails(write(tmp_path, f"panels:\n  - a cat\n  - {long}\n"), "line 3: panels[1]: text of")
    load_fails(write(tmp_path, f"style: {long}\npanels: [a cat]\n"), "line 1: style: text of")


def test_limits_admit_a_real_comic(tmp_path):
    """A 40-page issue with full pages of lettered panels stays well inside the limits."""
    panel = {
        "caption": "a lighthouse keeper " * 10,
        "narration": "Night fell. " * 20,
        "dialogue": [{"speaker": "Ana", "text": "Who goes there? " * 10}] * 4,
    }
    script = load_script(write(tmp_path, json.dumps({"pages": [{"panels": [panel] * 9}] * 40}), "s.json"))
    assert len(script.panel_refs()) == 360


# ------------------------------------------------------------------------------------------ lettering time
@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", ["word " * 200_000, "x" * 1_000_000], ids=["words", "one-word"])
def test_lettering_time_is_bounded_whatever_the_text_length(text):
    panel = Box(3, 3, 317, 317)
    started = time.monotonic()
    dialogue = tuple(DialogueLine("Ana", text, kind) for kind in ("speech", "thought", "shout"))
    items, warnings = place_lettering(panel, text, dialogue, 17, 10)
    title = fit_text(text, 352, 48, 36, 10)
    assert time.monotonic() - started < 10
    assert len(items) == 4 and title.truncated
    assert all(item.block.truncated for item in items) and len(warnings) >= 4
    assert all(line.endswith("…") for line in (items[0].block.lines[-1], title.lines[-1]))


# ------------------------------------------------------------------------------------------ the CLI
@pytest.mark.parametrize(
    "name, text, fragment",
    [
        ("deep.yaml", f"panels: {nested_lists(5000)}\n", "nested deeper than"),
        ("bomb.yaml", alias_pages_script(20_000), "expands to more than"),
    ],
)
def test_cli_reports_hostile_scripts_in_one_line(tmp_path, name, text, fragment):
    path = write(tmp_path, text, name)
    proc = subprocess.run(
        [sys.executable, "-m", "sampling", "comic", str(path), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and fragment in lines[0], proc.stderr[-2000:]
