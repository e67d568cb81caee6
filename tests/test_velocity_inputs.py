"""Velocity samples given as files users already have: a velocyto loom or an h5ad with layers.

Real data: the scVelo pancreas slice (tests/data/scvelo) read as an h5ad, and a velocyto-layout
loom written from it (layers spliced/unspliced, row attrs Gene/Accession, col attr CellID like
``pancreas:BARCODEx``). Both reach VICDYF through the same guards.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from cellfate.dynamics import pipeline
from cellfate.errors import CellfateError
from cellfate.velocity.loom import counts_to_h5ad, read_layers_h5ad, read_loom, read_starsolo
from conftest import REPO, run_snakemake

DATA = Path(__file__).parent / "data" / "scvelo" / "pancreas_50obs_top2000.h5ad"
FAST = {"epochs_phase1": 2, "epochs_phase2": 2, "n_top_genes": 200, "min_shared_counts": 10, "batch_size": 25,
        "n_samples": 3, "n_neighbors": 10, "device": "cpu"}


def write_velocyto_loom(adata: ad.AnnData, path: Path, sample: str = "pancreas") -> Path:
    """A loom in velocyto's layout (genes x cells; main matrix = spliced; uint32 layers)."""
    import loompy

    spliced = sp.csr_matrix(adata.layers["spliced"]).T.astype(np.uint32)
    unspliced = sp.csr_matrix(adata.layers["unspliced"]).T.astype(np.uint32)
    layers = {"": spliced, "spliced": spliced, "unspliced": unspliced,
              "ambiguous": sp.csr_matrix(spliced.shape, dtype=np.uint32)}
    loompy.create(str(path), layers,
                  row_attrs={"Gene": np.asarray(adata.var_names, dtype=str),
                             "Accession": np.asarray([f"ACC_{g}" for g in adata.var_names], dtype=str)},
                  col_attrs={"CellID": np.asarray([f"{sample}:{b}x" for b in adata.obs_names], dtype=str)})
    return path


@pytest.fixture(scope="module")
def pancreas() -> ad.AnnData:
    return ad.read_h5ad(DATA)


@pytest.fixture(scope="module")
def loom(pancreas, tmp_path_factory) -> Path:
    return write_velocyto_loom(pancreas, tmp_path_factory.mktemp("loom") / "pancreas.loom")


def test_loom_and_h5ad_give_the_same_counts(pancreas, loom) -> None:
    from_h5ad = read_layers_h5ad(DATA)
    from_loom = read_loom(loom)
    assert list(from_loom.obs_names) == list(from_h5ad.obs_names) == list(pancreas.obs_names)
    assert from_loom.obs["loom_cell_id"].iloc[0] == f"pancreas:{pancreas.obs_names[0]}x"
    assert list(from_loom.var["symbol"]) == list(from_h5ad.var["symbol"]) == list(pancreas.var_names)
    assert "Pdx1" in set(from_loom.var["symbol"])
    for layer in ("spliced", "unspliced"):
        assert from_loom.layers[layer].dtype == from_h5ad.layers[layer].dtype == np.int32
        expected = pancreas.layers[layer].toarray()
        np.testing.assert_array_equal(from_loom.layers[layer].toarray(), expected)
        np.testing.assert_array_equal(from_h5ad.layers[layer].toarray(), expected)


@pytest.mark.parametrize("kind", ["h5ad", "loom"])
def test_real_sample_joined_to_qc_cells_and_fitted(kind, pancreas, loom, tmp_path) -> None:
    """The QC'd cells (with the -1 suffix, a label, a different order) select and order the counts."""
    keep = list(pancreas.obs_names[::-1][:40])
    cells = ad.AnnData(obs=pd.DataFrame({"barcode": [f"{b}-1" for b in keep], "cell_type": "endocrine"},
                                        index=[f"c{i}" for i in range(40)]))
    cells.write_h5ad(tmp_path / "cells.h5ad")
    source = DATA if kind == "h5ad" else loom
    counts_to_h5ad(source, kind, "pancreas", tmp_path / "velocity.h5ad", cells_h5ad=tmp_path / "cells.h5ad")
    joined = ad.read_h5ad(tmp_path / "velocity.h5ad")
    assert list(joined.obs_names) == list(cells.obs_names) and (joined.obs["cell_type"] == "endocrine").all()
    np.testing.assert_array_equal(joined.layers["unspliced"].toarray(), pancreas[keep].layers["unspliced"].toarray())
    pipeline.fit(tmp_path / "velocity.h5ad", tmp_path / "model", tmp_path / "dyn.h5ad", FAST)
    out = ad.read_h5ad(tmp_path / "dyn.h5ad")
    assert out.n_obs == 40 and np.isfinite(out.layers["vicdyf_mean_velocity"]).all()
    if kind == "h5ad":
        _check_scverse_keys(out)


def _check_scverse_keys(out: ad.AnnData) -> None:
    """scVelo's velocity_embedding reads obsm X_<basis> and velocity_<basis>; scanpy plots the basis."""
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    basis = "vicdyf_umap"
    assert out.obsm[f"X_{basis}"].shape == out.obsm[f"velocity_{basis}"].shape == (out.n_obs, 2)
    np.testing.assert_array_equal(out.obsm[f"velocity_{basis}"], out.obsm["X_vicdyf_mdumap"])
    assert np.abs(out.obsm[f"velocity_{basis}"]).sum() > 0
    assert out.uns[basis]["params"]["n_neighbors"] == FAST["n_neighbors"]
    assert list(out.uns["velocity_params"]["embeddings"]) == [basis]
    axes = sc.pl.embedding(out, basis=basis, color="vicdyf_fluctuation", show=False)
    assert len(axes.collections) > 0


