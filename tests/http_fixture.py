"""A real HTTP server on 127.0.0.1 serving files, with Range support and injected failures.

Tests set ``server.faults[path]`` to a list of what the next requests of that path get:
``500``/``404``/``503`` (that status), ``"drop:N"`` (send N bytes of the body, then cut the
connection), ``"slow:S"`` (wait S seconds before answering), ``"norange"`` (answer 200 with the
whole file even to a Range request). Every request is logged in ``server.requests``.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FileServer:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.faults: dict[str, list] = {}
        self.requests: list[tuple[str, str | None]] = []
        handler = self._make_handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _make_handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                server.requests.append((path, self.headers.get("Range")))
                queue = server.faults.get(path) or []
                fault = queue.pop(0) if queue else None
                if isinstance(fault, int):
                    self.send_error(fault)
                    return
                if isinstance(fault, str) and fault.startswith("slow:"):
                    time.sleep(float(fault[5:]))
                file = server.root / path.lstrip("/")
                if not file.is_file():
                    self.send_error(404)
                    return
                data = file.read_bytes()
                start = 0
                header = self.headers.get("Range")
                if header and fault != "norange":
                    start = int(header.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if isinstance(fault, str) and fault.startswith("drop:"):
                    self.wfile.write(body[: int(fault[5:])])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        return Handler
