"""Readers of the three sources and harmonisation: real layouts in, Ensembl mouse ids out, and a
clear one-line error for every kind of bad input."""

from __future__ import annotations

import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellfate.errors import CellfateError
from cellfate.genes import mouse_gene_table
from cellfate.harmonise import check_counts, harmonise_genes, parse_gene_ids
from cellfate.simulate import source_formats
from cellfate.simulate.corpus import corpus_model, simulate_sample
from cellfate.simulate.rdata_writer import write_rdata_dgcmatrix
from cellfate.sources.cellxgene import dataset_asset_url, read_cellxgene_dataset
from cellfate.sources.expression_atlas import read_atlas_experiment
from cellfate.sources.panglaodb import read_annotations, read_metadata, read_panglaodb_sample

DATA = Path(__file__).parent / "data" / "panglaodb"
TYPES = ["T cell", "B cell", "macrophage"]


@pytest.fixture(scope="module")
def sample() -> ad.AnnData:
    model = corpus_model(TYPES, 300, seed=0)
    return simulate_sample(model, "S1", TYPES, 120, seed=0)


def _ids(n: int) -> list[str]:
    return list(mouse_gene_table().index[:n])


def test_real_panglaodb_metadata_parses_with_commas_and_missing_values() -> None:
    meta = read_metadata(DATA / "metadata.txt")
    assert meta.shape[1] == 12
    assert "Cortex, hippocampus and subventricular zone" in set(meta["tissue"])
    assert {"Mus musculus", "Homo sapiens"} <= set(meta["species"])
    assert meta["is_tumor"].isna().any() and "notused" in set(meta["srs"])


def test_real_panglaodb_sample_gets_its_cluster_cell_types(tmp_path: Path) -> None:
    clusters = pd.read_csv(DATA / "SRA599311_SRS2431649.seurat_clusters.txt", sep=" ", header=None)
    barcodes = list(clusters[0][:300]) + ["AAAAAAAAAAAAAAAA"]  # one cell PanglaoDB did not cluster
    rng = np.random.default_rng(0)
    genes = mouse_gene_table().dropna(subset=["symbol"]).iloc[:200].sort_index()  # harmonised var is id-sorted
    rows = [f"{s}_{g}" for g, s in zip(genes.index, genes["symbol"])]
    matrix = sp.random(200, len(barcodes), density=0.2, random_state=rng, data_rvs=lambda n: rng.integers(1, 9, n))
    write_rdata_dgcmatrix(tmp_path / "s.RData", matrix, rows, barcodes)
    adata, unresolved = read_panglaodb_sample(tmp_path / "s.RData", DATA / "SRA599311_SRS2431649.seurat_clusters.txt",
                                              DATA / "cell_type_annotations.txt", sra="SRA599311", srs="SRS2431649", tissue="Mesenteric")
    names = read_annotations(DATA / "cell_type_annotations.txt", "SRA599311", "SRS2431649")
    expected = [names.get(c, "Unknown") for c in clusters[1][:300]] + ["Unknown"]
    assert list(adata.obs["cell_type_source"]) == expected
    assert adata.obs["cell_type"].iloc[-1] == "unknown"
    assert (adata.X.T != sp.csr_matrix(matrix)).nnz == 0 and list(adata.var_names) == list(genes.index)
    assert len(unresolved) == 0 and adata.obs_names[0] == f"SRA599311_SRS2431649:{barcodes[0]}"


def test_gene_names_are_parsed_resolved_and_duplicates_summed(tmp_path: Path) -> None:
    table = mouse_gene_table().dropna(subset=["symbol"])
    table = table[~table["symbol"].duplicated()]
    (a, sa), (b, sb) = list(table["symbol"].items())[:2]
    names = [f"{sa}_{a}", f"{sa}-{a}.2", sb, "NotAGene1", f"Xx_{b}"]  # a twice, b by symbol and by id
    ids, symbols = parse_gene_ids(names)
    assert ids == [a, a, None, None, b] and symbols[2] == sb
    counts = sp.csr_matrix(np.array([[1, 2, 3, 4, 5], [0, 1, 0, 7, 1]]))
    merged, var, unresolved = harmonise_genes(counts, ids, symbols, "x")
    assert list(var.index) == sorted([a, b])
    assert merged[:, list(var.index).index(a)].toarray().ravel().tolist() == [3, 1]
    assert merged[:, list(var.index).index(b)].toarray().ravel().tolist() == [8, 1]
    assert unresolved.to_dict("records") == [{"name": "NotAGene1", "total_counts": 11, "note": ""}]


