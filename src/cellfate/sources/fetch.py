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


def fetch_archive(url: str, folder: str, *, manifest_dir: str, source: str, label: str, retries: int = 4,
                  timeout: float = 60.0, backoff: float = 2.0) -> None:
    """Download a ``.tar.gz`` (checksummed in the manifest like any file) and unpack it as ``folder``.

    Space Ranger's ``spatial/`` folder is published as one tarball whose members sit under
    ``spatial/``; a single top-level folder is stripped so ``folder`` holds the files themselves.
    Members are extracted with tarfile's ``data`` filter (no absolute paths, links out or devices),
    and the folder appears atomically.
    """
    import tarfile

    from cellfate.errors import CellfateError
    from cellfate.io import atomic_path

    archive = Path(folder).with_name(Path(folder).name + ".tar.gz")
    fetch_files({"archive": url}, {"archive": str(archive)}, manifest_dir=manifest_dir, source=source, label=label,
                retries=retries, timeout=timeout, backoff=backoff)
    try:
        with tarfile.open(archive) as tar, atomic_path(folder, is_dir=True) as tmp:
            members = [m for m in tar.getmembers() if m.name.strip("./")]
            tops = {Path(m.name).parts[0] for m in members}
            strip = next(iter(tops)) if len(tops) == 1 and any(m.isdir() or "/" in m.name for m in members) else None
            for member in members:
                if strip:
                    rest = Path(member.name).parts[1:]
                    if not rest:
                        continue
                    member.name = str(Path(*rest))
                tar.extract(member, tmp, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise CellfateError(f"not a readable .tar.gz archive ({err})", archive) from None
