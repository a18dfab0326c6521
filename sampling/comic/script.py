"""Comic scripts (YAML or JSON): parsing and validation that names the line and field of any mistake.

A script tells one or more pages. Top-level keys: `title`, `style` (appended to every caption),
`character` (a recurring character/style description prepended to every caption), `seed`,
`layout` (default for pages), `writer` and `summary` (exported in a CBZ's ComicInfo.xml), `reading_order`
(ltr | rtl), `gutter` (pixels between panels) and `bleed` (true: art to the paper's edge), and either `panels`
(one page) or `pages` (each with `title`, `layout`, `gutter`, `bleed`, `panels`). A panel has `caption`,
optional `narration`, optional `dialogue` (items with `speaker`, `text`, `kind` = speech | thought | shout)
and optional `seed`.
Cast (see `sampling/comic/cast.py`): `cast` maps each character's name to `description` (text put in the prompt
of every panel the character is in) and an optional `adapter: PATH[:SCALE]` (a LoRA adapter folder applied
while those panels are drawn); `style_adapter: PATH[:SCALE]` is applied to every panel. A panel's characters are
its `cast: [name, ...]` list when it has one, else every cast name its caption contains as a whole word (any
case). Relative adapter paths are relative to the script's folder. On the command line a script may name any
adapter folder on the disk (the user runs their own script); a server running scripts others wrote (the studio)
must parse them with `adapter_root` (its adapters folder) set, and then every adapter path must lie inside it.
Layouts: "strip" (one row), "ROWSxCOLS" or {rows: R, cols: C} (square panels), a named layout whose panels have
their own shapes (splash, 3-tier, wide-top, l-shape: sampling/comic/layouts.py; the page must have exactly its
panel count), or "auto" (the named layout made for the page's panel count, else a grid).

A script is untrusted input, so its size is bounded (``LIMITS``): the file's bytes, YAML nesting depth and the
number of nodes once aliases are expanded (checked while the YAML is composed, so an alias bomb is refused
before it is expanded), pages, panels and dialogue lines, and the length of every text field. A script over
a limit is refused with one line naming the file, line and field; nothing is cut silently.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from data_pipeline.errors import UserError
from finetune.adapters.specs import AdapterSpec

from .cast import CastMember, cast_in_panel, check_name, parse_script_adapter
from .layouts import AUTO, NAMED_LAYOUTS, NamedLayout, auto_layout, layout_names

DIALOGUE_KINDS = ("speech", "thought", "shout")
READING_ORDERS = ("ltr", "rtl")
MAX_GUTTER = 200  # pixels between panels on the page


@dataclass(frozen=True)
class ScriptLimits:
    """How large a comic script may be. Generous for real comics (a 24-page issue has ~150 panels)."""

    file_bytes: int = 1 << 20
    yaml_depth: int = 32  # a script needs ~8 levels (pages > page > panels > panel > dialogue > line)
    yaml_nodes: int = 100_000  # values once aliases are expanded
    pages: int = 200
    panels: int = 1_000  # in the whole script; every panel is one image to sample
    panels_per_page: int = 24
    dialogue_per_panel: int = 12
    prompt_chars: int = 1_000  # caption, style, character: the model reads only its first text_ctx tokens
    lettering_chars: int = 500  # narration, dialogue text, speaker and titles, which are drawn on the page
    summary_chars: int = 5_000  # the script's summary, exported in ComicInfo.xml
    # The most characters lettering tries to fit into one box, whatever its source (a speaker and a line, the
    # studio): longer text is cut with an ellipsis and a warning, so lettering time is bounded.
    typeset_chars: int = 2_000
    cast_members: int = 32  # characters in one script's cast
    name_chars: int = 64  # a cast member's name
    path_chars: int = 1_024  # an adapter path


LIMITS = ScriptLimits()


class ScriptError(UserError, ValueError):
    """A malformed comic script; the message names the file, line and field."""


@dataclass(frozen=True)
class DialogueLine:
    speaker: str
    text: str
    kind: str = "speech"


@dataclass(frozen=True)
class Panel:
    caption: str
    narration: str | None = None
    dialogue: tuple[DialogueLine, ...] = ()
    seed: int | None = None
    cast: tuple[str, ...] | None = None  # the panel's characters by name; None: those its caption names


@dataclass(frozen=True)
class Layout:
    rows: int
    cols: int

    @property
    def cells(self) -> int:
        return self.rows * self.cols

    def describe(self) -> str:
        return f"{self.rows}x{self.cols}"


@dataclass(frozen=True)
class Page:
    title: str | None
    layout: Layout | NamedLayout
    panels: tuple[Panel, ...]
    gutter: int | None = None  # None: the page style's
    bleed: bool = False  # art runs to the paper's edge: no outer margin, no panel borders
    reading_order: str = "ltr"  # rtl mirrors the panel boxes and the lettering's placement


@dataclass(frozen=True)
class ComicScript:
    title: str | None
    style: str
    character: str
    seed: int
    pages: tuple[Page, ...]
    source: str = "<script>"
    writer: str = ""
    summary: str = ""
    reading_order: str = "ltr"
    cast: tuple[CastMember, ...] = ()
    style_adapter: AdapterSpec | None = None

    def prompt_for(self, panel: Panel) -> str:
        """The text the model sees: character description, the descriptions of the panel's cast, caption, style."""
        prompt = self.character
        for member in self.cast_of(panel):
            prompt = _join(prompt, member.description, ", ")
        prompt = _join(prompt, panel.caption, ", ")
        return _join(prompt, self.style, ", ")

    def cast_of(self, panel: Panel) -> tuple[CastMember, ...]:
        """The panel's characters, in cast order: its own `cast` list, else the names its caption contains."""
        return cast_in_panel(self.cast, panel.cast, panel.caption)

    def adapters_for(self, panel: Panel) -> tuple[AdapterSpec, ...]:
        """The adapters the panel is drawn with: the style adapter, then each of its characters' (one each)."""
        found = [self.style_adapter] if self.style_adapter else []
        found += [m.adapter for m in self.cast_of(panel) if m.adapter is not None]
        return tuple(dict.fromkeys(found))  # one of each, order kept

    def panel_refs(self) -> list[tuple[int, int, Panel]]:
        """(page number, panel number, panel), both numbers 1-based."""
        return [(p, q, panel) for p, page in enumerate(self.pages, 1) for q, panel in enumerate(page.panels, 1)]