@pytest.mark.parametrize(
    ("values", "message"),
    [([1.0, -2.0], "negative values"), ([1.0, 2.5], "non-integer values"), ([1.0, np.nan], "NaN")],
)
def test_bad_counts_are_refused(values, message) -> None:
    with pytest.raises(CellfateError, match=f"m.mtx: .*{message}"):
        check_counts(sp.csr_matrix(np.array([values])), "m.mtx")


def test_empty_sample_is_refused() -> None:
    with pytest.raises(CellfateError, match="e.h5ad: empty sample: 0 cells"):
        check_counts(sp.csr_matrix((0, 5)), "e.h5ad")


def test_human_sample_in_a_mouse_run_is_named() -> None:
    ids = [f"ENSG{k:011d}" for k in range(10)]
    with pytest.raises(CellfateError, match=r"human\.mtx: looks like a human sample \(10 ENSG ids"):
        harmonise_genes(sp.csr_matrix(np.ones((2, 10))), ids, [None] * 10, "human.mtx")


def test_corrupt_rdata_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "bad.RData").write_bytes(b"RDX3\nX\n" + b"\x00" * 10)
    with pytest.raises(CellfateError) as err:
        read_panglaodb_sample(tmp_path / "bad.RData", tmp_path / "c", tmp_path / "a", sra="SRA1", srs="SRS1", tissue="t")
    assert "bad.RData" in str(err.value) and "\n" not in str(err.value)


def test_atlas_zip_and_design_read_to_harmonised_anndata(tmp_path: Path, sample) -> None:
    source_formats.write_expression_atlas_experiment(sample, "E-MTAB-1", "lung", tmp_path / "e.zip", tmp_path / "d.tsv")
    adata, unresolved = read_atlas_experiment(tmp_path / "e.zip", tmp_path / "d.tsv", accession="E-MTAB-1")
    assert (adata.X != sample.X).nnz == 0 and list(adata.var_names) == list(sample.var_names)
    assert list(adata.obs["cell_type"]) == list(sample.obs["cell_type"])
    assert set(adata.obs["tissue"]) == {"lung"} and len(unresolved) == 0


def test_corrupt_atlas_zip_and_a_human_experiment_are_refused(tmp_path: Path, sample) -> None:
    source_formats.write_expression_atlas_experiment(sample, "E-MTAB-1", "lung", tmp_path / "e.zip", tmp_path / "d.tsv")
    truncated = tmp_path / "cut.zip"
    truncated.write_bytes((tmp_path / "e.zip").read_bytes()[:500])
    with pytest.raises(CellfateError, match="cut.zip: not a readable Expression Atlas zip"):
        read_atlas_experiment(truncated, tmp_path / "d.tsv", accession="E-MTAB-1")
    design = pd.read_csv(tmp_path / "d.tsv", sep="\t")
    design["Sample Characteristic[organism]"] = "Homo sapiens"
    design.to_csv(tmp_path / "h.tsv", sep="\t", index=False)
    with pytest.raises(CellfateError, match="E-MTAB-1 is Homo sapiens, not Mus musculus"):
        read_atlas_experiment(tmp_path / "e.zip", tmp_path / "h.tsv", accession="E-MTAB-1")
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as zf:
        zf.writestr("a.mtx", "x")
        zf.writestr("b.mtx", "y")
    with pytest.raises(CellfateError, match=r"two.zip: expected one '\*.mtx'"):
        read_atlas_experiment(tmp_path / "two.zip", tmp_path / "d.tsv", accession="E-MTAB-1")


