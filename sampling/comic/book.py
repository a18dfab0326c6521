"""A comic run: every panel of a script generated in batches, saved on its own, then composed
into pages, with a metadata file recording each panel's seed.

Output folder:
  comic.json                      metadata: pages, panels (prompt, seed, file, box, lettering), seed overrides
  page-01.png (+ .json)           composed pages
  panels/page-01-panel-01.png     each panel (+ .json sidecar)

Panel seeds, in order of precedence: a new seed from `regenerate`, a seed an earlier
regeneration recorded in comic.json, the panel's `seed` in the script, and otherwise one derived
from the script's `seed` and the panel's position. A rerun skips panels already written with the
same parameters; panels written with other parameters are an error unless `overwrite` is set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image
from tqdm.auto import tqdm

from ..outputs import atomic_write_json, output_state, save_image
from .arrange import arrangement_parameters
from .folder import check_same_comic, comic_identity
from .page import PageStyle, compose_page
from .panel_shapes import generate_in_shapes, panel_shapes
from .script import ComicScript

log = logging.getLogger(__name__)
METADATA_FILE = "comic.json"
PanelRef = tuple[int, int]  # (page, panel), 1-based


class ComicError(ValueError):
    """A comic run that cannot proceed as asked (conflicting outputs, bad panel references)."""


DEFAULT_PAGE_STYLE = PageStyle()


def panel_key(ref: PanelRef) -> str:
    return f"{ref[0]}.{ref[1]}"


def parse_panel_ref(text: str) -> tuple[PanelRef, int | None]:
    """'2.3' -> ((2, 3), None); '2.3=77' -> ((2, 3), 77)."""
    spec, _, seed = text.partition("=")
    try:
        page, panel = (int(part) for part in spec.split("."))
        seed_value = int(seed) if seed else None
    except ValueError:
        raise ComicError(f"bad panel reference {text!r}: expected PAGE.PANEL or PAGE.PANEL=SEED, e.g. 1.3=42") from None
    if page < 1 or panel < 1 or (seed_value is not None and seed_value < 0):
        raise ComicError(f"bad panel reference {text!r}: numbers start at 1 and seeds are not negative")
    return (page, panel), seed_value


def derived_seed(script_seed: int, ref: PanelRef) -> int:
    digest = hashlib.sha256(f"{script_seed}:{ref[0]}:{ref[1]}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def panel_file(out_dir: Path, ref: PanelRef) -> Path:
    return out_dir / "panels" / f"page-{ref[0]:02d}-panel-{ref[1]:02d}.png"


def page_file(out_dir: Path, page: int) -> Path:
    return out_dir / f"page-{page:02d}.png"


def candidate_seeds(seed: int, candidates: int) -> list[int]:
    return [seed + k for k in range(candidates)]


@dataclass
class ComicResult:
    out_dir: Path
    pages: list[Path]
    panels: dict[PanelRef, Path]
    generated: list[PanelRef]
    skipped: list[PanelRef]
    warnings: list[str] = field(default_factory=list)


def _read_metadata(out_dir: Path) -> dict:
    path = out_dir / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ComicError(f"{path} is unreadable ({exc}); move it away to start this folder afresh") from None


def make_comic(
    script: ComicScript,
    pipeline,
    out_dir: str | Path,
    *,
    batch_size: int = 4,
    style: PageStyle = DEFAULT_PAGE_STYLE,
    regenerate: dict[PanelRef, int | None] | None = None,
    overwrite: bool = False,
    candidates: int = 1,
    reranker=None,
    progress: bool = True,
    report: Callable[[str], None] = log.info,
) -> ComicResult:
    """Generate (or reuse) every panel of `script` with `pipeline` (a `TextToImage`) and compose its pages."""
    out_dir = Path(out_dir)
    regenerate = dict(regenerate or {})
    if candidates < 1:
        raise ComicError(f"candidates must be at least 1, got {candidates}")
    if candidates > 1 and reranker is None:
        raise ComicError("more than one candidate per panel needs a CLIP reranker")
    refs = {(p, q): panel for p, q, panel in script.panel_refs()}
    for ref in regenerate:
        if ref not in refs:
            raise ComicError(
                f"--regenerate {panel_key(ref)}: the script has no such panel "
                f"({len(script.pages)} page(s); page {ref[0]} has "
                f"{len(script.pages[ref[0] - 1].panels) if ref[0] <= len(script.pages) else 0} panel(s))"
            )

    previous = _read_metadata(out_dir)
    check_same_comic(previous, script, out_dir, overwrite)
    overrides: dict[str, int] = {k: int(v) for k, v in (previous.get("seed_overrides") or {}).items()}
    for ref, seed in regenerate.items():
        overrides[panel_key(ref)] = seed if seed is not None else secrets.randbelow(2**31)
    warnings: list[str] = []
    seeds: dict[PanelRef, int] = {}
    for ref, panel in refs.items():
        key = panel_key(ref)
        if key in overrides:
            if panel.seed is not None and panel.seed != overrides[key] and ref not in regenerate:
                warnings.append(
                    f"panel {key}: script seed {panel.seed} ignored; using seed {overrides[key]} chosen "
                    f"by an earlier --regenerate (recorded in {METADATA_FILE})"
                )
            seeds[ref] = overrides[key]
        elif panel.seed is not None:
            seeds[ref] = panel.seed
        else:
            seeds[ref] = derived_seed(script.seed, ref)
    overrides = {k: v for k, v in overrides.items() if tuple(int(x) for x in k.split(".")) in refs}

    rerank_info = {"candidates": candidates, "clip_model": getattr(reranker, "name", None) if candidates > 1 else None}
    shapes = panel_shapes(script, style, pipeline)  # each panel at its box's aspect
    params: dict[PanelRef, dict] = {}
    for ref, panel in refs.items():
        params[ref] = {**pipeline.parameters(script.prompt_for(panel), seeds[ref], shape=shapes[ref]), **rerank_info}

    todo, skipped, conflicts = [], [], []
    for ref in refs:
        state = output_state(panel_file(out_dir, ref), params[ref])
        if state == "same" and ref not in regenerate:
            skipped.append(ref)
        elif state == "different" and not (overwrite or ref in regenerate):
            conflicts.append(panel_key(ref))
        else:
            todo.append(ref)
    if conflicts:
        raise ComicError(
            f"panel(s) {', '.join(conflicts)} in {out_dir} were made with other settings or captions; "
            "pass --overwrite to regenerate them, or use another --out folder"
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    # Record the seeds first, so an interrupted run resumes with the same ones.
    atomic_write_json(out_dir / METADATA_FILE, {**previous, "seed_overrides": overrides})

    jobs = [(ref, k) for ref in todo for k in range(candidates)]
    jobs.sort(key=lambda job: shapes[job[0]])  # panels of one shape share batches (stable: order kept otherwise)
    pending: dict[PanelRef, list] = {}
    prompts = [params[ref]["prompt"] for ref, _ in jobs]
    job_seeds = [candidate_seeds(seeds[ref], candidates)[k] for ref, k in jobs]
    done = 0
    job_shapes = [shapes[ref] for ref, _ in jobs]
    for batch in generate_in_shapes(pipeline, prompts, job_seeds, job_shapes, batch_size, progress):
        for result in batch:
            ref, _ = jobs[done]
            done += 1
            pending.setdefault(ref, []).append(result)
            warnings += [f"panel {panel_key(ref)}: {w}" for w in result.warnings]
            if len(pending[ref]) < candidates:
                continue
            results = pending.pop(ref)
            info = {"image_seed": results[0].seed}
            if candidates > 1:
                best, scores = reranker.best([r.image for r in results], params[ref]["prompt"])
                info = {
                    "image_seed": results[best].seed,
                    "clip_scores": scores,
                    "candidate_seeds": [r.seed for r in results],
                }
                results = [results[best]]
            save_image(panel_file(out_dir, ref), results[0].image, params[ref], info)
            report(f"panel {panel_key(ref)} written (seed {info['image_seed']})")

    pages, panel_meta = [], []
    page_bar = tqdm(script.pages, desc="pages", unit="page", disable=not progress)
    for number, page in enumerate(page_bar, 1):
        page_refs = [(number, q) for q in range(1, len(page.panels) + 1)]
        images = []
        for ref in page_refs:
            with Image.open(panel_file(out_dir, ref)) as im:
                images.append(im.convert("RGB"))
        image, layout, notes = compose_page(page, images, style)
        warnings += [f"page {number}: {n}" for n in notes]
        page_params = {
            "kind": "comic page",
            "title": page.title,
            "layout": page.layout.describe(),
            **arrangement_parameters(page),
            "model": pipeline.model_id,
            "style": asdict(style),
            "panels": [
                {**params[ref], "narration": refs[ref].narration, "dialogue": [d.__dict__ for d in refs[ref].dialogue]}
                for ref in page_refs
            ],
            "prompt": " | ".join(params[ref]["prompt"] for ref in page_refs),
            "seed": [seeds[ref] for ref in page_refs],
        }
        path = page_file(out_dir, number)
        if output_state(path, page_params) != "same":
            save_image(path, image, page_params)
        pages.append(path)
        for ref, placed in zip(page_refs, layout["panels"]):
            panel = refs[ref]
            panel_meta.append(
                {
                    "page": ref[0],
                    "panel": ref[1],
                    "caption": panel.caption,
                    "prompt": params[ref]["prompt"],
                    "seed": seeds[ref],
                    "narration": panel.narration,
                    "dialogue": [d.__dict__ for d in panel.dialogue],
                    "file": str(panel_file(out_dir, ref).relative_to(out_dir)),
                    "box": placed["box"],
                    "lettering": placed["lettering"],
                }
            )
    metadata = {
        "script": script.source,
        "title": script.title,
        **comic_identity(script),
        "style": script.style,
        "character": script.character,
        "script_seed": script.seed,
        "model": pipeline.model_id,
        "parameters": {k: v for k, v in params[next(iter(refs))].items() if k not in ("prompt", "seed")},
        "pages": [
            {"page": i, "file": p.name, "title": pg.title, "layout": pg.layout.describe()}
            for i, (p, pg) in enumerate(zip(pages, script.pages), 1)
        ],
        "panels": panel_meta,
        "seed_overrides": overrides,
        "warnings": warnings,
    }
    atomic_write_json(out_dir / METADATA_FILE, metadata)
    return ComicResult(out_dir, pages, {ref: panel_file(out_dir, ref) for ref in refs}, todo, skipped, warnings)