def _join(left: str, right: str, separator: str) -> str:
    left, right = left.strip(), right.rstrip()
    if not left:
        return right.lstrip(" ,;")
    if not right.strip():
        return left
    if right[0] in ",.;:!?" or right[0].isspace():
        return left + right
    return left + separator + right


def default_layout(n_panels: int) -> Layout:
    cols = math.ceil(math.sqrt(n_panels))
    return Layout(math.ceil(n_panels / cols), cols)


# ---------------------------------------------------------------- YAML loading that keeps line numbers


class _MarkedDict(dict):
    line: int = 0
    key_lines: dict


class _MarkedList(list):
    line: int = 0
    item_lines: list


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that bounds nesting depth and alias expansion while composing, before anything is built."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._expanded_size: dict[int, int] = {}  # id(node) -> nodes it stands for with aliases expanded

    def compose_node(self, parent, index):
        if self._depth >= LIMITS.yaml_depth:  # PyYAML composes recursively: stop before Python's stack runs out
            line = self.peek_event().start_mark.line + 1
            raise ScriptError(f"line {line}: nested deeper than {LIMITS.yaml_depth} levels")
        is_alias = self.check_event(yaml.AliasEvent)  # a node composed (or being composed) earlier
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if not is_alias:
            self._count_expanded(node)
        return node

    def _count_expanded(self, node: yaml.Node) -> None:
        """Record how many values `node` stands for; an alias child counts its full size at each use."""
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        size = 1
        for child in children:
            if id(child) not in self._expanded_size:  # an alias to a node that is still being composed
                raise ScriptError(f"line {child.start_mark.line + 1}: an alias refers to a value that contains it")
            size += self._expanded_size[id(child)]
        if size > LIMITS.yaml_nodes:
            raise ScriptError(
                f"line {node.start_mark.line + 1}: the script expands to more than "
                f"{LIMITS.yaml_nodes} values (aliases count once per use)"
            )
        self._expanded_size[id(node)] = size


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _MarkedDict:
    loader.flatten_mapping(node)
    result = _MarkedDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise ScriptError(f"line {key_node.start_mark.line + 1}: keys must be text, got {key!r}")
        if key in result:
            raise ScriptError(f"line {key_node.start_mark.line + 1}: '{key}' appears twice in one mapping")
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _MarkedList:
    result = _MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _load_document(text: str, source: str, is_json: bool) -> Any:
    plain = None
    if is_json:
        try:
            plain = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScriptError(f"{source}: line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}") from None
        except RecursionError:
            pass  # nested too deeply: the YAML reader below reports where
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except ScriptError as exc:
        raise ScriptError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        if plain is not None:
            return plain  # valid JSON that YAML reads differently: validate without line numbers
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScriptError(f"{source}: {where}not valid YAML: {problem}") from None
    except ValueError as exc:  # a value YAML cannot build, e.g. an integer of more than 4300 digits
        raise ScriptError(f"{source}: not a usable script: {exc}") from None


