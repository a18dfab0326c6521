"""A `kill -9` of `python -m data_pipeline laion` takes its download workers with it."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
from dpweb_helpers import LocalWebServer, Reply

LOCAL = ["--allow-network", "127.0.0.0/8", "--no-progress", "--retries", "0", "--timeout", "10"]


def children_of(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is `pid`, from /proc."""
    found = set()
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.split("/")[2]))
    return found


def is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killed_laion_run_leaves_no_worker_behind(tmp_path, image_bytes):
    with LocalWebServer() as server:
        urls = [
            server.add(
                f"/slow/{i}.jpg",
                Reply(200, image_bytes("jpg", 40, 36, seed=i), {"Content-Type": "image/jpeg"}, delay=1.0),
            )
            for i in range(40)
        ]
        pq.write_table(pa.table({"URL": urls, "TEXT": [f"picture {i}" for i in range(40)]}), tmp_path / "m.parquet")
        out = tmp_path / "out"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "data_pipeline",
                "laion",
                str(tmp_path / "m.parquet"),
                "--out",
                str(out),
                "--shard-size",
                "2",
                "--processes",
                "2",
                "--threads",
                "1",
                *LOCAL,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        workers: set[int] = set()
        try:
            give_up = time.time() + 60
            while len(workers) < 2 or sum(server.active.values()) < 2:  # both workers are mid-download
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.time() < give_up, "the workers never started downloading"
                workers = children_of(proc.pid)
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            killed_at = time.time()
            while any(is_running(pid) for pid in workers) and time.time() < killed_at + 5:
                time.sleep(0.05)
            survivors = [pid for pid in workers if is_running(pid)]
            assert not survivors, f"workers {survivors} outlived their parent"
            shards = glob.glob(str(out / "64" / "*_stats.json"))
            time.sleep(1.5)  # a surviving worker would finish its 2-image shard by now
            assert glob.glob(str(out / "64" / "*_stats.json")) == shards
        finally:
            for pid in workers:  # leave no stray process behind when the test fails
                if is_running(pid):
                    os.kill(pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# The parent starts a worker with the parent-death signal switched off, so only the portable watchdog can end it,
# writes the worker's pid to the file named by its argument and kills itself.
WATCHDOG_ONLY = """
import os, signal, sys, time
from data_pipeline import workers
workers._arm_parent_death_signal = lambda: None

def work():
    pass

if __name__ == "__main__":
    pool = workers.process_pool(1)
    pool.submit(work).result()
    with open(sys.argv[1], "w") as fh:
        fh.write(str(next(iter(pool._processes))))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_watchdog_alone_ends_an_orphaned_worker(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(WATCHDOG_ONLY)
    pid_file = tmp_path / "worker.pid"
    # no pipes: an orphaned worker holding them open would keep run() waiting
    proc = subprocess.run(
        [sys.executable, str(script), str(pid_file)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL
    worker = int(pid_file.read_text())
    try:
        give_up = time.time() + 5
        while is_running(worker) and time.time() < give_up:
            time.sleep(0.05)
        assert not is_running(worker), "the watchdog did not end the orphaned worker"
    finally:
        if is_running(worker):
            os.kill(worker, signal.SIGKILL)
