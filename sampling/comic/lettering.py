"""Lettering: narration boxes and speech/thought/shout balloons, sized to their text and placed
along a panel's edges where they cover none of its subject (found from the picture, see `subject.py`), or,
when the picture shows none, where they leave the panel's centre clear.

The font is Pillow's bundled scalable font, so pages render the same on a bare machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

from PIL import ImageDraw, ImageFont

from .layout import Box
from .script import LIMITS, DialogueLine
from .subject import CoverageCounter

INK = (0, 0, 0)
PAPER = (255, 255, 255)
NARRATION_FILL = (255, 240, 190)
OUTLINE = 2
CENTRE_FRACTION = 0.4  # the middle 40% x 40% of a panel stays clear of lettering
SPIKE = 6  # how far a shout balloon's teeth reach out of its body
BUMP = 6  # radius of a thought balloon's edge bumps


@lru_cache(maxsize=64)
def get_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=8192)
def _advance(size: int, char: str) -> float:
    return get_font(size).getlength(char)


def text_width(text: str, font: ImageFont.FreeTypeFont) -> float:
    """Width of `text` as the sum of its characters' advances (kerning ignored). Measuring a string with
    FreeType costs ~0.1 ms, so wrapping measures each character once per size instead of each candidate line."""
    return sum(_advance(font.size, char) for char in text)


def line_height(font: ImageFont.FreeTypeFont) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent + max(1, font.size // 8)


def _fitting_prefix(word: str, font: ImageFont.FreeTypeFont, max_width: float) -> tuple[int, float]:
    """How many leading characters of `word` fit in max_width (at least one), and their width."""
    used = 0.0
    for count, char in enumerate(word):
        advance = _advance(font.size, char)
        if used + advance > max_width:
            return (count, used) if count else (1, advance)
        used += advance
    return len(word), used


def wrap_text(text: str, font: ImageFont.FreeTypeFont, max_width: float) -> list[str]:
    """Greedy word wrap by width; a word wider than the line is split by characters. One pass over the text."""
    space = _advance(font.size, " ")
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        current, current_width = "", 0.0
        for word in paragraph.split():
            width = text_width(word, font)
            joined = current_width + space + width if current else width
            if joined <= max_width:
                current, current_width = (f"{current} {word}" if current else word), joined
                continue
            if current:
                lines.append(current)
            while len(word) > 1 and width > max_width:
                cut, cut_width = _fitting_prefix(word, font, max_width)
                lines.append(word[:cut])
                word = word[cut:]
                width -= cut_width
            current, current_width = word, width
        lines.append(current)
    return lines


@dataclass
class TextBlock:
    lines: list[str]
    font_size: int
    width: int
    height: int
    truncated: bool = False


def fit_text(text: str, max_width: int, max_height: int, max_size: int, min_size: int) -> TextBlock:
    """The largest font size at which `text` wraps into max_width x max_height; at the smallest size
    lines that do not fit are dropped and the last kept line ends with an ellipsis.

    Text longer than LIMITS.typeset_chars is always cut that way, so the time spent is bounded whatever its length."""
    too_long = len(text) > LIMITS.typeset_chars
    if too_long:
        text = text[: LIMITS.typeset_chars]
    for size in range(max_size, min_size - 1, -1):
        if too_long:
            break
        font = get_font(size)
        lines = wrap_text(text, font, max_width)
        height = line_height(font) * len(lines)
        if height <= max_height:
            return TextBlock(lines, size, _block_width(lines, font), height)
    font = get_font(min_size)
    lines = wrap_text(text, font, max_width)
    keep = max(1, max_height // line_height(font))
    lines = lines[:keep]
    last = lines[-1]
    ellipsis = text_width("…", font)
    while last and text_width(last, font) + ellipsis > max_width:
        last = last[:-1]
    lines[-1] = last.rstrip() + "…"
    return TextBlock(lines, min_size, _block_width(lines, font), line_height(font) * len(lines), truncated=True)


def _block_width(lines: list[str], font: ImageFont.FreeTypeFont) -> int:
    """Exact rendered width of the widest line (the box is drawn around this)."""
    return max((math.ceil(font.getlength(line)) for line in lines), default=0)


@dataclass
class Lettering:
    """One placed narration box or balloon. `box` is the outer extent of the body (not the tail)."""

    kind: str  # narration | speech | thought | shout
    text: str
    speaker: str
    block: TextBlock
    box: Box
    body: Box
    tail: tuple[tuple[float, float], ...] = field(default=())

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "speaker": self.speaker,
            "text": self.text,
            "box": self.box.as_list(),
            "font_size": self.block.font_size,
            "truncated": self.block.truncated,
        }


def _padding(kind: str) -> tuple[int, int]:
    return {"narration": (6, 4), "speech": (11, 6), "thought": (11, 6), "shout": (11, 7)}[kind]


def _reach(kind: str) -> int:
    """How far the drawn shape extends beyond the padded text box."""
    return {"shout": SPIKE, "thought": BUMP}.get(kind, 0) + OUTLINE


def centre_box(panel: Box) -> Box:
    half_w, half_h = panel.width * CENTRE_FRACTION / 2, panel.height * CENTRE_FRACTION / 2
    cx, cy = panel.center
    return Box(int(cx - half_w), int(cy - half_h), math.ceil(cx + half_w), math.ceil(cy + half_h))


def _outer_size(kind: str, block: TextBlock) -> tuple[int, int]:
    pad_x, pad_y = _padding(kind)
    reach = _reach(kind)
    return block.width + 2 * (pad_x + reach), block.height + 2 * (pad_y + reach)


def _candidate_boxes(panel: Box, width: int, height: int, taken: list[Box], margin: int) -> list[tuple[Box, int]]:
    """Positions for a balloon with a preference group each: 0 along the top edge, 1 just below
    lettering already at the top, 2 along the bottom edge (or above lettering there), 3 beside the centre."""
    inner = panel.inset(margin)
    right, left, centre = inner.x1 - width, inner.x0, (inner.x0 + inner.x1 - width) // 2
    found = [(x, inner.y0, 0) for x in (right, left, centre)]
    for y in sorted({b.y1 + 2 for b in taken if b.y1 + 2 + height <= inner.y1}):
        found += [(x, y, 1) for x in (right, left, centre)]
    found += [(x, inner.y1 - height, 2) for x in (left, right, centre)]
    for y in sorted({b.y0 - 2 - height for b in taken if b.y0 - 2 - height >= inner.y0}, reverse=True):
        found += [(x, y, 2) for x in (left, right, centre)]
    middle = (inner.y0 + inner.y1 - height) // 2  # short balloons fit beside the clear centre
    found += [(left, middle, 3), (right, middle, 3)]
    return [(Box(x, y, x + width, y + height), group) for x, y, group in found]


def _body_of(kind: str, box: Box) -> Box:
    return box.inset(_reach(kind) - OUTLINE)


class KeepClear:
    """What lettering must not cover in one panel: its subject's pixels when the picture shows one, else the
    middle of the panel."""

    def __init__(self, panel: Box, subject: CoverageCounter | None):
        self.subject = subject
        self.area = Box(*self.subject.bounds) if self.subject else centre_box(panel)

    def covered(self, box: Box) -> int:
        """Protected pixels under `box`."""
        return self.subject.covered(*box.as_list()) if self.subject else box.overlap(self.area)


def _tail(kind: str, body: Box, panel: Box, clear: Box) -> tuple[tuple[float, float], ...]:
    """A short tail from the body's edge towards the middle of `clear` (the subject), stopping before it."""
    if kind not in ("speech", "thought"):
        return ()
    cx, cy = clear.center
    pointing_down = body.center[1] < cy
    base_y = body.y1 - 6 if pointing_down else body.y0 + 6
    base_x = min(max(cx, body.x0 + 18), body.x1 - 18) if body.width > 40 else body.center[0]
    base_x = (base_x + body.center[0]) / 2
    edge_y = body.y1 if pointing_down else body.y0
    room = (clear.y0 - edge_y) if pointing_down else (edge_y - clear.y1)
    length = max(6.0, min(panel.height * 0.09, room - 2))
    tip_y = edge_y + length if pointing_down else edge_y - length
    tip_x = base_x + math.copysign(min(abs(cx - base_x), length * 0.8), cx - base_x)
    return ((base_x - 6, base_y), (base_x + 6, base_y), (tip_x, tip_y))


