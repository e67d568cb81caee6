"""One function per download rule: resolve URLs, download each file with its manifest entry."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cellfate.sources.cellxgene import dataset_asset_url
from cellfate.sources.http import download
from cellfate.sources.manifest import manifest_path


def fetch_files(urls: Mapping[str, str], outputs: Mapping[str, str], *, manifest_dir: str, source: str, label: str,
                retries: int = 4, timeout: float = 60.0, backoff: float = 2.0) -> None:
    """Download ``urls[name]`` to ``outputs[name]`` for every named output of a rule."""
    for name, out in outputs.items():
        key = f"{source}/{Path(out).name}"
        download(urls[name], out, manifest=manifest_path(manifest_dir, key), label=f"{label} ({name})",
                 retries=retries, timeout=timeout, backoff=backoff)


def fetch_cellxgene_dataset(listing: str, dataset_id: str, out: str, *, manifest_dir: str, retries: int = 4,
                            timeout: float = 60.0, backoff: float = 2.0) -> None:
    """Download a CELLxGENE dataset's H5AD asset, found in the curation-API listing."""
    url = dataset_asset_url(listing, dataset_id)
    download(url, out, manifest=manifest_path(manifest_dir, f"cellxgene/{Path(out).name}"), label=f"CELLxGENE {dataset_id}",
             retries=retries, timeout=timeout, backoff=backoff)
