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
from itertools import groupby
from pathlib import Path
from typing import Callable

from PIL import Image
from tqdm.auto import tqdm

from data_pipeline.errors import UserError
from data_pipeline.fsutil import atomic_write_json

from ..outputs import output_state, save_image
from .adapter_sets import adapters_applied, check_adapter_sets, panel_adapter_sets, pipeline_adapters
from .arrange import arrangement_parameters
from .folder import check_same_comic, comic_identity
from .page import PageStyle, compose_page
from .panel_shapes import generate_in_shapes, panel_shapes
from .script import ComicScript, Panel

log = logging.getLogger(__name__)
METADATA_FILE = "comic.json"
PanelRef = tuple[int, int]  # (page, panel), 1-based


class ComicError(UserError, ValueError):
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


def _check_request(script: ComicScript, regenerate: dict, candidates: int, reranker) -> dict[PanelRef, Panel]:
    """The script's panels by reference, after checking the request names only panels the script has."""
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
    return refs


def _panel_seeds(
    script: ComicScript, refs: dict[PanelRef, Panel], regenerate: dict, previous: dict
) -> tuple[dict[PanelRef, int], dict[str, int], list[str]]:
    """Each panel's seed (see the module docstring for the precedence), the seed overrides to record, warnings."""
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
    return seeds, overrides, warnings


def _panels_to_draw(
    out_dir: Path, params: dict[PanelRef, dict], regenerate: dict, overwrite: bool
) -> tuple[list[PanelRef], list[PanelRef]]:
    """(panels to generate, panels already written with the same parameters); other parameters are an error."""
    todo, skipped, conflicts = [], [], []
    for ref, panel_params in params.items():
        state = output_state(panel_file(out_dir, ref), panel_params)
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
    return todo, skipped


@dataclass
class _PanelJob:
    """How the panels are drawn: the pipeline, candidates per panel (the reranker keeps the best) and batching."""

    pipeline: object
    out_dir: Path
    candidates: int
    reranker: object
    batch_size: int
    progress: bool
    report: Callable[[str], None]


def _save_best(job: _PanelJob, ref: PanelRef, results: list, params: dict) -> None:
    """Save the panel: its one image, or the candidate the reranker scores best."""
    info = {"image_seed": results[0].seed}
    if job.candidates > 1:
        best, scores = job.reranker.best([r.image for r in results], params["prompt"])
        info = {"image_seed": results[best].seed, "clip_scores": scores, "candidate_seeds": [r.seed for r in results]}
        results = [results[best]]
    save_image(panel_file(job.out_dir, ref), results[0].image, params, info)
    job.report(f"panel {panel_key(ref)} written (seed {info['image_seed']})")


def _draw_panels(job: _PanelJob, todo: list[PanelRef], seeds: dict, params: dict, shapes: dict, adapters) -> list:
    """Generate the panels in `todo` in batches, one adapter set at a time (applied once for all its panels),
    saving each panel as soon as its candidates are done; the warnings. `adapters`: (each panel's adapter set, the
    pipeline's own set, put back after)."""
    sets, own = adapters
    jobs = [(ref, k) for ref in todo for k in range(job.candidates)]
    order = {adapter_set: i for i, adapter_set in enumerate(dict.fromkeys(sets[ref] for ref in todo))}
    # Panels of one adapter set, then of one shape, share batches (stable: the script's order otherwise).
    jobs.sort(key=lambda item: (order[sets[item[0]]], shapes[item[0]]))
    pending: dict[PanelRef, list] = {}
    warnings: list[str] = []
    for adapter_set, group in groupby(jobs, key=lambda item: sets[item[0]]):
        group = list(group)
        prompts = [params[ref]["prompt"] for ref, _ in group]
        job_seeds = [candidate_seeds(seeds[ref], job.candidates)[k] for ref, k in group]
        job_shapes = [shapes[ref] for ref, _ in group]
        with adapters_applied(job.pipeline, adapter_set, own):
            batches = generate_in_shapes(job.pipeline, prompts, job_seeds, job_shapes, job.batch_size, job.progress)
            done = 0
            for batch in batches:
                warnings += _save_batch(job, group[done : done + len(batch)], batch, pending, params)
                done += len(batch)
    return warnings


def _save_batch(job: _PanelJob, jobs: list, results: list, pending: dict, params: dict) -> list[str]:
    """Save every panel whose candidates are all done once `results` (for `jobs`) are in; their warnings."""
    warnings = []
    for (ref, _), result in zip(jobs, results):
        pending.setdefault(ref, []).append(result)
        warnings += [f"panel {panel_key(ref)}: {w}" for w in result.warnings]
        if len(pending[ref]) == job.candidates:
            _save_best(job, ref, pending.pop(ref), params[ref])
    return warnings


def _with_adapters(params: dict, adapters: list[dict]) -> dict:
    """A panel's parameters with its own adapters (as the pipeline records them, and none without any, so earlier
    outputs still match)."""
    params = {k: v for k, v in params.items() if k != "adapters"}
    return {**params, "adapters": adapters} if adapters else params