# ---------------------------------------------------------------- validation


class _Fields:
    """Reads one mapping of the script, reporting errors with its line numbers and field path."""

    def __init__(self, data: Any, path: str, source: str, line: int | None):
        self.source, self.path, self.data = source, path, data
        self.line = getattr(data, "line", None) or line
        self.key_lines = getattr(data, "key_lines", {})
        if not isinstance(data, dict):
            self.fail(f"expected a mapping of fields, got {_kind(data)}")

    def where(self, key: str | None = None) -> str:
        line = self.key_lines.get(key) if key else None
        line = line or self.line
        field_path = f"{self.path}.{key}" if key and self.path else (key or self.path or "script")
        return f"{self.source}: line {line}: {field_path}" if line else f"{self.source}: {field_path}"

    def fail(self, message: str, key: str | None = None):
        raise ScriptError(f"{self.where(key)}: {message}")

    def only(self, allowed: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                self.fail(f"unknown field; expected one of: {', '.join(allowed)}", key)

    def text(self, key: str, max_chars: int, required: bool = False, default: str | None = None) -> str | None:
        if key not in self.data or self.data[key] is None:
            if required:
                self.fail("this field is required", key)
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            hint = " (quote it: YAML reads yes/no/on/off as true/false)" if isinstance(value, bool) else ""
            self.fail(f"expected text, got {_kind(value)}{hint}", key)
        return _bounded_text(str(value), max_chars, self.where(key))

    def integer(self, key: str, minimum: int = 0, maximum: int = 2**63 - 1) -> int | None:
        if key not in self.data or self.data[key] is None:
            return None
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"expected a whole number, got {_kind(value)}", key)
        if not minimum <= value <= maximum:
            self.fail(f"must be between {minimum} and {maximum}, got {value}", key)
        return value

    def items(self, key: str, max_items: int, what: str) -> list[tuple[Any, int | None, str]]:
        """The list under `key` as (item, line, path) triples; at most `max_items` `what`."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(f"expected a list, got {_kind(value)}", key)
        if len(value) > max_items:
            self.fail(f"at most {max_items} {what}, got {len(value)}", key)
        lines = getattr(value, "item_lines", [None] * len(value))
        prefix = f"{self.path}.{key}" if self.path else key
        return [(item, lines[i], f"{prefix}[{i}]") for i, item in enumerate(value)]

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(f"expected true or false, got {_kind(value)}", key)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = (self.text(key, 32) or default).strip().lower()
        if value not in choices:
            self.fail(f"must be one of {', '.join(choices)}, got {value!r}", key)
        return value

    def layout(self, key: str) -> Layout | NamedLayout | str | None:
        """A grid Layout, a NamedLayout, AUTO (resolved per page from its panel count) or None."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            spec = value.strip().lower()
            if spec == "strip":
                return Layout(1, 0)  # columns filled in from the panel count
            if spec == AUTO:
                return AUTO
            if spec in NAMED_LAYOUTS:
                return NAMED_LAYOUTS[spec]
            match = re.fullmatch(r"(\d+)\s*[x×]\s*(\d+)", spec)
            if not match:
                self.fail(
                    f"expected 'strip', 'ROWSxCOLS' (e.g. '2x2'), {{rows: R, cols: C}} or one of "
                    f"{', '.join(layout_names())}, got {value!r}",
                    key,
                )
            rows, cols = int(match.group(1)), int(match.group(2))
        elif isinstance(value, dict):
            sub = _Fields(value, f"{self.path}.{key}" if self.path else key, self.source, self.key_lines.get(key))
            sub.only(("rows", "cols"))
            rows, cols = sub.integer("rows", 1, 12), sub.integer("cols", 1, 12)
            if rows is None or cols is None:
                sub.fail("needs both rows and cols")
        else:
            self.fail(f"expected 'strip', 'ROWSxCOLS' or {{rows: R, cols: C}}, got {_kind(value)}", key)
        if not (1 <= rows <= 12 and 1 <= cols <= 12):
            self.fail(f"rows and cols must be between 1 and 12, got {rows}x{cols}", key)
        return Layout(rows, cols)


