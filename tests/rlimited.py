"""Run `python -m MODULE ...` under a resource limit (a small RLIMIT_FSIZE for a full disk, RLIMIT_AS for memory).

The limit is set by the child itself before it runs the module, not by a preexec_fn: forking a test process that
has torch's threads running and calling Python code before exec can deadlock.
"""

from __future__ import annotations

import os
import subprocess
import sys

_SET_LIMIT_AND_RUN = (
    "import resource, runpy, sys\n"
    "if sys.argv[1] == 'RLIMIT_FSIZE':  # some torch releases (2.9) write generated code on import: not the command's\n"
    "    import torch, torch.distributed.nn\n"
    "kind, value, module = getattr(resource, sys.argv[1]), int(sys.argv[2]), sys.argv[3]\n"
    "resource.setrlimit(kind, (value, value))\n"
    "sys.argv = [module, *sys.argv[4:]]\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)


def run_limited(limit: str, value: int, module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m module *args` with resource `limit` (e.g. "RLIMIT_FSIZE") at `value`; output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", _SET_LIMIT_AND_RUN, limit, str(value), module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
