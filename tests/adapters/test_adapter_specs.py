"""`PATH[:SCALE]` arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.adapters import AdapterError, AdapterSpec, parse_adapter_spec


@pytest.mark.parametrize(
    "text, expected",
    [
        ("style", AdapterSpec(Path("style"), 1.0)),
        ("adapters/style:0.5", AdapterSpec(Path("adapters/style"), 0.5)),
        ("a:b:-1", AdapterSpec(Path("a:b"), -1.0)),
        ("style:1e-1", AdapterSpec(Path("style"), 0.1)),
    ],
)
def test_paths_and_scales(text, expected):
    assert parse_adapter_spec(text) == expected


def test_an_existing_path_with_a_colon_is_a_path(tmp_path):
    folder = tmp_path / "v1:2"
    folder.mkdir()
    assert parse_adapter_spec(str(folder)) == AdapterSpec(folder, 1.0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty adapter argument"),
        (":0.5", "has no path"),
        ("style:strong", "'strong' is not a number"),
        ("style:nan", "must be a finite number"),
        ("style:100", "in [-10, 10]"),
    ],
)
def test_bad_arguments_are_one_line_errors(text, message):
    with pytest.raises(AdapterError, match=None) as info:
        parse_adapter_spec(text)
    assert message in str(info.value)
