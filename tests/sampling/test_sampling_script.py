"""Comic scripts: parsing, layouts, prompt composition and errors that name the line and field."""

from __future__ import annotations

import json

import pytest

from sampling.comic.script import Layout, ScriptError, load_script, parse_script
from sampling.commands.comic import example_scripts


def write(tmp_path, text, name="script.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_full_script(tmp_path):
    script = load_script(
        write(
            tmp_path,
            """\
title: Harbour
character: a girl with a red scarf
style: ", a watercolor painting"
seed: 5
pages:
  - layout: 2x3
    panels:
      - caption: on a pier
        narration: Morning.
        dialogue:
          - {speaker: Ana, text: Hello!, kind: shout}
          - speaker: Ana
            text: Quiet now.
            kind: thought
      - caption: on a boat
        seed: 99
      - a bare caption
  - title: Two
    layout: strip
    panels: [one, two, three]
""",
        )
    )
    assert script.title == "Harbour" and script.seed == 5 and len(script.pages) == 2
    first, second = script.pages
    assert first.layout == Layout(2, 3) and first.title == "Harbour"
    assert second.layout == Layout(1, 3) and second.title == "Two"
    panel = first.panels[0]
    assert panel.narration == "Morning." and [d.kind for d in panel.dialogue] == ["shout", "thought"]
    assert first.panels[1].seed == 99 and first.panels[2].caption == "a bare caption"
    assert script.prompt_for(panel) == "a girl with a red scarf, on a pier, a watercolor painting"


def test_prompt_joining_and_empty_caption():
    script = parse_script({"style": "oil painting", "panels": [{"caption": ""}, "a cat"]})
    assert script.prompt_for(script.pages[0].panels[0]) == "oil painting"
    assert script.prompt_for(script.pages[0].panels[1]) == "a cat, oil painting"
    plain = parse_script({"panels": [""]})
    assert plain.prompt_for(plain.pages[0].panels[0]) == ""  # unconditional


def test_default_layout_and_json(tmp_path):
    path = write(tmp_path, json.dumps({"panels": ["a", "b", "c", "d", "e"]}, indent=2), "s.json")
    script = load_script(path)
    assert script.pages[0].layout == Layout(2, 3)


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        (
            "panels:\n  - caption: a\n    dialogue:\n      - {speaker: A, text: hi, kind: yell}\n",
            4,
            "panels[0].dialogue[0].kind: must be one of speech, thought, shout",
        ),
        ("panels:\n  - caption: a\n    colour: red\n", 3, "panels[0].colour: unknown field"),
        ("title: t\nlayout: 1x1\npanels: [a, b]\n", 2, "layout 1x1 has 1 cells but the page has 2 panels"),
        (
            "pages:\n  - panels: [a]\n  - panels:\n      - caption: b\n        seed: -3\n",
            5,
            "pages[1].panels[0].seed: must be between 0",
        ),
        ("panels:\n  - caption: [not, text]\n", 2, "panels[0].caption: expected text, got a list"),
        ("panels:\n  - caption: no\n", 2, "quote it"),
        ("layout: 3 by 3\npanels: [a]\n", 1, "expected 'strip', 'ROWSxCOLS'"),
        ("panels:\n  - narration: only\n", 2, "panels[0].caption: this field is required"),
        (
            "panels:\n  - caption: a\n    dialogue:\n      - speaker: A\n",
            4,
            "panels[0].dialogue[0].text: this field is required",
        ),
        ("title: x\n", None, "give either 'panels'"),
        ("panels: []\n", 1, "a page needs at least one panel"),
        ("panels:\n  - caption: a\n  caption: b\n   bad: indent\n", 3, "not valid YAML"),
    ],
)
def test_errors_name_line_and_field(tmp_path, text, line, fragment):
    with pytest.raises(ScriptError) as info:
        load_script(write(tmp_path, text))
    message = str(info.value)
    assert fragment in message
    assert str(tmp_path / "script.yaml") in message
    if line is not None:
        assert f"line {line}" in message


def test_json_syntax_error_has_line(tmp_path):
    with pytest.raises(ScriptError, match=r"line 3, column \d+: not valid JSON"):
        load_script(write(tmp_path, '{\n  "panels": ["a",\n  ]\n}\n', "s.json"))


def test_missing_empty_and_binary_files(tmp_path):
    with pytest.raises(ScriptError, match="no such script file"):
        load_script(tmp_path / "absent.yaml")
    with pytest.raises(ScriptError, match="the script is empty"):
        load_script(write(tmp_path, "# nothing\n"))
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00panels")
    with pytest.raises(ScriptError, match="not UTF-8"):
        load_script(bad)


def test_bundled_example_is_valid():
    examples = example_scripts()
    assert "lighthouse" in examples
    script = load_script(examples["lighthouse"])
    assert len(script.pages) == 2 and sum(len(p.panels) for p in script.pages) == 6
    kinds = {d.kind for _, _, p in script.panel_refs() for d in p.dialogue}
    assert kinds == {"speech", "thought", "shout"}