def _place_narration(panel: Box, narration: str, keep_clear: KeepClear, max_font: int, min_font: int) -> Lettering:
    """A narration box in a panel corner: top left unless that covers more of the subject than another corner,
    as wide as the text needs up to the panel width, narrower ones first so a corner stays free for balloons."""
    pad_x, pad_y = _padding("narration")
    max_height = int(panel.height * 0.28) - 2 * (pad_y + OUTLINE)
    best = None
    for rank, frac in enumerate((0.6, 0.8, 1.0)):
        block = fit_text(narration, int(panel.width * frac) - 2 * (pad_x + OUTLINE), max_height, max_font, min_font)
        w, h = _outer_size("narration", block)
        corners = [
            (panel.x0, panel.y0),
            (panel.x1 - w, panel.y0),
            (panel.x0, panel.y1 - h),
            (panel.x1 - w, panel.y1 - h),
        ]
        for corner, (x, y) in enumerate(corners):
            box = Box(x, y, x + w, y + h)
            cost = (block.truncated, keep_clear.covered(box), corner, -block.font_size, rank)
            if best is None or cost < best[0]:
                best = (cost, block, box)
    _, block, box = best
    return Lettering("narration", narration, "", block, box, box)


def place_lettering(
    panel: Box,
    narration: str | None,
    dialogue: tuple[DialogueLine, ...],
    max_font: int,
    min_font: int,
    subject: CoverageCounter | None = None,
) -> tuple[list[Lettering], list[str]]:
    """Fit and place a panel's narration (a corner) and balloons (along the edges, top first) off the
    `subject` (or the panel's centre when there is none). Returns the placed items and warnings about text that
    had to be cut or overlaps that could not be avoided."""
    margin = max(3, panel.width // 60)
    keep_clear = KeepClear(panel, subject)
    placed: list[Lettering] = []
    warnings: list[str] = []
    if narration:
        placed.append(_place_narration(panel, narration, keep_clear, max_font, min_font))
        if placed[-1].block.truncated:
            warnings.append(f"narration cut to fit: {narration[:40]!r}")
        if keep_clear.covered(placed[-1].box):
            warnings.append(f"narration could not avoid the picture's subject: {narration[:40]!r}")
    for line in dialogue:
        text = f"{line.speaker}: {line.text}" if line.speaker else line.text
        if line.kind == "shout":
            text = text.upper()
        taken = [p.box for p in placed]
        choice = None
        pad_x, pad_y = _padding(line.kind)
        reach = _reach(line.kind)
        # Cost of an option: each font size step below the largest costs 1, each preference group 2,
        # so a balloon stays near the top (reading order) at a slightly smaller size before it moves down.
        best_cost = None
        for size in range(max_font, min_font - 1, -1):
            if best_cost is not None and max_font - size >= best_cost:
                break
            for frac in (0.55, 0.75, 0.95):  # compact first, then wider and flatter
                block = fit_text(
                    text,
                    int(panel.width * frac) - 2 * (pad_x + reach),
                    int(panel.height * 0.3) - 2 * (pad_y + reach),
                    size,
                    size,
                )
                if block.truncated:
                    continue
                w, h = _outer_size(line.kind, block)
                for box, group in _candidate_boxes(panel, w, h, taken, margin):
                    cost = (max_font - size) + 2 * group
                    if best_cost is not None and cost >= best_cost:
                        continue
                    if panel.contains(box) and keep_clear.covered(box) == 0 and all(box.overlap(t) == 0 for t in taken):
                        choice, best_cost = (block, box), cost
        if choice is None:  # crowded panel: smallest font, least overlap, and say so
            block = fit_text(
                text,
                int(panel.width * 0.55) - 2 * sum(_padding(line.kind)),
                int(panel.height * 0.3),
                min_font,
                min_font,
            )
            w, h = _outer_size(line.kind, block)
            box = min(
                (b for b, _ in _candidate_boxes(panel, w, h, taken, margin)),
                key=lambda b: (sum(b.overlap(t) for t in taken) + keep_clear.covered(b), not panel.contains(b)),
            )
            choice = (block, box)
            warnings.append(f"balloon could not avoid other lettering or the picture's subject: {text[:40]!r}")
        block, box = choice
        if block.truncated:
            warnings.append(f"balloon text cut to fit: {text[:40]!r}")
        body = _body_of(line.kind, box)
        tail = _tail(line.kind, body, panel, keep_clear.area)
        placed.append(Lettering(line.kind, line.text, line.speaker, block, box, body, tail))
    return placed, warnings


# ---------------------------------------------------------------- drawing


def _draw_text(draw: ImageDraw.ImageDraw, body: Box, kind: str, block: TextBlock) -> None:
    font = get_font(block.font_size)
    step = line_height(font)
    y = body.center[1] - block.height / 2
    stroke = 1 if kind == "shout" and block.font_size >= 18 else 0  # heavier letters for shouting, where legible
    for line in block.lines:
        if kind == "narration":
            x = body.x0 + OUTLINE + _padding(kind)[0]
        else:
            x = body.center[0] - font.getlength(line) / 2
        draw.text((x, y), line, font=font, fill=INK, stroke_width=stroke, stroke_fill=INK)
        y += step


def _shrink(points, amount: float):
    (ax, ay), (bx, by), (tx, ty) = points
    mx, my = (ax + bx) / 2, (ay + by) / 2
    return (
        (ax + (bx - ax) * amount, ay + (by - ay) * amount),
        (bx - (bx - ax) * amount, by - (by - ay) * amount),
        (tx + (mx - tx) * amount, ty + (my - ty) * amount),
    )


def _zigzag(body: Box) -> list[tuple[float, float]]:
    """A jagged outline around `body`: teeth every ~14px that reach SPIKE px outwards."""
    points = []
    corners = [(body.x0, body.y0), (body.x1, body.y0), (body.x1, body.y1), (body.x0, body.y1)]
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1]):
        length = math.hypot(bx - ax, by - ay)
        n = max(2, int(length // 14))
        nx, ny = (by - ay) / length, -(bx - ax) / length  # outward normal (clockwise in image coordinates)
        for i in range(n):
            f0, f1 = i / n, (i + 0.5) / n
            points.append((ax + (bx - ax) * f0, ay + (by - ay) * f0))
            points.append((ax + (bx - ax) * f1 + nx * SPIKE, ay + (by - ay) * f1 + ny * SPIKE))
    return points


def draw_lettering(draw: ImageDraw.ImageDraw, item: Lettering) -> None:
    body = item.body
    if item.kind == "narration":
        draw.rectangle(body.as_list(), fill=NARRATION_FILL, outline=INK, width=OUTLINE)
    elif item.kind == "speech":
        radius = min(16, body.height // 2)
        if item.tail:
            draw.polygon(item.tail, fill=PAPER, outline=INK, width=OUTLINE)
        draw.rounded_rectangle(body.as_list(), radius=radius, fill=PAPER, outline=INK, width=OUTLINE)
        if item.tail:  # open the body's outline where the tail joins it
            draw.polygon(_shrink(item.tail, 0.2), fill=PAPER)
    elif item.kind == "thought":
        bumps = []
        for x in range(body.x0 + BUMP, body.x1 - BUMP + 1, BUMP * 2):
            bumps += [(x, body.y0), (x, body.y1)]
        for y in range(body.y0 + BUMP, body.y1 - BUMP + 1, BUMP * 2):
            bumps += [(body.x0, y), (body.x1, y)]
        for x, y in bumps:
            draw.ellipse([x - BUMP - OUTLINE, y - BUMP - OUTLINE, x + BUMP + OUTLINE, y + BUMP + OUTLINE], fill=INK)
        draw.rounded_rectangle(body.inset(-OUTLINE).as_list(), radius=BUMP, fill=INK)
        for x, y in bumps:
            draw.ellipse([x - BUMP, y - BUMP, x + BUMP, y + BUMP], fill=PAPER)
        draw.rounded_rectangle(body.as_list(), radius=BUMP, fill=PAPER)
        if item.tail:  # a trail of shrinking circles instead of a pointed tail
            (ax, ay), (bx, by), (tx, ty) = item.tail
            mx, my = (ax + bx) / 2, (ay + by) / 2
            edge_y = body.y1 if ty > my else body.y0
            for frac, r in ((0.45, 4), (0.9, 2.5)):
                px, py = mx + (tx - mx) * frac, edge_y + (ty - edge_y) * frac
                draw.ellipse([px - r, py - r, px + r, py + r], fill=PAPER, outline=INK, width=1)
    elif item.kind == "shout":
        draw.polygon(_zigzag(body), fill=PAPER, outline=INK, width=OUTLINE)
    else:
        raise ValueError(f"unknown lettering kind {item.kind!r}")
    _draw_text(draw, body, item.kind, item.block)


def draw_title(draw: ImageDraw.ImageDraw, box: Box, title: str) -> None:
    block = fit_text(title, box.width, box.height, max(12, int(box.height * 0.75)), 10)
    font = get_font(block.font_size)
    y = box.center[1] - block.height / 2
    for line in block.lines:
        draw.text((box.center[0] - font.getlength(line) / 2, y), line, font=font, fill=INK)
        y += line_height(font)
