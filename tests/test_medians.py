"""Gene medians from mergeable per-sample sketches: accuracy on the demo corpus, exact merging."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from conftest import REPO
from cellfate.corpus import medians
from cellfate.corpus.medians import MedianSketch
from cellfate.errors import CellfateError


def write_qc_h5ad(path: Path, counts: sp.csr_matrix, gene_ids, *, filter_pass=None, n_counts=None, obs=None) -> Path:
    """A QC'd sample as the QC stage writes it: raw counts (CSR), n_counts, filter_pass, labels."""
    counts = sp.csr_matrix(counts)
    n = counts.shape[0]
    frame = pd.DataFrame(index=[f"cell{i}" for i in range(n)])
    frame["n_counts"] = np.asarray(counts.sum(axis=1)).ravel().astype(float) if n_counts is None else n_counts
    frame["filter_pass"] = np.ones(n, bool) if filter_pass is None else filter_pass
    for key, value in (obs or {}).items():
        frame[key] = value
    if n_counts is False:
        del frame["n_counts"]
    adata = ad.AnnData(X=counts, obs=frame, var=pd.DataFrame(index=list(gene_ids)))
    adata.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def demo_corpus(tmp_path_factory) -> list[Path]:
    """The demo's four samples (same simulator, seeds and sheets as `make demo`), QC'd by their truth."""
    from cellfate.simulate.corpus import corpus_model, simulate_sample, tissue_cell_types

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    sim = config["simulate"]
    types = sorted({t for ts in sim["corpus"]["tissues"].values() for t in ts})
    model = corpus_model(types, sim["corpus"]["n_genes"], sim["seed"])  # as cellfate.simulate.demo builds it
    out = tmp_path_factory.mktemp("demo_qc")
    paths = []
    for source in ("panglaodb", "expression_atlas", "cellxgene"):
        sheet = pd.read_csv(REPO / config["samples"][source], sep="\t", dtype=str, comment="#")
        for row in sheet.to_dict("records"):
            sample_types = tissue_cell_types(sim["corpus"]["tissues"], row["tissue"])
            adata = simulate_sample(model, row["sample_id"], sample_types, int(row["sim_n_cells"]), sim["seed"])
            obs = {"source": source, "sample": row["sample_id"], "tissue": row["tissue"],
                   "cell_type": adata.obs["cell_type"].astype(str).to_numpy()}
            paths.append(write_qc_h5ad(out / f"{source}__{row['sample_id']}.h5ad", adata.X, adata.var_names,
                                       filter_pass=(adata.obs["sim_quality"] == "ok").to_numpy(), obs=obs))
    return paths


def test_demo_medians_two_pass_equal_exact(demo_corpus, tmp_path) -> None:
    table = medians.two_pass_medians(demo_corpus, tmp_path / "work", tmp_path / "gene_medians.tsv", chunk_size=300)
    accuracy = medians.median_accuracy(demo_corpus, tmp_path / "gene_medians.tsv", tmp_path / "accuracy.tsv")
    assert len(accuracy) > 1000
    assert (accuracy["rel_error"] == 0).all()  # exact, not within a bin
    assert accuracy["sketch"].nunique() == accuracy["exact"].nunique()  # no ties made by binning
    exact = medians.exact_medians(demo_corpus)
    np.testing.assert_array_equal(table["median"].to_numpy(), exact["median"].to_numpy())
    assert (table["n_cells"].to_numpy() == exact["n_cells"].to_numpy()).all()
    # the interpolated sketch alone is not exact: the second pass is what makes the difference
    sketched = MedianSketch.merge([MedianSketch.from_h5ad(p) for p in demo_corpus]).medians()
    assert (sketched["median"].to_numpy() != exact["median"].to_numpy()).mean() > 0.5


def test_bin_values_merge_is_exact_and_order_free(demo_corpus, tmp_path) -> None:
    targets = medians.MedianTargets.from_sketch(MedianSketch.merge([MedianSketch.from_h5ad(p) for p in demo_corpus]))
    parts = [medians.BinValues.from_h5ad(p, targets, chunk_size=97) for p in demo_corpus]
    for i, part in enumerate(parts):
        part.save(tmp_path / f"{i}.npz")
    loaded = [medians.BinValues.load(tmp_path / f"{i}.npz") for i in range(len(parts))]
    n = len(targets.gene_ids)
    at_once = medians.select_medians(targets, medians.BinValues.merge(loaded, n))
    grouped = medians.BinValues.merge([medians.BinValues.merge(loaded[2:], n), medians.BinValues.merge(loaded[:2][::-1], n)], n)
    pd.testing.assert_frame_equal(at_once, medians.select_medians(targets, grouped))
    files = [tmp_path / f"{i}.npz" for i in range(len(parts))]
    medians.MedianTargets.save(targets, tmp_path / "bins.npz")
    grouped_reduce = medians.exact_from_values(tmp_path / "bins.npz", files, tmp_path / "m.tsv", max_values=1000)
    pd.testing.assert_frame_equal(at_once, grouped_reduce)  # the reduce by gene groups (bounded memory) is exact too
    with pytest.raises(CellfateError, match="samples changed between the two passes"):
        medians.select_medians(targets, medians.BinValues.merge(loaded[1:], n))  # a sample missing from pass 2