def _page_parameters(page, page_refs, refs, params, seeds, pipeline, style: PageStyle) -> dict:
    """What a page PNG records: its layout, style, model and every panel's parameters and lettering."""
    return {
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


def _panel_metadata(
    out_dir: Path, ref: PanelRef, panel: Panel, params: dict, seed: int, placed: dict, cast: tuple
) -> dict:
    return {
        "page": ref[0],
        "panel": ref[1],
        "caption": panel.caption,
        "prompt": params["prompt"],
        "seed": seed,
        "narration": panel.narration,
        "dialogue": [d.__dict__ for d in panel.dialogue],
        "cast": [member.name for member in cast],
        "file": str(panel_file(out_dir, ref).relative_to(out_dir)),
        "box": placed["box"],
        "lettering": placed["lettering"],
    }


def _compose_pages(
    script: ComicScript, refs, params, seeds, pipeline, style: PageStyle, out_dir: Path, progress: bool
) -> tuple[list[Path], list[dict], list[str]]:
    """Every page composed from its saved panels (rewritten only when its parameters changed): the page files,
    each panel's metadata and the lettering warnings."""
    pages, panel_meta, warnings = [], [], []
    for number, page in enumerate(tqdm(script.pages, desc="pages", unit="page", disable=not progress), 1):
        page_refs = [(number, q) for q in range(1, len(page.panels) + 1)]
        images = []
        for ref in page_refs:
            with Image.open(panel_file(out_dir, ref)) as im:
                images.append(im.convert("RGB"))
        image, layout, notes = compose_page(page, images, style)
        warnings += [f"page {number}: {n}" for n in notes]
        page_params = _page_parameters(page, page_refs, refs, params, seeds, pipeline, style)
        path = page_file(out_dir, number)
        if output_state(path, page_params) != "same":
            save_image(path, image, page_params)
        pages.append(path)
        for ref, placed in zip(page_refs, layout["panels"]):
            cast = script.cast_of(refs[ref])
            panel_meta.append(_panel_metadata(out_dir, ref, refs[ref], params[ref], seeds[ref], placed, cast))
    return pages, panel_meta, warnings


def _cast_metadata(script: ComicScript) -> dict:
    """comic.json's record of the cast and style adapter (adapters as PATH:SCALE)."""
    return {
        "cast": [
            {"name": m.name, "description": m.description, "adapter": str(m.adapter) if m.adapter else None}
            for m in script.cast
        ],
        "style_adapter": str(script.style_adapter) if script.style_adapter else None,
    }


def _comic_metadata(script: ComicScript, pipeline, params, pages, panel_meta, overrides, warnings) -> dict:
    """comic.json: the script, model and sampling parameters, the pages and panels, the seed overrides."""
    return {
        "script": script.source,
        "title": script.title,
        **comic_identity(script),
        "style": script.style,
        "character": script.character,
        **_cast_metadata(script),
        "script_seed": script.seed,
        "model": pipeline.model_id,
        "parameters": {k: v for k, v in next(iter(params.values())).items() if k not in ("prompt", "seed")},
        "pages": [
            {"page": i, "file": p.name, "title": pg.title, "layout": pg.layout.describe()}
            for i, (p, pg) in enumerate(zip(pages, script.pages), 1)
        ],
        "panels": panel_meta,
        "seed_overrides": overrides,
        "warnings": warnings,
    }


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
    """Generate (or reuse) every panel of `script` with `pipeline` (a `TextToImage`) and compose its pages. Adapters
    already applied to the pipeline act on every panel; the script's style and cast adapters are added to the
    panels they belong to."""
    out_dir = Path(out_dir)
    regenerate = dict(regenerate or {})
    refs = _check_request(script, regenerate, candidates, reranker)
    previous = _read_metadata(out_dir)
    check_same_comic(previous, script, out_dir, overwrite)
    seeds, overrides, warnings = _panel_seeds(script, refs, regenerate, previous)
    rerank_info = {"candidates": candidates, "clip_model": getattr(reranker, "name", None) if candidates > 1 else None}
    shapes = panel_shapes(script, style, pipeline)  # each panel at its box's aspect
    own = pipeline_adapters(pipeline)
    sets = panel_adapter_sets(script, refs, own)
    metadata = check_adapter_sets(pipeline, list(sets.values()))  # before anything is written
    params = {
        ref: _with_adapters(
            {**pipeline.parameters(script.prompt_for(panel), seeds[ref], shape=shapes[ref]), **rerank_info},
            metadata[sets[ref]],
        )
        for ref, panel in refs.items()
    }
    todo, skipped = _panels_to_draw(out_dir, params, regenerate, overwrite)

    out_dir.mkdir(parents=True, exist_ok=True)
    # Record the seeds first, so an interrupted run resumes with the same ones.
    atomic_write_json(out_dir / METADATA_FILE, {**previous, "seed_overrides": overrides})
    job = _PanelJob(pipeline, out_dir, candidates, reranker, batch_size, progress, report)
    warnings += _draw_panels(job, todo, seeds, params, shapes, (sets, own))
    pages, panel_meta, page_warnings = _compose_pages(script, refs, params, seeds, pipeline, style, out_dir, progress)
    warnings += page_warnings
    atomic_write_json(
        out_dir / METADATA_FILE, _comic_metadata(script, pipeline, params, pages, panel_meta, overrides, warnings)
    )
    return ComicResult(out_dir, pages, {ref: panel_file(out_dir, ref) for ref in refs}, todo, skipped, warnings)