def _bounded_text(text: str, max_chars: int, where: str) -> str:
    if len(text) > max_chars:
        raise ScriptError(f"{where}: text of {len(text)} characters; at most {max_chars} are allowed")
    return text


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"true/false ({value})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    return f"{type(value).__name__} {value!r}"


def _parse_dialogue(item: Any, line: int | None, path: str, source: str) -> DialogueLine:
    f = _Fields(item, path, source, line)
    f.only(("speaker", "text", "kind"))
    text = f.text("text", LIMITS.lettering_chars, required=True)
    if not text.strip():
        f.fail("dialogue text is empty", "text")
    kind = (f.text("kind", 16) or "speech").strip().lower()
    if kind not in DIALOGUE_KINDS:
        f.fail(f"must be one of {', '.join(DIALOGUE_KINDS)}, got {kind!r}", "kind")
    speaker = f.text("speaker", LIMITS.lettering_chars) or ""
    return DialogueLine(speaker=speaker.strip(), text=text.strip(), kind=kind)


def _parse_panel(item: Any, line: int | None, path: str, source: str, cast_names: set[str]) -> Panel:
    if isinstance(item, str):  # a bare caption
        where = f"{source}: line {line}: {path}" if line else f"{source}: {path}"
        return Panel(caption=_bounded_text(item, LIMITS.prompt_chars, where))
    f = _Fields(item, path, source, line)
    f.only(("caption", "narration", "dialogue", "seed", "cast"))
    caption = f.text("caption", LIMITS.prompt_chars, required=True, default="")
    narration = f.text("narration", LIMITS.lettering_chars)
    dialogue_items = f.items("dialogue", LIMITS.dialogue_per_panel, "dialogue lines per panel")
    dialogue = tuple(_parse_dialogue(d, dl, dp, source) for d, dl, dp in dialogue_items)
    return Panel(
        caption=caption.strip(),
        narration=narration.strip() if narration and narration.strip() else None,
        dialogue=dialogue,
        seed=f.integer("seed", 0, 2**32 - 1),
        cast=_panel_cast(f, cast_names),
    )