def test_even_count_median_straddling_two_bins(tmp_path) -> None:
    # gene A: values 1, 2 (x 10,000 / total) -> median 1.5 from two different bins; gene B odd count
    counts = sp.csr_matrix(np.array([[1, 9_999, 3], [2, 9_998, 0], [0, 1, 5]], dtype=np.float32))
    path = write_qc_h5ad(tmp_path / "s.h5ad", counts, ["A", "B", "C"])
    table = medians.two_pass_medians([path], tmp_path / "w", tmp_path / "m.tsv")
    exact = medians.exact_medians([path])
    np.testing.assert_array_equal(table["median"].to_numpy(), exact["median"].to_numpy())
    assert table["median"].iloc[0] == pytest.approx(1.5 * 10_000 / 10_001, rel=1e-6)


def test_merge_is_exact_and_order_free(demo_corpus, tmp_path) -> None:
    parts = [MedianSketch.from_h5ad(p, chunk_size=97) for p in demo_corpus]
    for i, part in enumerate(parts):
        part.save(tmp_path / f"{i}.npz")
    loaded = [MedianSketch.load(tmp_path / f"{i}.npz") for i in range(len(parts))]
    all_at_once = MedianSketch.merge(loaded).medians()
    pairwise = MedianSketch.merge([MedianSketch.merge(loaded[2:]), MedianSketch.merge(loaded[:2][::-1])]).medians()
    pd.testing.assert_frame_equal(all_at_once, pairwise)
    assert MedianSketch.merge(loaded).n_cells == sum(p.n_cells for p in parts)


def test_histogram_median_bound_on_wide_values() -> None:
    rng = np.random.default_rng(3)
    genes, cells = 40, 301
    values = np.exp(rng.normal(rng.uniform(-6, 7, genes)[:, None], 1.5, (genes, cells)))
    values = np.clip(values, 1e-4, 1e4)
    centres = np.log(values / 1e-4) / np.log(medians.STEP)
    bins = np.clip(np.floor(centres).astype(int), 0, medians.N_BINS - 1)
    hist = sp.csr_matrix((np.ones(genes * cells), (np.repeat(np.arange(genes), cells), bins.ravel())), shape=(genes, medians.N_BINS))
    hist.sum_duplicates()
    got = medians.medians_from_histograms(np.array([f"g{i:02d}" for i in range(genes)]), hist)
    exact = np.median(values, axis=1)
    assert np.max(np.abs(got["median"].to_numpy() - exact) / exact) < medians.STEP - 1


def test_undetected_genes_get_no_median_and_failed_cells_are_ignored(tmp_path) -> None:
    counts = sp.csr_matrix(np.array([[5, 0, 0], [1, 0, 0], [0, 0, 9]], dtype=np.float32))
    path = write_qc_h5ad(tmp_path / "s.h5ad", counts, ["ENSMUSG1", "ENSMUSG2", "ENSMUSG3"],
                         filter_pass=np.array([True, True, False]))
    table = MedianSketch.from_h5ad(path).medians()
    assert list(table["gene_id"]) == ["ENSMUSG1"]  # gene 2 never detected, gene 3 only in a failed cell
    assert table["n_cells"].tolist() == [2]
    assert table["median"].iloc[0] == pytest.approx(10_000, rel=0.01)  # both cells: all counts in gene 1


def test_missing_n_counts_is_a_clear_error(tmp_path) -> None:
    path = write_qc_h5ad(tmp_path / "s.h5ad", sp.csr_matrix(np.eye(3, dtype=np.float32)), ["A", "B", "C"], n_counts=False)
    with pytest.raises(CellfateError, match=r"s\.h5ad: obs has no 'n_counts' column"):
        MedianSketch.from_h5ad(path)


def test_sketch_from_another_binning_is_refused(tmp_path, demo_corpus) -> None:
    MedianSketch.from_h5ad(demo_corpus[0]).save(tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as npz:
        content = dict(npz)
    content["binning"] = np.array([-3.0, 4.0, 1.02, 100])
    np.savez(tmp_path / "other.npz", **content)
    with pytest.raises(CellfateError, match="another binning"):
        MedianSketch.load(tmp_path / "other.npz")
