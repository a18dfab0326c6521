"""A local HTTP server standing in for OpenAI's release folder, with the faults a download can meet."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Faults:
    status: dict[str, int] = field(default_factory=dict)  # file -> HTTP status to answer
    cut_after: dict[str, int] = field(default_factory=dict)  # file -> bytes sent before the connection drops (once)
    body: dict[str, bytes] = field(default_factory=dict)  # file -> body served instead of the real file
    ignore_range: bool = False  # answer 200 with the whole file whatever Range says
    delay_per_chunk_s: float = 0.0  # slow server (chunks of 64 KiB)
    gate: threading.Event | None = None  # when set: the body stops half-way until the event is set


@dataclass
class Request:
    path: str
    range: str | None


class ReleaseServer:
    """Serves the files of `root` at http://127.0.0.1:PORT/dec-2021/ and records every request."""

    def __init__(self, root: Path):
        self.root = root
        self.faults = Faults()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server._serve(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/dec-2021/"

    def gets(self, name: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/" + name)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        name = handler.path.rsplit("/", 1)[-1]
        with self._lock:
            self.requests.append(Request(handler.path, handler.headers.get("Range")))
        faults = self.faults
        if name in faults.status:
            handler.send_error(faults.status[name])
            return
        data = faults.body.get(name)
        if data is None:
            path = self.root / name
            if not handler.path.startswith("/dec-2021/") or not path.is_file():
                handler.send_error(404)
                return
            data = path.read_bytes()
        start = 0
        found = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range") or "")
        if found and not faults.ignore_range:
            start = int(found.group(1))
            if start >= len(data):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(data)}")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            handler.send_response(200)
        handler.send_header("Content-Length", str(len(data) - start))
        handler.send_header("Accept-Ranges", "bytes")
        handler.end_headers()
        body = data[start:]
        cut = faults.cut_after.pop(name, None)
        if cut is not None:
            body = body[:cut]
        try:
            for i in range(0, len(body), 1 << 16):
                if faults.gate is not None and i >= len(body) // 2:
                    faults.gate.wait(timeout=120)
                handler.wfile.write(body[i : i + (1 << 16)])
                handler.wfile.flush()
                if faults.delay_per_chunk_s:
                    time.sleep(faults.delay_per_chunk_s)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if cut is not None:
            handler.close_connection = True
