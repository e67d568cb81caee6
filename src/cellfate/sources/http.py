"""Resumable, checksummed, atomic downloads over HTTP(S) and ``file://``.

A download streams into ``<dest>.part``. If that file exists from an interrupted attempt, the
transfer resumes with an HTTP ``Range`` request (a server that answers 200 instead of 206 is
read again from the start). The finished file is checked against its expected size and against
the manifest's sha256 (recorded on the first download, verified ever after), and only then
renamed onto ``dest``: a destination that exists is always complete and verified.

Transient failures (timeouts, dropped connections, HTTP 429 and 5xx) are retried with
exponential backoff, keeping the partial file so each retry resumes; a 4xx answer is final.
"""

from __future__ import annotations

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
from cellfate.sources.manifest import ManifestEntry, read_entry, sha256_of, write_entry

log = logging.getLogger(__name__)

CHUNK = 1 << 16  # what a dropped connection can cost us to re-fetch
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class TransientError(Exception):
    """A failure worth retrying: the next attempt may succeed."""


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
) -> Path:
    """Fetch ``url`` to ``dest``; ``label`` (e.g. the accession) names the download in errors.

    ``manifest`` is the JSON file of this download's :class:`ManifestEntry`; without it nothing
    is verified beyond the size the server announced.
    """
    dest = Path(dest)
    label = label or dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    expected = read_entry(manifest) if manifest else None
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            wait = backoff * 2 ** (attempt - 1)
            log.warning("%s: attempt %d of %d failed (%s); retrying in %.1f s", label, attempt, retries + 1, last, wait)
            time.sleep(wait)
        try:
            total = _fetch(url, part, label=label, timeout=timeout, progress=progress)
            break
        except TransientError as err:
            last = err
    else:
        raise CellfateError(f"download of {label} failed after {retries + 1} attempts: {last} ({url})")

    size = part.stat().st_size
    if total is not None and size != total:
        raise CellfateError(f"download of {label} is {size} bytes but the server announced {total} ({url})")
    digest = sha256_of(part)
    if expected is not None:
        if (size, digest) != (expected.size, expected.sha256):
            part.unlink()
            raise CellfateError(
                f"checksum mismatch for {label}: got {size} bytes sha256 {digest[:16]}..., manifest {manifest} "
                f"records {expected.size} bytes sha256 {expected.sha256[:16]}...; the bad file was deleted "
                f"(if the source really changed, delete {manifest} to accept the new file)"
            )
    elif manifest:
        write_entry(manifest, ManifestEntry(url=url, size=size, sha256=digest))
    os.replace(part, dest)
    log.info("%s: %d bytes, sha256 %s", label, size, digest)
    return dest


def _fetch(url: str, part: Path, *, label: str, timeout: float, progress: bool) -> int | None:
    """Append the rest of ``url`` to ``part``; return the full size if the source announced it."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme == "file":
        return _fetch_file(url, part, label)
    if scheme not in ("http", "https"):
        raise CellfateError(f"{label}: unsupported URL scheme {scheme!r} in {url}")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = requests.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as err:
        raise TransientError(f"{type(err).__name__}") from err
    with response:
        if response.status_code == 416 and have:  # the part is already complete
            return _range_total(response.headers.get("Content-Range")) or have
        if response.status_code in RETRY_STATUS:
            raise TransientError(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise CellfateError(f"download of {label} failed: HTTP {response.status_code} {response.reason} ({url})")
        if have and response.status_code == 206:
            total = _range_total(response.headers.get("Content-Range"))
            mode = "ab"
        else:
            if have:
                log.info("%s: server ignored the Range request; starting over", label)
            have = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and "Content-Encoding" not in response.headers else None
            mode = "wb"
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
    """Copy a ``file://`` URL (used by the demo and tests) with the same resume semantics."""
    source = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if not source.is_file():
        raise CellfateError(f"download of {label} failed: {source} does not exist ({url})")
    have = part.stat().st_size if part.exists() else 0
    total = source.stat().st_size
    with open(source, "rb") as src, open(part, "ab" if have <= total else "wb") as dst:
        src.seek(have if have <= total else 0)
        shutil.copyfileobj(src, dst, CHUNK)
    return total


def _range_total(content_range: str | None) -> int | None:
    """The full size from ``Content-Range: bytes a-b/TOTAL``."""
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1]
    return int(total) if total.isdigit() else None
