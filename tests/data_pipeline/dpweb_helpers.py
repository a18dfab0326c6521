"""Test helper for the web sources: a scriptable HTTP server on 127.0.0.1.

Image bytes come from the `image_bytes` fixture of tests/data_pipeline/conftest.py.

Used by test_download*.py, test_laion*.py, test_wikipedia*.py and test_distributed*.py.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

LOOPBACK = ("127.0.0.0/8",)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # before the status line
    hang: bool = False  # send headers, then never finish the body
    drip: float = 0.0  # seconds between single body bytes
    declared_length: int | None = None  # Content-Length to announce (truncation tests)
    no_length: bool = False  # no Content-Length: the body ends when the connection closes


class LocalWebServer:
    """Serves registered paths; a path may have a list of replies used in turn (last one repeats)."""

    def __init__(self):
        self.routes: dict[str, list[Reply]] = {}
        self.handlers: dict[str, object] = {}  # path -> fn(query: dict) -> Reply
        self.hits: Counter = Counter()
        self.active: Counter = Counter()  # per path: requests being answered now
        self.max_active: Counter = Counter()  # per path: most answered at once
        self.user_agents: list[str] = []
        self.request_times: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                base = self.path.partition("?")[0]
                with server._lock:
                    server.active[base] += 1
                    server.max_active[base] = max(server.max_active[base], server.active[base])
                try:
                    self._answer()
                finally:
                    with server._lock:
                        server.active[base] -= 1

            def _answer(self):
                path = self.path
                base, _, query = path.partition("?")
                with server._lock:
                    server.hits[path] += 1
                    server.user_agents.append(self.headers.get("User-Agent", ""))
                    server.request_times.setdefault(path, []).append(time.monotonic())
                    replies = server.routes.get(path) or server.routes.get(base)
                    handler = server.handlers.get(base)
                    if handler is not None:
                        reply = None
                    elif replies is None:
                        reply = Reply(404, b"<html><body>Not Found</body></html>", {"Content-Type": "text/html"})
                    else:
                        reply = replies[min(server.hits[path] - 1, len(replies) - 1)]
                if handler is not None:
                    reply = handler({k: v[-1] for k, v in parse_qs(query).items()})
                if reply.delay:
                    server._stop.wait(reply.delay)
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        for item in value if isinstance(value, list) else [value]:
                            self.send_header(key, item)
                    length = reply.declared_length if reply.declared_length is not None else len(reply.body)
                    if reply.no_length:
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    else:
                        self.send_header("Content-Length", str(length))
                    self.end_headers()
                    if reply.hang:
                        self.wfile.flush()
                        server._stop.wait(60)
                        return
                    if reply.drip:
                        for i in range(len(reply.body)):
                            if server._stop.is_set():
                                return
                            self.wfile.write(reply.body[i : i + 1])
                            self.wfile.flush()
                            time.sleep(reply.drip)
                    else:
                        self.wfile.write(reply.body)
                    if reply.declared_length is not None and reply.declared_length != len(reply.body):
                        self.close_connection = True
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # clients that hang up early are part of the tests

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, path: str, *replies: Reply) -> str:
        self.routes[path] = list(replies)
        return self.url(path)

    def add_handler(self, path: str, handler) -> str:
        self.handlers[path] = handler
        return self.url(path)

    def add_image(self, path: str, data: bytes, content_type: str = "image/jpeg", **headers) -> str:
        return self.add(path, Reply(200, data, {"Content-Type": content_type, **headers}))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
