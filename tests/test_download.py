"""The downloader against a real HTTP server on 127.0.0.1: resume, checksums, retries, errors."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from cellfate.errors import CellfateError
from cellfate.sources.http import download
from cellfate.sources.manifest import read_entry
from http_fixture import FileServer


@pytest.fixture()
def payload(tmp_path: Path) -> bytes:
    # an RData file as R writes it (gzip of 'RDX2' + body): the downloader checks the content
    data = gzip.compress(b"RDX2\n" + os.urandom(3_000_000), mtime=0)  # three 1 MiB chunks and a bit
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "sample.RData").write_bytes(data)
    return data


@pytest.fixture()
def server(tmp_path: Path, payload: bytes):
    with FileServer(tmp_path / "srv") as srv:
        yield srv


def _get(server: FileServer, tmp_path: Path, **kwargs) -> Path:
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("progress", False)
    return download(f"{server.url}/sample.RData", tmp_path / "out" / "sample.RData", label="SRA1_SRS1", **kwargs)


def test_download_writes_file_and_manifest(server, tmp_path, payload) -> None:
    manifest = tmp_path / "manifests" / "sample.json"
    out = _get(server, tmp_path, manifest=manifest)
    assert out.read_bytes() == payload
    entry = read_entry(manifest)
    assert entry.size == len(payload) and entry.sha256 == hashlib.sha256(payload).hexdigest()
    assert sorted(p.name for p in out.parent.iterdir()) == ["sample.RData"]  # no .part left


def test_interrupted_transfer_resumes_byte_exact_with_range(server, tmp_path, payload) -> None:
    server.faults["/sample.RData"] = ["drop:1500000", "drop:700000"]
    out = _get(server, tmp_path, manifest=tmp_path / "m.json")
    assert out.read_bytes() == payload
    starts = [int(r.split("=")[1].rstrip("-")) if r else 0 for _, r in server.requests]
    assert len(starts) == 3 and starts[0] == 0
    assert 1_400_000 < starts[1] <= 1_500_000  # kept what arrived (whole 64 KiB blocks)
    assert starts[1] + 600_000 < starts[2] <= starts[1] + 700_000


def test_partial_file_from_an_earlier_run_is_resumed_with_if_range(server, tmp_path, payload) -> None:
    server.faults["/sample.RData"] = ["drop:1234567"]
    with pytest.raises(CellfateError, match="failed after 1 attempts"):
        _get(server, tmp_path, retries=0)
    have = (tmp_path / "out" / "sample.RData.part").stat().st_size
    out = _get(server, tmp_path)
    assert out.read_bytes() == payload
    assert server.requests[1] == ("/sample.RData", f"bytes={have}-")
    assert server.if_range[1] == '"' + hashlib.sha1(payload).hexdigest() + '"'
    assert sorted(p.name for p in out.parent.iterdir()) == ["sample.RData"]  # no .part, no .part.json


def test_stale_part_of_another_version_is_not_glued_onto_the_new_file(server, tmp_path, payload) -> None:
    """A server whose file changed between two runs: If-Range gets the whole new file (byte-exact)."""
    server.faults["/sample.RData"] = ["drop:1234567"]
    with pytest.raises(CellfateError):
        _get(server, tmp_path, retries=0)
    new = gzip.compress(b"RDX2\n" + os.urandom(2_500_000), mtime=0)
    (tmp_path / "srv" / "sample.RData").write_bytes(new)
    manifest = tmp_path / "m.json"
    out = _get(server, tmp_path, manifest=manifest)
    assert out.read_bytes() == new
    assert read_entry(manifest).sha256 == hashlib.sha256(new).hexdigest()


def test_part_without_a_version_record_is_started_over(server, tmp_path, payload) -> None:
    part = tmp_path / "out" / "sample.RData.part"
    part.parent.mkdir()
    part.write_bytes(b"x" * 1000)  # from an older cellfate or another tool: its origin is unknown
    assert _get(server, tmp_path).read_bytes() == payload
    assert server.requests == [("/sample.RData", None)]


def test_server_without_validators_is_not_resumed(server, tmp_path, payload) -> None:
    server.faults["/sample.RData"] = ["drop:1000000"]
    with pytest.raises(CellfateError):
        _get(server, tmp_path, retries=0)
    state = tmp_path / "out" / "sample.RData.part.json"
    state.write_text(json.dumps({"url": f"{server.url}/sample.RData", "etag": None, "last_modified": None}))
    assert _get(server, tmp_path).read_bytes() == payload
    assert server.requests[-1] == ("/sample.RData", None)


def test_server_that_ignores_range_is_read_from_the_start(server, tmp_path, payload) -> None:
    part = tmp_path / "out" / "sample.RData.part"
    part.parent.mkdir()
    part.write_bytes(b"x" * 1000)  # stale bytes that must not survive
    server.faults["/sample.RData"] = ["norange"]
    assert _get(server, tmp_path).read_bytes() == payload


def test_transient_errors_are_retried(server, tmp_path, payload) -> None:
    server.faults["/sample.RData"] = [500, 503]
    assert _get(server, tmp_path, retries=3).read_bytes() == payload
    assert len(server.requests) == 3


def test_persistent_500_fails_naming_the_accession_and_leaves_no_file(server, tmp_path) -> None:
    server.faults["/sample.RData"] = [500] * 10
    with pytest.raises(CellfateError, match=r"SRA1_SRS1 failed after 3 attempts: HTTP 500"):
        _get(server, tmp_path, retries=2)
    assert not (tmp_path / "out" / "sample.RData").exists()


def test_404_is_final_and_names_the_accession(server, tmp_path) -> None:
    with pytest.raises(CellfateError, match=r"SRA1_SRS1 failed: HTTP 404"):
        download(f"{server.url}/missing.RData", tmp_path / "out" / "x.RData", label="SRA1_SRS1", backoff=0.01, progress=False)
    assert len(server.requests) == 1
    assert not (tmp_path / "out" / "x.RData").exists()


def test_timeout_is_retried_then_reported(server, tmp_path, payload) -> None:
    server.faults["/sample.RData"] = ["slow:1.0"]
    assert _get(server, tmp_path, timeout=0.3, retries=2).read_bytes() == payload
    server.faults["/sample.RData"] = ["slow:1.0"] * 3
    with pytest.raises(CellfateError, match="SRA1_SRS1 failed after 2 attempts: (ReadTimeout|ConnectTimeout|Timeout)"):
        download(f"{server.url}/sample.RData", tmp_path / "o2" / "s.RData", label="SRA1_SRS1", timeout=0.3, retries=1,
                 backoff=0.01, progress=False)


def test_checksum_mismatch_is_an_error_and_the_bad_file_is_deleted(server, tmp_path, payload) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"url": "x", "size": len(payload), "sha256": "0" * 64}))
    with pytest.raises(CellfateError, match=r"checksum mismatch for SRA1_SRS1.*the bad file was deleted"):
        _get(server, tmp_path, manifest=manifest)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_verified_manifest_accepts_the_same_file_again(server, tmp_path, payload) -> None:
    manifest = tmp_path / "m.json"
    _get(server, tmp_path, manifest=manifest)
    (tmp_path / "out" / "sample.RData").unlink()
    assert _get(server, tmp_path, manifest=manifest).read_bytes() == payload


def test_file_urls_are_copied_with_the_same_checks(tmp_path, payload) -> None:
    src = tmp_path / "srv" / "sample.RData"
    out = download(src.as_uri(), tmp_path / "copy.RData", manifest=tmp_path / "m.json", progress=False)
    assert out.read_bytes() == payload
    with pytest.raises(CellfateError, match="does not exist"):
        download((tmp_path / "nope").as_uri(), tmp_path / "x", progress=False)


def test_unsupported_scheme_is_refused(tmp_path) -> None:
    with pytest.raises(CellfateError, match="unsupported URL scheme 'ftp'"):
        download("ftp://example.org/x", tmp_path / "x", progress=False)


def test_stale_file_url_part_is_restarted_when_the_source_changed(tmp_path, payload) -> None:
    from cellfate.sources import http

    src = tmp_path / "srv" / "sample.RData"
    part = tmp_path / "out" / "sample.RData.part"
    part.parent.mkdir()
    http._fetch_file(src.as_uri(), part, "x")  # a copy of the old version, then cut short
    with open(part, "r+b") as handle:
        handle.truncate(1_000_000)
    new = gzip.compress(b"RDX2\n" + os.urandom(2_000_000), mtime=0)
    src.write_bytes(new)
    assert download(src.as_uri(), tmp_path / "out" / "sample.RData", progress=False).read_bytes() == new


def test_html_page_with_status_200_is_refused_and_not_pinned(server, tmp_path, payload) -> None:
    manifest = tmp_path / "m.json"
    server.faults["/sample.RData"] = ["html"]
    with pytest.raises(CellfateError, match=r"SRA1_SRS1 .* refused: .*not an RData file: an HTML"):
        _get(server, tmp_path, manifest=manifest)
    assert not manifest.exists() and list((tmp_path / "out").iterdir()) == []
    assert _get(server, tmp_path, manifest=manifest).read_bytes() == payload  # the real file is then accepted


def test_truncating_server_that_announces_the_short_size_is_refused(server, tmp_path, payload) -> None:
    manifest = tmp_path / "m.json"
    server.faults["/sample.RData"] = [f"short:{len(payload) - 5000}"]
    with pytest.raises(CellfateError, match="truncated or corrupt"):
        _get(server, tmp_path, manifest=manifest)
    assert not manifest.exists() and list((tmp_path / "out").iterdir()) == []


def test_retry_after_is_honoured_and_bounded(server, tmp_path, payload, monkeypatch) -> None:
    from cellfate.sources import http

    server.faults["/sample.RData"] = ["429:1"]
    assert _get(server, tmp_path, retries=1).read_bytes() == payload
    assert server.times[1] - server.times[0] >= 0.95  # backoff alone would be 0.01 s
    monkeypatch.setattr(http, "MAX_RETRY_AFTER", 0.2)
    server.faults["/sample.RData"] = ["429:3600"]
    start = time.monotonic()
    download(f"{server.url}/sample.RData", tmp_path / "o2" / "s.RData", retries=1, backoff=0.01, progress=False)
    assert time.monotonic() - start < 5