def write_starsolo(adata: ad.AnnData, folder: Path) -> Path:
    """STARsolo's Velocyto/filtered layout: genes x cells Matrix Market per layer, features and barcodes TSVs."""
    import gzip

    import scipy.io

    folder.mkdir(parents=True)
    for layer in ("spliced", "unspliced"):
        scipy.io.mmwrite(folder / f"{layer}.mtx", sp.csr_matrix(adata.layers[layer]).T.astype(np.int64))
    scipy.io.mmwrite(folder / "ambiguous.mtx", sp.csr_matrix((adata.n_vars, adata.n_obs), dtype=np.int64))
    pd.DataFrame({"id": [f"ACC_{g}" for g in adata.var_names], "name": adata.var_names, "type": "Gene Expression"}
                 ).to_csv(folder / "features.tsv", sep="\t", header=False, index=False)
    with gzip.open(folder / "barcodes.tsv.gz", "wt") as handle:
        handle.write("".join(f"{b}-1\n" for b in adata.obs_names))
    return folder


def test_starsolo_velocyto_folder_reads_the_same(pancreas, tmp_path) -> None:
    folder = write_starsolo(pancreas, tmp_path / "Solo.out" / "Velocyto" / "filtered")
    data = read_starsolo(folder)
    assert list(data.obs_names) == list(pancreas.obs_names) and list(data.var["symbol"]) == list(pancreas.var_names)
    for layer in ("spliced", "unspliced"):
        np.testing.assert_array_equal(data.layers[layer].toarray(), pancreas.layers[layer].toarray())
    (folder / "unspliced.mtx").unlink()
    with pytest.raises(CellfateError, match="not a STARsolo Velocyto folder: no unspliced.mtx"):
        read_starsolo(folder)


def _layered(tmp_path: Path, spliced, unspliced, names=None) -> Path:
    names = names or [f"AAAC{i:04d}" for i in range(spliced.shape[0])]
    adata = ad.AnnData(obs=pd.DataFrame(index=names), var=pd.DataFrame(index=[f"G{j}" for j in range(spliced.shape[1])]),
                       layers={"spliced": spliced, "unspliced": unspliced})
    adata.write_h5ad(tmp_path / "x.h5ad")
    return tmp_path / "x.h5ad"


def test_guards_on_layered_h5ad(tmp_path) -> None:
    counts = np.arange(12, dtype=np.float64).reshape(4, 3)
    with pytest.raises(CellfateError, match="unspliced layer has non-integer values.*not normalised"):
        read_layers_h5ad(_layered(tmp_path, counts, np.log1p(counts)))
    noisy = read_layers_h5ad(_layered(tmp_path, counts + 1e-11, counts))  # float noise is rounded, not refused
    np.testing.assert_array_equal(noisy.layers["spliced"].toarray(), counts)
    with pytest.raises(CellfateError, match="barcode 'AAAC'"):
        read_layers_h5ad(_layered(tmp_path, counts, counts, names=["s1:AAACx", "AAAC-1", "B", "C"]))
    adata = ad.AnnData(obs=pd.DataFrame(index=list("abcd")), layers={"spliced": counts})
    adata.write_h5ad(tmp_path / "one.h5ad")
    with pytest.raises(CellfateError, match="no layer 'unspliced'"):
        read_layers_h5ad(tmp_path / "one.h5ad")


def test_loom_without_velocyto_layers_is_one_line(pancreas, tmp_path) -> None:
    import loompy

    loompy.create(str(tmp_path / "plain.loom"), sp.csr_matrix(pancreas.layers["spliced"]).T,
                  row_attrs={"Gene": np.asarray(pancreas.var_names, dtype=str)},
                  col_attrs={"CellID": np.asarray(pancreas.obs_names, dtype=str)})
    with pytest.raises(CellfateError, match="lacks layers/spliced, layers/unspliced, row_attrs/Accession"):
        read_loom(tmp_path / "plain.loom")


def _dry_run(tmp_path: Path, sample: dict):
    config = {"velocity": {"samples": {"pancreas": sample}}}
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(config))
    return run_snakemake("-n", "--nolock", f"{tmp_path}/results/dynamics/pancreas.h5ad", "--configfile",
                         str(tmp_path / "extra.yaml"), "--config", f"results={tmp_path}/results")


def test_workflow_reads_a_loom_without_velocyto(tmp_path) -> None:
    result = _dry_run(tmp_path, {"loom": str(REPO / "tests" / "data" / "none.loom")})
    assert result.returncode != 0 and "none.loom" in result.stdout + result.stderr  # the missing input is named
    result = _dry_run(tmp_path, {"h5ad": str(DATA)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "velocity_anndata" in result.stdout and "vicdyf_fit" in result.stdout
    assert "velocyto_count" not in result.stdout
    result = _dry_run(tmp_path, {"h5ad": str(DATA), "bam": "x.bam", "gtf": "x.gtf"})
    assert result.returncode != 0 and "velocity.samples.pancreas" in result.stdout + result.stderr
