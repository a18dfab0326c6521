"""Test helpers for the web sources: a scriptable HTTP server on 127.0.0.1 and image fixtures.

Used by test_download*.py, test_laion*.py, test_wikipedia*.py and test_distributed*.py.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

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


class LocalWebServer:
    """Serves registered paths; a path may have a list of replies used in turn (last one repeats)."""

    def __init__(self):
        self.routes: dict[str, list[Reply]] = {}
        self.hits: Counter = Counter()
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
                path = self.path
                with server._lock:
                    server.hits[path] += 1
                    server.user_agents.append(self.headers.get("User-Agent", ""))
                    server.request_times.setdefault(path, []).append(time.monotonic())
                    replies = server.routes.get(path) or server.routes.get(path.split("?", 1)[0])
                    if replies is None:
                        reply = Reply(404, b"<html><body>Not Found</body></html>", {"Content-Type": "text/html"})
                    else:
                        reply = replies[min(server.hits[path] - 1, len(replies) - 1)]
                if reply.delay:
                    server._stop.wait(reply.delay)
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        for item in value if isinstance(value, list) else [value]:
                            self.send_header(key, item)
                    length = reply.declared_length if reply.declared_length is not None else len(reply.body)
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

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, path: str, *replies: Reply) -> str:
        self.routes[path] = list(replies)
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


# ---- image bytes -------------------------------------------------------------------------

def gradient_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 255, size=3)
    img = np.stack([(x * 255 // max(1, width - 1) + base[0]) % 256,
                    (y * 255 // max(1, height - 1) + base[1]) % 256,
                    ((x + y) * 3 + base[2]) % 256], axis=-1)
    return img.astype(np.uint8)


def image_bytes(fmt: str, width: int = 96, height: int = 64, seed: int = 0, mode: str = "RGB") -> bytes:
    """Real encoded image bytes. fmt: JPEG, PNG, WEBP, GIF; mode: RGB, RGBA, L, CMYK, P."""
    img = Image.fromarray(gradient_rgb(width, height, seed))
    if mode == "RGBA":
        img = img.convert("RGBA")
        alpha = Image.linear_gradient("L").resize((width, height))
        img.putalpha(alpha)
    elif mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def animated_gif(width: int = 48, height: int = 48) -> bytes:
    frames = [Image.fromarray(gradient_rgb(width, height, seed)).convert("P") for seed in (1, 2, 3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def decompression_bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares a gigantic size."""
    real = image_bytes("PNG", 8, 8)
    ihdr_start = 8 + 8  # signature, then length+type of the IHDR chunk
    ihdr = bytearray(real[ihdr_start : ihdr_start + 13])
    ihdr[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return real[:ihdr_start] + bytes(ihdr) + crc + real[ihdr_start + 17 :]