def _panel_cast(f: _Fields, cast_names: set[str]) -> tuple[str, ...] | None:
    """A panel's explicit `cast: [name, ...]`: names of the script's cast, each once."""
    if "cast" not in f.data:
        return None
    names = []
    for item, line, path in f.items("cast", LIMITS.cast_members, "characters per panel"):
        if not isinstance(item, str) or item.strip().lower() not in cast_names:
            known = ", ".join(sorted(cast_names)) or "none: the script has no cast"
            raise ScriptError(f"{f.source}: line {line or f.line}: {path}: {item!r} is not in the cast ({known})")
        names.append(item.strip().lower())
    return tuple(dict.fromkeys(names))


def _page_layout(f: _Fields, layout, n_panels: int) -> Layout | NamedLayout:
    """The page's layout resolved for its panel count; ScriptError when the panels do not fit it."""
    if layout is None or layout == AUTO:
        layout = (auto_layout(n_panels) if layout == AUTO else None) or default_layout(n_panels)
    elif isinstance(layout, Layout) and layout.cols == 0:  # strip
        layout = Layout(1, n_panels)
    where = "layout" if "layout" in f.data else "panels"
    if isinstance(layout, NamedLayout) and n_panels != layout.cells:
        f.fail(
            f"layout {layout.name} holds exactly {layout.cells} panel(s) but the page has {n_panels}; "
            f"use layout 'auto' to pick one that fits",
            where,
        )
    if n_panels > layout.cells:
        f.fail(f"layout {layout.describe()} has {layout.cells} cells but the page has {n_panels} panels", where)
    return layout


def _parse_page(f: _Fields, defaults: dict, default_title: str | None, panels_before: int = 0) -> Page:
    """One page; `defaults` holds the script-wide layout, gutter, bleed, reading_order and cast names."""
    panel_items = f.items("panels", LIMITS.panels_per_page, "panels per page")
    if not panel_items:
        f.fail("a page needs at least one panel", "panels")
    if panels_before + len(panel_items) > LIMITS.panels:
        f.fail(f"the script has more than {LIMITS.panels} panels (at most {LIMITS.panels} in one script)", "panels")
    cast_names = defaults["cast_names"]
    panels = tuple(_parse_panel(item, line, path, f.source, cast_names) for item, line, path in panel_items)
    layout = _page_layout(f, f.layout("layout") or defaults["layout"], len(panels))
    gutter = f.integer("gutter", 0, MAX_GUTTER)
    return Page(
        title=f.text("title", LIMITS.lettering_chars, default=default_title),
        layout=layout,
        panels=panels,
        gutter=defaults["gutter"] if gutter is None else gutter,
        bleed=f.flag("bleed", defaults["bleed"]),
        reading_order=defaults["reading_order"],
    )


def _adapter_field(f: _Fields, key: str, roots: tuple) -> AdapterSpec | None:
    """An optional `PATH[:SCALE]` field (see sampling/comic/cast.py for where paths may point)."""
    text = f.text(key, LIMITS.path_chars)
    if text is None:
        return None
    try:
        return parse_script_adapter(text, *roots)
    except ValueError as exc:
        f.fail(str(exc), key)


def _parse_cast(top: _Fields, roots: tuple) -> tuple[CastMember, ...]:
    """The `cast` mapping: name -> {description, adapter} (or name -> description text)."""
    value = top.data.get("cast")
    if value is None:
        return ()
    cast = _Fields(value, "cast", top.source, top.key_lines.get("cast"))
    if len(value) > LIMITS.cast_members:
        top.fail(f"at most {LIMITS.cast_members} characters, got {len(value)}", "cast")
    members, seen = [], set()
    for name in value:
        try:
            name = check_name(name, LIMITS.name_chars)
        except ValueError as exc:
            cast.fail(str(exc), name)
        if name.lower() in seen:
            cast.fail("two cast members have this name (names match in any case)", name)
        seen.add(name.lower())
        members.append(_parse_member(cast, name, roots))
    return tuple(members)


