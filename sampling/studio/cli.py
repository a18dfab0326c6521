"""``python -m sampling studio``: serve the web studio (127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .access import (
    AUTH_ENV,
    MAX_UPLOAD_BYTES,
    load_credentials,
    password_checker,
    private_paths,
    require_credentials,
    served_paths,
)

if TYPE_CHECKING:
    from .service import Studio

DEFAULT_WORKDIR = Path("studio")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="folder for the catalogue (SQLite + images), outputs and fine-tune runs (default: ./studio)",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="folder of model folders / pipeline folders offered besides the bundled model "
        "(the only models users can pick)",
    )
    parser.add_argument(
        "--datasets-dir",
        type=Path,
        default=None,
        help="folder whose subfolders (shards or imagefolders) are the datasets the Train tab offers "
        "(the only data a fine-tune can read; default: WORKDIR/datasets)",
    )
    parser.add_argument(
        "--adapters-dir",
        type=Path,
        default=None,
        help="folder whose subfolders are the LoRA adapters users can pick in the Generate tab (the only "
        "adapters offered), and where the Train tab writes the adapters it trains (default: WORKDIR/adapters)",
    )
    parser.add_argument(
        "--database",
        default=os.environ.get("AUTOCOMICS_STUDIO_DSN"),
        help="PostgreSQL DSN (postgresql://user@host/db) for the catalogue; default: SQLite in the "
        "workdir (env AUTOCOMICS_STUDIO_DSN)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; any other address needs "
        "a login: --auth-file or env " + AUTH_ENV + ")",
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument(
        "--auth-file",
        type=Path,
        default=None,
        help=f"file of user:password lines allowed to log in (default: env {AUTH_ENV}=user:password; "
        "required unless --host is a loopback address)",
    )
    parser.add_argument("--device", default="auto", help="sampling device: auto, cpu, cuda, cuda:N (default: auto)")
    parser.add_argument(
        "--no-semantic-search",
        action="store_true",
        help="do not load the sentence-embedding model; search captions by substring",
    )


def build(args: argparse.Namespace):
    """The studio service and its Gradio app for parsed arguments."""
    # lazy: the service loads torch and the app Gradio, seconds each; `--help` and a refused start pay for neither
    from .app import build_app
    from .service import Studio, StudioConfig

    studio = Studio(
        StudioConfig(
            workdir=args.workdir.expanduser().resolve(),
            models_dir=args.models_dir.expanduser().resolve() if args.models_dir else None,
            datasets_dir=args.datasets_dir.expanduser().resolve() if args.datasets_dir else None,
            adapters_dir=args.adapters_dir.expanduser().resolve() if args.adapters_dir else None,
            database=args.database,
            device=args.device,
            semantic_search=not args.no_semantic_search,
        )
    )
    return studio, build_app(studio)


def serve(args: argparse.Namespace, block: bool = True) -> tuple["Studio", object]:
    """Start the studio; with `block`, serve until interrupted, else return the running studio and app."""
    credentials = load_credentials(args.auth_file)
    require_credentials(args.host, credentials)  # before anything loads: a refused start costs nothing
    studio, demo = build(args)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        auth=password_checker(credentials) if credentials else None,
        auth_message="autocomics studio: log in with the user and password you were given",
        allowed_paths=served_paths(studio.config),
        blocked_paths=private_paths(studio.config),
        max_file_size=MAX_UPLOAD_BYTES,
        show_error=False,  # unexpected errors may name server paths
        run_history=False,
        ssr_mode=False,
        enable_monitoring=False,
        mcp_server=False,  # nothing extra served
        prevent_thread_lock=not block,
        quiet=not block,
    )
    return studio, demo


def run(args: argparse.Namespace) -> int:
    serve(args)
    return 0
