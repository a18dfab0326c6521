"""Images per second of our `laion` download path vs img2dataset, on the same local image server.

    python bench/download_vs_img2dataset.py [--images 2000] [--processes 2] [--threads 16] [--repeat 2]

A server process on 127.0.0.1 serves N distinct JPEGs (same sizes for both tools). Both tools
read the same parquet (URL, TEXT), write WebDataset shards of 500 samples, center-crop to
--size px JPEG (quality 95), with the same process and thread counts, timeout and no retries.
img2dataset runs from its own virtualenv (it pins old webdataset/opencv), created here on first
use with pip (--venv, default /tmp/img2dataset-venv); it is never installed into the project's.

Scenarios: "clean" (every URL a good image) and "faulty" (5% 404, 5% corrupt bytes, 2% HTML
error pages served with 200, 1% hung connections) -- the second shows robustness and what hung
hosts cost. Wall time includes start-up and writing. Run on an idle machine for stable numbers.
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- the image server (own process)


def make_jpegs(n: int, width: int, height: int) -> list[bytes]:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def fault_of(i: int) -> str | None:
    if i % 20 == 0:
        return "404"
    if i % 20 == 1:
        return "corrupt"
    if i % 50 == 2:
        return "html"
    if i % 100 == 3:
        return "hang"
    return None


def serve(port_out, n: int, width: int, height: int) -> None:
    images = make_jpegs(n, width, height)
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            parts = self.path.strip("/").split("/")  # /<scenario>/<i>.jpg
            try:
                scenario, index = parts[0], int(parts[1].split(".")[0])
            except (IndexError, ValueError):
                return self._send(404, b"no", "text/plain")
            fault = fault_of(index) if scenario == "faulty" else None
            body = images[index % len(images)]
            if fault == "404":
                return self._send(404, b"<html>not found</html>", "text/html")
            if fault == "corrupt":
                return self._send(200, body[:20] + bytes(len(body) - 20), "image/jpeg")
            if fault == "html":
                return self._send(200, b"<!DOCTYPE html><html><body>Error</body></html>", "text/html")
            if fault == "hang":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.flush()
                stop.wait(60)
                return
            self._send(200, body, "image/jpeg")

        def _send(self, status, body, ctype):
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

        def handle_error(self, request, client_address):
            pass

    httpd = Server(("127.0.0.1", 0), Handler)
    port_out.put(httpd.server_address[1])
    httpd.serve_forever()


# ---------------------------------------------------------------- the two tools


def ensure_img2dataset(venv: str) -> str:
    exe = os.path.join(venv, "bin", "img2dataset")
    if not os.path.exists(exe):
        print(f"creating {venv} with img2dataset (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "img2dataset"], check=True)
    return exe


def run_ours(parquet, out, args) -> float:
    cmd = [
        sys.executable,
        "-m",
        "data_pipeline",
        "laion",
        parquet,
        "--out",
        out,
        "--sizes",
        str(args.size),
        "--resize-mode",
        "center_crop",
        "--quality",
        "95",
        "--processes",
        str(args.processes),
        "--threads",
        str(args.threads),
        "--shard-size",
        "500",
        "--timeout",
        str(args.timeout),
        "--retries",
        "0",
        "--allow-network",
        "127.0.0.0/8",
        "--no-progress",
    ]
    return _timed(cmd, cwd=REPO)


def run_img2dataset(exe, parquet, out, args) -> float:
    cmd = [
        exe,
        "--url_list",
        parquet,
        "--input_format",
        "parquet",
        "--url_col",
        "URL",
        "--caption_col",
        "TEXT",
        "--output_format",
        "webdataset",
        "--output_folder",
        out,
        "--image_size",
        str(args.size),
        "--resize_mode",
        "center_crop",
        "--encode_quality",
        "95",
        "--processes_count",
        str(args.processes),
        "--thread_count",
        str(args.threads),
        "--number_sample_per_shard",
        "500",
        "--timeout",
        str(args.timeout),
        "--retries",
        "0",
        "--extract_exif",
        "False",
        "--compute_hash",
        "None",
        "--enable_wandb",
        "False",
    ]
    return _timed(cmd, cwd=tempfile.gettempdir())


def _timed(cmd, cwd) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def count_samples(out: str) -> int:
    n = 0
    for path in glob.glob(os.path.join(out, "**", "*.tar"), recursive=True):
        with tarfile.open(path) as tar:
            n += sum(1 for m in tar if m.name.endswith(".jpg"))
    return n


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--source-size", default="320x240", help="WxH of the served JPEGs (default: 320x240)")
    ap.add_argument("--size", type=int, default=64, help="output size (default: 64)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--timeout", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2, help="runs per tool and scenario, alternating (median)")
    ap.add_argument("--scenarios", default="clean,faulty")
    ap.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "img2dataset-venv"))
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "download-bench"))
    ap.add_argument("--skip-img2dataset", action="store_true")
    args = ap.parse_args()
    width, height = (int(v) for v in args.source_size.split("x"))

    exe = None if args.skip_img2dataset else ensure_img2dataset(args.venv)
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    server = ctx.Process(target=serve, args=(port_q, args.images, width, height), daemon=True)
    server.start()
    port = port_q.get(timeout=120)
    os.makedirs(args.work, exist_ok=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    print(
        f"{args.images} images {args.source_size} -> {args.size}px, {args.processes} processes x {args.threads} "
        f"threads, timeout {args.timeout}s; {os.cpu_count()} cores shared with the server process"
        + (" and other jobs" if os.getloadavg()[0] > 1 else "")
    )
    results = {}
    try:
        for scenario in args.scenarios.split(","):
            parquet = os.path.join(args.work, f"{scenario}.parquet")
            pq.write_table(
                pa.table(
                    {
                        "URL": [f"http://127.0.0.1:{port}/{scenario}/{i}.jpg" for i in range(args.images)],
                        "TEXT": [f"picture number {i}" for i in range(args.images)],
                    }
                ),
                parquet,
            )
            expected = sum(1 for i in range(args.images) if scenario == "clean" or fault_of(i) is None)
            tools = [("ours", lambda out, parquet=parquet: run_ours(parquet, out, args))]
            if exe:
                tools.append(("img2dataset", lambda out, parquet=parquet: run_img2dataset(exe, parquet, out, args)))
            for rep in range(args.repeat):
                for name, run in tools if rep % 2 == 0 else tools[::-1]:
                    out = os.path.join(args.work, f"{scenario}-{name}")
                    shutil.rmtree(out, ignore_errors=True)
                    seconds = run(out)
                    got = count_samples(out)
                    results.setdefault((scenario, name), []).append((seconds, got))
                    print(
                        f"  {scenario:7s} {name:12s} run {rep + 1}: {seconds:6.1f}s  {got}/{expected} images  "
                        f"{got / seconds:7.1f} img/s",
                        flush=True,
                    )
    finally:
        server.terminate()
    print("\nmedian images/s (successful images / wall time):")
    summary = {}
    for (scenario, name), runs in sorted(results.items()):
        rate = statistics.median(got / s for s, got in runs)
        summary[f"{scenario}/{name}"] = {
            "images_per_s": round(rate, 1),
            "samples": runs[-1][1],
            "seconds": [round(s, 2) for s, _ in runs],
        }
        print(f"  {scenario:7s} {name:12s} {rate:7.1f} img/s  ({runs[-1][1]} images)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
