"""Resumable, validated, checksummed, atomic downloads over HTTP(S) and ``file://``.

A download streams into ``<dest>.part``; beside it ``<dest>.part.json`` records which version
of the source the bytes came from (the URL, the server's strong ``ETag`` or ``Last-Modified``;
for ``file://`` the source's size and mtime). An interrupted transfer resumes with ``Range`` and
``If-Range: <validator>``, so a server whose file changed answers 200 with the whole new file
instead of the rest of the new one glued onto the start of the old; a part with no record, or
with no validator to send, is started over rather than trusted.

The finished file is checked against the size the server announced, then by content
(:func:`cellfate.readers.check_content`: format magic bytes and the format's end markers, which
catch an HTML error page served with status 200 and a file cut short by a server that announced
the short size), and against the manifest's sha256 (recorded on the first good download,
verified ever after); only then is it renamed onto ``dest``.

Transient failures (timeouts, dropped connections, HTTP 408/425/429/5xx) are retried with
exponential backoff, or after the server's ``Retry-After`` when it sends one (capped at
:data:`MAX_RETRY_AFTER`); a 4xx answer is final.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

import requests
from tqdm import tqdm

from cellfate.errors import CellfateError
from cellfate.io import write_text
from cellfate.readers import check_content, kind_of
from cellfate.sources.manifest import ManifestEntry, read_entry, sha256_of, write_entry

log = logging.getLogger(__name__)

CHUNK = 1 << 16  # what a dropped connection can cost us to re-fetch
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
#: The longest wait a server's Retry-After may ask of us (seconds); longer asks are cut to this.
MAX_RETRY_AFTER = 120.0


class TransientError(Exception):
    """A failure worth retrying: the next attempt may succeed (after ``wait`` s if the server said)."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    manifest: str | os.PathLike[str] | None = None,
    label: str | None = None,
    retries: int = 4,
    timeout: float = 60.0,
    backoff: float = 2.0,
    progress: bool = True,
    kind: str | None = None,
) -> Path:
    """Fetch ``url`` to ``dest``; ``label`` (e.g. the accession) names the download in errors.

    ``manifest`` is the JSON file of this download's :class:`ManifestEntry`; without it the file
    is checked by size and content only. ``kind`` overrides the content kind implied by
    ``dest``'s suffix (see :data:`cellfate.readers.KIND_BY_SUFFIX`).
    """
    dest = Path(dest)
    label = label or dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    expected = read_entry(manifest) if manifest else None
    total = _fetch_with_retries(url, part, label=label, retries=retries, timeout=timeout, backoff=backoff,
                                progress=progress)
    try:
        size = part.stat().st_size
        if total is not None and size != total:
            raise CellfateError(f"download of {label} is {size} bytes but the server announced {total} ({url})")
        try:
            check_content(part, kind or kind_of(dest))
        except CellfateError as err:
            raise CellfateError(f"download of {label} from {url} is refused: {err}") from None
        digest = sha256_of(part)
        if expected is not None and (size, digest) != (expected.size, expected.sha256):
            raise CellfateError(
                f"checksum mismatch for {label}: got {size} bytes sha256 {digest[:16]}..., manifest {manifest} "
                f"records {expected.size} bytes sha256 {expected.sha256[:16]}...; the bad file was deleted "
                f"(if the source really changed, delete {manifest} to accept the new file)"
            )
    except CellfateError:
        _discard(part)
        raise
    if expected is None and manifest:
        write_entry(manifest, ManifestEntry(url=url, size=size, sha256=digest))
    os.replace(part, dest)
    _state_path(part).unlink(missing_ok=True)
    log.info("%s: %d bytes, sha256 %s", label, size, digest)
    return dest


def _fetch_with_retries(url: str, part: Path, *, label: str, retries: int, timeout: float, backoff: float,
                        progress: bool) -> int | None:
    last: TransientError | None = None
    for attempt in range(retries + 1):
        if attempt:
            wait = backoff * 2 ** (attempt - 1)
            if last is not None and last.wait is not None:
                wait = max(wait, min(last.wait, MAX_RETRY_AFTER))
            log.warning("%s: attempt %d of %d failed (%s); retrying in %.1f s", label, attempt, retries + 1, last, wait)
            time.sleep(wait)
        try:
            return _fetch(url, part, label=label, timeout=timeout, progress=progress)
        except TransientError as err:
            last = err
    raise CellfateError(f"download of {label} failed after {retries + 1} attempts: {last} ({url})")


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _state_path(part).unlink(missing_ok=True)


def _state_path(part: Path) -> Path:
    """Where the version of the source that ``part``'s bytes came from is recorded."""
    return part.with_name(part.name + ".json")