def _parse_member(cast: _Fields, name: str, roots: tuple) -> CastMember:
    entry = cast.data[name]
    if entry is None or isinstance(entry, (str, int, float)) and not isinstance(entry, bool):
        return CastMember(name, (cast.text(name, LIMITS.prompt_chars) or "").strip())
    f = _Fields(entry, f"cast.{name}", cast.source, cast.key_lines.get(name))
    f.only(("description", "adapter"))
    description = (f.text("description", LIMITS.prompt_chars) or "").strip()
    return CastMember(name, description, _adapter_field(f, "adapter", roots))


SCRIPT_KEYS = (
    "title",
    "style",
    "character",
    "seed",
    "layout",
    "writer",
    "summary",
    "reading_order",
    "gutter",
    "bleed",
    "pages",
    "panels",
    "cast",
    "style_adapter",
)


def parse_script(
    data: Any, source: str = "<script>", *, base_dir: Path | None = None, adapter_root: Path | None = None
) -> ComicScript:
    """Validate an already-loaded script (dict) into a ComicScript. Relative adapter paths are relative to
    `base_dir` (the script's folder; the working directory when None); with `adapter_root` set (the studio), they
    are relative to it and every adapter must lie inside it."""
    top = _Fields(data, "", source, 1)
    top.only(SCRIPT_KEYS)
    if ("pages" in data) == ("panels" in data):
        top.fail("give either 'panels' (one page) or 'pages' (a list of pages), not both or neither")
    roots = (base_dir, adapter_root)
    cast = _parse_cast(top, roots)
    style_adapter = _adapter_field(top, "style_adapter", roots)
    defaults = {
        "cast_names": {member.name.lower() for member in cast},
        "layout": top.layout("layout"),
        "gutter": top.integer("gutter", 0, MAX_GUTTER),
        "bleed": top.flag("bleed"),
        "reading_order": top.choice("reading_order", READING_ORDERS, "ltr"),
    }
    title = top.text("title", LIMITS.lettering_chars)
    if "panels" in data:
        pages = (_parse_page(top, defaults, title),)
    else:
        page_items = top.items("pages", LIMITS.pages, "pages")
        if not page_items:
            top.fail("the script has no pages", "pages")
        pages = []
        panel_count = 0
        for i, (item, line, path) in enumerate(page_items):
            f = _Fields(item, path, source, line)
            f.only(("title", "layout", "gutter", "bleed", "panels"))
            # The script title heads the first page unless that page names its own.
            pages.append(_parse_page(f, defaults, title if i == 0 else None, panel_count))
            panel_count += len(pages[-1].panels)
        pages = tuple(pages)
    return ComicScript(
        title=title,
        style=top.text("style", LIMITS.prompt_chars, default="") or "",
        character=top.text("character", LIMITS.prompt_chars, default="") or "",
        seed=top.integer("seed", 0, 2**32 - 1) or 0,
        pages=pages,
        source=source,
        writer=(top.text("writer", LIMITS.lettering_chars) or "").strip(),
        summary=(top.text("summary", LIMITS.summary_chars) or "").strip(),
        reading_order=defaults["reading_order"],
        cast=cast,
        style_adapter=style_adapter,
    )


def load_script(path: str | Path, *, adapter_root: Path | None = None) -> ComicScript:
    """Read and validate a YAML (.yaml/.yml) or JSON (.json) comic script (adapter paths relative to its folder;
    `adapter_root`: see parse_script)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > LIMITS.file_bytes:
            raise ScriptError(f"{path}: {size} bytes; a script may have at most {LIMITS.file_bytes}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScriptError(f"{path}: no such script file") from None
    except UnicodeDecodeError as exc:
        raise ScriptError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    data = _load_document(text, str(path), is_json=path.suffix.lower() == ".json")
    if data is None:
        raise ScriptError(f"{path}: the script is empty")
    return parse_script(data, str(path), base_dir=path.parent, adapter_root=adapter_root)
