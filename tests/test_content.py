"""cellfate.readers.check_content: the format checks every download passes before its manifest
entry, on real files of each kind (as the sources publish them) and on cut or wrong ones."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import pytest

from cellfate.errors import CellfateError
from cellfate.readers import check_content, read_h5ad
from cellfate.simulate import source_formats
from cellfate.simulate.corpus import corpus_model, simulate_sample

TYPES = ["T cell", "B cell"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("content")
    cells = simulate_sample(corpus_model(TYPES, 200, seed=0), "S1", TYPES, 60, seed=0)
    source_formats.write_panglaodb_sample(cells, TYPES, root / "s.RData", root / "s.clusters.txt")
    source_formats.write_expression_atlas_experiment(cells, "E-MTAB-1", "liver", root / "e.zip", root / "e.tsv")
    source_formats.write_cellxgene_dataset(cells, "d", "spleen", root / "d.h5ad")
    return {"rdata": root / "s.RData", "zip": root / "e.zip", "hdf5": root / "d.h5ad", "text": root / "e.tsv"}


def _cut(path: Path, tmp_path: Path, keep: int) -> Path:
    out = tmp_path / ("cut" + path.suffix)
    out.write_bytes(path.read_bytes()[:keep])
    return out


@pytest.mark.parametrize("kind", ["rdata", "zip", "hdf5", "text"])
def test_good_files_of_each_kind_pass(files, kind) -> None:
    check_content(files[kind])


@pytest.mark.parametrize(("kind", "message"), [("rdata", "truncated or corrupt"), ("zip", "truncated or corrupt"),
                                               ("hdf5", "HDF5 file is truncated")])
def test_a_file_cut_short_is_refused(files, tmp_path, kind, message) -> None:
    path = files[kind]
    with pytest.raises(CellfateError, match=message):
        check_content(_cut(path, tmp_path, path.stat().st_size * 2 // 3))


@pytest.mark.parametrize("suffix", [".RData", ".zip", ".h5ad", ".tsv", ".json"])
def test_an_html_page_is_refused_for_every_kind(tmp_path, suffix) -> None:
    page = tmp_path / ("page" + suffix)
    page.write_text("<!DOCTYPE html><html><body>Not found</body></html>")
    with pytest.raises(CellfateError, match="HTML"):
        check_content(page)


def test_h5ad_reader_names_missing_truncated_and_empty_files(files, tmp_path) -> None:
    with pytest.raises(CellfateError, match="does not exist"):
        read_h5ad(tmp_path / "none.h5ad", what="spots h5ad")
    with pytest.raises(CellfateError, match="truncated"):
        read_h5ad(_cut(files["hdf5"], tmp_path, 5000))
    empty = tmp_path / "empty.h5ad"
    ad.AnnData(obs=None, var=None).write_h5ad(empty)
    with pytest.raises(CellfateError, match="has 0 cells"):
        read_h5ad(empty, what="velocity h5ad")
    with pytest.raises(CellfateError, match=r"no obsm\['spatial'\]"):
        read_h5ad(files["hdf5"], what="spots h5ad", obsm=["spatial"])


@pytest.mark.parametrize("libver", ["earliest", "latest"])  # superblock versions 0 and 3
def test_hdf5_end_of_file_is_read_from_either_superblock(tmp_path, libver) -> None:
    import h5py
    import numpy as np

    path = tmp_path / "x.h5"
    with h5py.File(path, "w", libver=libver) as handle:
        handle["x"] = np.arange(20_000, dtype=np.float64)
    check_content(path)
    with pytest.raises(CellfateError, match="HDF5 file is truncated"):
        check_content(_cut(path, tmp_path, path.stat().st_size - 1000))
