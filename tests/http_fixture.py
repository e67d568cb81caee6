"""A real HTTP server on 127.0.0.1 serving files, with Range/If-Range support and injected faults.

Every file is served with a strong ``ETag`` (its sha1) and ``Last-Modified`` (its mtime), and a
``Range`` request honours ``If-Range`` as RFC 9110 says: a validator that no longer matches gets
the whole current file with 200. Tests set ``server.faults[path]`` to a list of what the next
requests of that path get:

- ``500``/``404``/``503`` (that status);
- ``"drop:N"``: send N bytes of the body, then cut the connection;
- ``"slow:S"``: wait S seconds before answering;
- ``"norange"``: answer 200 with the whole file even to a Range request;
- ``"short:N"``: serve only the first N bytes and announce N as the length (a truncating server);
- ``"html"``: answer 200 with an HTML error page;
- ``"429:S"``: answer 429 with ``Retry-After: S``;
- ``"noetag"``: send neither ETag nor Last-Modified.

Every request is logged in ``server.requests`` as (path, Range header) and the time it came in
``server.times``; ``server.if_range`` keeps each request's If-Range header.
"""

from __future__ import annotations

import email.utils
import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>Service unavailable</title></head><body>Try later</body></html>\n"


class FileServer:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.faults: dict[str, list] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.times: list[float] = []
        self.if_range: list[str | None] = []
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

            def _plain(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                server.requests.append((path, self.headers.get("Range")))
                server.times.append(time.monotonic())
                server.if_range.append(self.headers.get("If-Range"))
                queue = server.faults.get(path) or []
                fault = queue.pop(0) if queue else None
                if isinstance(fault, int):
                    self.send_error(fault)
                    return
                if isinstance(fault, str) and fault.startswith("429:"):
                    self._plain(429, b"slow down\n", {"Retry-After": fault[4:]})
                    return
                if fault == "html":
                    self._plain(200, HTML_PAGE)
                    return
                if isinstance(fault, str) and fault.startswith("slow:"):
                    time.sleep(float(fault[5:]))
                file = server.root / path.lstrip("/")
                if not file.is_file():
                    self.send_error(404)
                    return
                data = file.read_bytes()
                etag = '"' + hashlib.sha1(data).hexdigest() + '"'
                modified = email.utils.formatdate(file.stat().st_mtime, usegmt=True)
                if isinstance(fault, str) and fault.startswith("short:"):
                    data = data[: int(fault[6:])]
                start = 0
                header = self.headers.get("Range")
                validator = self.headers.get("If-Range")
                fresh = validator is None or validator in (etag, modified)
                if header and fault != "norange" and fresh:
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
                if fault != "noetag":
                    self.send_header("ETag", etag)
                    self.send_header("Last-Modified", modified)
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
