"""`python -m sampling comic`: a panel script (YAML/JSON) → panels generated in batches → comic pages."""

from __future__ import annotations

import argparse
from importlib.resources import files
from pathlib import Path

from ..comic.book import make_comic, parse_panel_ref
from ..comic.export import DEFAULT_DPI, FORMATS, check_dpi, export_comic, parse_formats
from ..comic.page import PageStyle
from ..comic.script import load_script
from ..devices import resolve_device
from ..rerank import ClipReranker
from .common import CommandError, add_model_arguments, add_output_arguments, add_sampler_arguments, build_pipeline


def example_scripts() -> dict[str, Path]:
    """The scripts shipped with the package, by name (file stem)."""
    folder = files("sampling") / "examples"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith((".yaml", ".yml", ".json"))}


def resolve_script(text: str) -> Path:
    path = Path(text).expanduser()
    if path.exists():
        return path
    examples = example_scripts()
    if text in examples:
        return examples[text]
    raise CommandError(f"{text}: no such script file, and not a bundled example ({', '.join(sorted(examples))})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "script",
        help="comic script (.yaml/.yml/.json), or the name of a bundled example "
        f"({', '.join(sorted(example_scripts()))})",
    )
    parser.add_argument("--check", action="store_true", help="only validate the script and print its pages")
    parser.add_argument(
        "--regenerate",
        action="append",
        default=[],
        metavar="PAGE.PANEL[=SEED]",
        help="make this panel again with a new seed (random unless given), leaving the others; repeatable",
    )
    parser.add_argument(
        "--panel-size",
        type=int,
        default=PageStyle.panel_px,
        help=f"panel size on the page in pixels (images are resized; default: {PageStyle.panel_px})",
    )
    parser.add_argument(
        "--format",
        default="png",
        help=f"what to write, comma-separated: {', '.join(FORMATS)} (png: the pages, always written; pdf: one "
        "PDF; cbz: a comic archive with ComicInfo.xml; webtoon: the panels stacked in one tall strip)",
    )
    parser.add_argument(
        "--dpi", type=float, default=DEFAULT_DPI, help=f"pixels per inch of the PDF's pages (default: {DEFAULT_DPI})"
    )
    g = parser.add_argument_group("CLIP rerank (optional; needs local open_clip weights, nothing is downloaded)")
    g.add_argument(
        "--candidates", type=int, default=1, help="images sampled per panel; the best by CLIP is kept (default: 1)"
    )
    g.add_argument(
        "--clip-model", default="ViT-B-32", help="open_clip model name or model config .json (default: ViT-B-32)"
    )
    g.add_argument("--clip-weights", default=None, help="open_clip weights file (.safetensors/.bin)")
    g.add_argument(
        "--clip-pretrained",
        default="laion2b_s34b_b79k",
        help="pretrained tag to look for in the local open_clip / Hugging Face caches",
    )
    add_model_arguments(parser)
    add_sampler_arguments(parser)
    add_output_arguments(parser, None)


def _summary(script) -> str:
    lines = [f"{script.source}: {len(script.pages)} page(s), {sum(len(p.panels) for p in script.pages)} panel(s)"]
    for number, page in enumerate(script.pages, 1):
        lines.append(
            f"  page {number}: layout {page.layout.describe()}, {len(page.panels)} panel(s)"
            + (f", title {page.title!r}" if page.title else "")
        )
        for q, panel in enumerate(page.panels, 1):
            adapters = ", ".join(str(spec) for spec in script.adapters_for(panel))
            lines.append(
                f"    {number}.{q}: {script.prompt_for(panel)!r}" + (f" [adapters: {adapters}]" if adapters else "")
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    script = load_script(resolve_script(args.script))
    if args.check:
        print(_summary(script))
    else:
        draw_comic(args, script)
    return 0


def draw_comic(args: argparse.Namespace, script):
    """The script's pages, generating only the panels not already written with the same parameters."""
    if not 32 <= args.panel_size <= 2048:
        raise CommandError(f"--panel-size must be between 32 and 2048, got {args.panel_size}")
    if args.candidates < 1:
        raise CommandError(f"--candidates must be at least 1, got {args.candidates}")
    formats, _ = parse_formats(args.format), check_dpi(args.dpi)  # checked before any sampling
    regenerate = dict(parse_panel_ref(text) for text in args.regenerate)
    reranker = None
    if args.candidates > 1:
        reranker = ClipReranker(args.clip_model, args.clip_weights, args.clip_pretrained, resolve_device(args.device))
    pipeline = build_pipeline(args)
    out = Path(args.out) if args.out else Path("comics") / Path(script.source).stem
    result = make_comic(
        script,
        pipeline,
        out,
        batch_size=args.batch_size,
        style=PageStyle(panel_px=args.panel_size),
        regenerate=regenerate,
        overwrite=args.overwrite,
        candidates=args.candidates,
        reranker=reranker,
        progress=not args.quiet,
        report=print,
    )
    for warning in result.warnings:
        print(f"warning: {warning}")
    for path in export_comic(out, formats, args.dpi, PageStyle.gutter):
        print(f"exported {path}")
    print(
        f"done: {len(result.generated)} panel(s) generated, {len(result.skipped)} reused; "
        f"pages: {', '.join(str(p) for p in result.pages)}"
    )
    return result
