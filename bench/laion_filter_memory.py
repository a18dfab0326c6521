"""Peak memory and speed of `laion` filtering on a generated LAION-2B-like parquet (2M rows by default).

    python bench/laion_filter_memory.py [--rows 2000000] [--row-group 1000000] [--work /tmp/laion-mem]

Each measurement runs in a fresh process and reports its peak resident memory (VmHWM):
- imports only (the floor every run pays),
- our streamed filter (keywords + similarity + punsafe + URL and caption dedupe) writing the kept rows,
- for contrast, loading the same file whole with pandas.read_parquet.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from data_pipeline.fsutil import atomic_write

WORDS = (
    "a photo of the painting beach boat sunset city street dog cat house mountain river portrait "
    "vintage poster stock image blue red green old new small large view art drawing"
).split()


def generate(path: str, rows: int, row_group: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    schema = pa.schema(
        [
            ("URL", pa.string()),
            ("TEXT", pa.string()),
            ("WIDTH", pa.float64()),
            ("HEIGHT", pa.float64()),
            ("similarity", pa.float64()),
            ("punsafe", pa.float32()),
            ("pwatermark", pa.float32()),
            ("AESTHETIC_SCORE", pa.float32()),
        ]
    )

    def write(tmp: str) -> None:
        with pq.ParquetWriter(tmp, schema, compression="snappy") as writer:
            for start in range(0, rows, row_group):
                n = min(row_group, rows - start)
                ids = rng.integers(0, rows, size=n)  # ~37% repeated URLs, as in scraped data
                text = [" ".join(words[rng.integers(0, len(words), size=rng.integers(3, 12))]) for _ in range(n)]
                table = pa.table(
                    {
                        "URL": [f"https://images.example.com/{i % 997}/{i:09d}/photo.jpg" for i in ids],
                        "TEXT": text,
                        "WIDTH": rng.integers(64, 2048, size=n).astype(float),
                        "HEIGHT": rng.integers(64, 2048, size=n).astype(float),
                        "similarity": rng.uniform(0.2, 0.45, size=n),
                        "punsafe": rng.beta(0.5, 8, size=n).astype("float32"),
                        "pwatermark": rng.beta(0.8, 4, size=n).astype("float32"),
                        "AESTHETIC_SCORE": rng.normal(5, 1, size=n).astype("float32"),
                    },
                    schema=schema,
                )
                writer.write_table(table, row_group_size=n)

    atomic_write(path, write)


CHILD = r"""
import json, sys, time
mode, path, out = sys.argv[1:4]
import pyarrow, pandas, numpy
import data_pipeline.sources.laion as laion
from data_pipeline.sources.laion_filters import FilterSettings
started = time.time()
result = {}
if mode == "filter":
    settings = FilterSettings(keywords=("painting", "beach", "boat"), min_similarity=0.3, max_punsafe=0.5,
                              dedupe_urls=True, dedupe_captions=True)
    report = laion.filter_to_parquet([path], out, settings, shard_size=10000, progress=False)
    result = {"rows_read": report.rows_read, "rows_kept": report.rows_kept, "rejected": report.rejected}
elif mode == "pandas":
    frame = pandas.read_parquet(path)
    result = {"rows": len(frame)}
result["seconds"] = time.time() - started
# VmHWM, not ru_maxrss: the latter survives exec and would include the parent's peak.
result["peak_mib"] = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps(result))
"""


def measure(mode: str, path: str, out: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, path, out], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--rows",
        default="500000,2000000",
        help="comma-separated file sizes to measure; a flat peak shows memory does not grow with rows",
    )
    ap.add_argument("--row-group", type=int, default=1_000_000, help="rows per row group of the generated files")
    ap.add_argument("--work", default="/tmp/laion-filter-memory")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    print(f"{os.cpu_count()} cores, shared with other jobs: times are indicative, memory is not affected")
    for rows in (int(r) for r in args.rows.split(",")):
        path = os.path.join(args.work, f"laion-{rows}-rg{args.row_group}.parquet")
        if not os.path.exists(path):
            t = time.time()
            generate(path, rows, args.row_group)
            print(f"generated {path} in {time.time() - t:.0f}s")
        kept = os.path.join(args.work, "kept.parquet")
        floor = measure("imports", path, kept)
        ours = measure("filter", path, kept)
        whole = measure("pandas", path, kept)
        print(f"\n{rows:,} rows, row groups of {min(rows, args.row_group):,}, {os.path.getsize(path) / 2**20:.0f} MiB")
        print(f"  imports only:          peak {floor['peak_mib']:5.0f} MiB")
        print(
            f"  laion streamed filter: peak {ours['peak_mib']:5.0f} MiB "
            f"({ours['peak_mib'] - floor['peak_mib']:.0f} MiB "
            f"above imports), {ours['seconds']:.1f}s = {ours['rows_read'] / ours['seconds']:,.0f} rows/s, "
            f"kept {ours['rows_kept']:,}"
        )
        print(f"    rejected: {ours['rejected']}")
        print(
            f"  pandas.read_parquet:   peak {whole['peak_mib']:5.0f} MiB "
            f"(whole file in memory, {whole['seconds']:.1f}s)"
        )


if __name__ == "__main__":
    main()