def test_cellxgene_reads_raw_counts_not_normalized_x(tmp_path: Path, sample) -> None:
    source_formats.write_cellxgene_dataset(sample, "d" * 8 + "-0000-0000-0000-" + "0" * 12, "spleen", tmp_path / "c.h5ad")
    adata, _ = read_cellxgene_dataset(tmp_path / "c.h5ad", dataset_id="D1")
    assert (adata.X != sample.X).nnz == 0
    assert adata.obs["is_primary_data"].all() and list(adata.obs["cell_type"]) == list(sample.obs["cell_type"])


def test_cellxgene_without_raw_uses_x_and_refuses_normalized_values(tmp_path: Path, sample) -> None:
    plain = ad.AnnData(X=sample.X.astype(np.float32), var=sample.var, obs=sample.obs[["cell_type"]])
    plain.write_h5ad(tmp_path / "p.h5ad")
    adata, _ = read_cellxgene_dataset(tmp_path / "p.h5ad", dataset_id="D1")
    assert (adata.X != sample.X).nnz == 0
    plain.X = plain.X / 3.0
    plain.write_h5ad(tmp_path / "n.h5ad")
    with pytest.raises(CellfateError, match="n.h5ad: .*non-integer values"):
        read_cellxgene_dataset(tmp_path / "n.h5ad", dataset_id="D1")
    (tmp_path / "broken.h5ad").write_bytes(b"not hdf5 at all")
    with pytest.raises(CellfateError, match="broken.h5ad: not an HDF5 file"):
        read_cellxgene_dataset(tmp_path / "broken.h5ad", dataset_id="D1")


def test_curation_listing_resolves_the_h5ad_asset(tmp_path: Path) -> None:
    listing = tmp_path / "datasets.json"
    listing.write_text(
        '[{"dataset_id": "a", "organism": [{"label": "Mus musculus"}], "assets": [{"filetype": "RDS", "url": "r"},'
        ' {"filetype": "H5AD", "url": "https://x/a.h5ad"}]},'
        ' {"dataset_id": "h", "organism": [{"label": "Homo sapiens"}], "assets": [{"filetype": "H5AD", "url": "u"}]}]'
    )
    assert dataset_asset_url(listing, "a") == "https://x/a.h5ad"
    with pytest.raises(CellfateError, match="dataset h is Homo sapiens"):
        dataset_asset_url(listing, "h")
    with pytest.raises(CellfateError, match="dataset z is not in the listing"):
        dataset_asset_url(listing, "z")


def test_duplicated_barcodes_are_refused_in_every_source(tmp_path: Path, sample) -> None:
    dup = sample.copy()
    dup.obs_names = [*dup.obs_names[:-1], dup.obs_names[0]]
    source_formats.write_cellxgene_dataset(dup, "D1", "spleen", tmp_path / "c.h5ad")
    with pytest.raises(CellfateError, match=f"c.h5ad: cell barcode '{dup.obs_names[0]}' appears more than once"):
        read_cellxgene_dataset(tmp_path / "c.h5ad", dataset_id="D1")
    dup.obs["barcode"] = [*dup.obs["barcode"][:-1], dup.obs["barcode"].iloc[0]]  # the Atlas cell ids come from it
    source_formats.write_expression_atlas_experiment(dup, "E-MTAB-1", "lung", tmp_path / "e.zip", tmp_path / "d.tsv")
    with pytest.raises(CellfateError, match=r"e.zip: cell id \(.mtx_cols\) .* appears more than once"):
        read_atlas_experiment(tmp_path / "e.zip", tmp_path / "d.tsv", accession="E-MTAB-1")


def test_zero_cell_cellxgene_dataset_is_called_empty_not_another_species(tmp_path: Path, sample) -> None:
    source_formats.write_cellxgene_dataset(sample[:0].copy(), "D1", "spleen", tmp_path / "z.h5ad")
    with pytest.raises(CellfateError, match=r"z.h5ad: dataset D1 is empty: 0 cells"):
        read_cellxgene_dataset(tmp_path / "z.h5ad", dataset_id="D1")