def _read_state(part: Path, url: str) -> dict:
    """The recorded version of ``part``'s source; empty (start over) if none or for another URL."""
    try:
        state = json.loads(_state_path(part).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) and state.get("url") == url else {}


def _write_state(part: Path, state: dict) -> None:
    write_text(_state_path(part), json.dumps(state) + "\n")


def _resumable_size(part: Path, state: dict, label: str) -> int:
    """Bytes of ``part`` worth resuming from; a part of unknown origin is deleted."""
    if not part.exists():
        return 0
    if not state:
        log.info("%s: %s has no record of the source version it came from; starting over", label, part.name)
        _discard(part)
        return 0
    return part.stat().st_size


def _validator(headers) -> dict:
    """The strong ETag and the Last-Modified date of a response, for If-Range."""
    etag = headers.get("ETag")
    return {"etag": etag if etag and not etag.startswith("W/") else None, "last_modified": headers.get("Last-Modified")}


def _retry_after(value: str | None) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _fetch(url: str, part: Path, *, label: str, timeout: float, progress: bool) -> int | None:
    """Append the rest of ``url`` to ``part``; return the full size if the source announced it."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme == "file":
        return _fetch_file(url, part, label)
    if scheme not in ("http", "https"):
        raise CellfateError(f"{label}: unsupported URL scheme {scheme!r} in {url}")
    state = _read_state(part, url)
    have = _resumable_size(part, state, label)
    if_range = state.get("etag") or state.get("last_modified")
    if have and not if_range:
        log.info("%s: the server gave no ETag or Last-Modified to check a resume against; starting over", label)
        have = 0
    headers = {"Range": f"bytes={have}-", "If-Range": if_range} if have else {}
    try:
        response = requests.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as err:
        raise TransientError(f"{type(err).__name__}") from err
    with response:
        return _receive(response, part, have, state, url=url, label=label, progress=progress)


def _receive(response: requests.Response, part: Path, have: int, state: dict, *, url: str, label: str,
             progress: bool) -> int | None:
    """Write one response's body to ``part`` (appending to a validated resume)."""
    status = response.status_code
    if status == 416 and have:  # the part is already complete
        return _range_total(response.headers.get("Content-Range")) or have
    if status in RETRY_STATUS:
        raise TransientError(f"HTTP {status}", _retry_after(response.headers.get("Retry-After")))
    if status >= 400:
        raise CellfateError(f"download of {label} failed: HTTP {status} {response.reason} ({url})")
    now = _validator(response.headers)
    same = have and status == 206 and _range_start(response.headers.get("Content-Range")) == have and all(
        now[k] == state.get(k) for k in ("etag", "last_modified") if now[k] and state.get(k))
    if same:
        total = _range_total(response.headers.get("Content-Range"))
        mode = "ab"
    else:
        if have:
            log.info("%s: the source changed or ignored the Range request (HTTP %d); starting over", label, status)
        have = 0
        length = response.headers.get("Content-Length")
        total = int(length) if length and "Content-Encoding" not in response.headers else None
        mode = "wb"
        _write_state(part, {"url": url, **now})
    bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=label, disable=not progress, mininterval=1.0)
    try:
        with open(part, mode) as handle:
            for block in response.iter_content(CHUNK):
                handle.write(block)
                bar.update(len(block))
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
        raise TransientError(f"connection lost after {part.stat().st_size} bytes") from err
    finally:
        bar.close()
    return total


def _fetch_file(url: str, part: Path, label: str) -> int:
    """Copy a ``file://`` URL (used by the demo and tests); resume only from the same source version."""
    source = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if not source.is_file():
        raise CellfateError(f"download of {label} failed: {source} does not exist ({url})")
    stat = source.stat()
    version = {"url": url, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    state = _read_state(part, url)
    have = _resumable_size(part, state, label)
    if have and (state != version or have > stat.st_size):
        log.info("%s: %s changed since the partial copy was made; starting over", label, source)
        have = 0
    if not have:
        _write_state(part, version)
    with open(source, "rb") as src, open(part, "ab" if have else "wb") as dst:
        src.seek(have)
        shutil.copyfileobj(src, dst, CHUNK)
    return stat.st_size


def _range_start(content_range: str | None) -> int | None:
    """The first byte from ``Content-Range: bytes a-b/TOTAL``."""
    if not content_range or not content_range.startswith("bytes ") or "-" not in content_range:
        return None
    start = content_range[6:].split("-", 1)[0]
    return int(start) if start.isdigit() else None


def _range_total(content_range: str | None) -> int | None:
    """The full size from ``Content-Range: bytes a-b/TOTAL``."""
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1]
    return int(total) if total.isdigit() else None
