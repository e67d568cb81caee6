"""One function per intake rule: read a downloaded sample into harmonised AnnData, then QC it.

Reading and QC are separate rules so that changing a QC threshold reruns QC (and what follows)
without re-reading every source file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anndata as ad
import pandas as pd

from cellfate.corpus.qc import QCThresholds, apply_qc, qc_table
from cellfate.io import write_h5ad, write_table
from cellfate.readers import read_h5ad
from cellfate.sources.cellxgene import read_cellxgene_dataset
from cellfate.sources.expression_atlas import read_atlas_experiment
from cellfate.sources.panglaodb import read_panglaodb_sample
from cellfate.synonyms import load_synonyms

log = logging.getLogger(__name__)


def write_harmonised(adata: ad.AnnData, unresolved: pd.DataFrame, h5ad: str, genes: str) -> None:
    lost = unresolved["total_counts"].sum()
    total = lost + adata.X.sum()
    log.info("%s: %d cells x %d genes; %d gene names unresolved (%.3f%% of counts)",
             adata.obs["sample"].iloc[0], adata.n_obs, adata.n_vars, len(unresolved), 100 * lost / max(total, 1))
    adata.uns["genes_unresolved"] = int(len(unresolved))
    adata.uns["counts_unresolved"] = int(lost)
    write_table(unresolved, genes)
    write_h5ad(adata, h5ad)


def read_panglaodb(row: Mapping[str, Any], rdata: str, clusters: str, annotations: str, h5ad: str, genes: str,
                   synonyms: str | None = None) -> None:
    """PanglaoDB sample -> harmonised h5ad + unresolved-gene table (``synonyms``: MGI's table, optional)."""
    adata, unresolved = read_panglaodb_sample(rdata, clusters, annotations, sra=row["sra"], srs=row["srs"],
                                              tissue=row["tissue"], synonyms=load_synonyms(synonyms))
    write_harmonised(adata, unresolved, h5ad, genes)


def read_expression_atlas(row: Mapping[str, Any], archive: str, design: str, h5ad: str, genes: str,
                          synonyms: str | None = None) -> None:
    """Expression Atlas experiment -> harmonised h5ad + unresolved-gene table."""
    adata, unresolved = read_atlas_experiment(archive, design, accession=row["accession"],
                                              tissue=row.get("tissue") or None, synonyms=load_synonyms(synonyms))
    write_harmonised(adata, unresolved, h5ad, genes)


def read_cellxgene(row: Mapping[str, Any], dataset: str, h5ad: str, genes: str, synonyms: str | None = None) -> None:
    """CELLxGENE dataset -> harmonised h5ad + unresolved-gene table."""
    adata, unresolved = read_cellxgene_dataset(dataset, dataset_id=row["dataset_id"], tissue=row.get("tissue") or None,
                                               synonyms=load_synonyms(synonyms))
    write_harmonised(adata, unresolved, h5ad, genes)


def qc_sample(harmonised: str, thresholds: Mapping[str, Any], h5ad: str, table: str) -> None:
    """QC one sample: flags in obs, the per-sample QC table."""
    adata = read_h5ad(harmonised, what="harmonised h5ad", unique_cells=True)
    apply_qc(adata, QCThresholds(**thresholds), path=harmonised)
    write_table(qc_table(adata).assign(genes_unresolved=adata.uns.get("genes_unresolved", 0),
                                       counts_unresolved=adata.uns.get("counts_unresolved", 0)), table)
    write_h5ad(adata, h5ad)


def corpus_summary(qc_h5ads: list[str], qc_tables: list[str], summary: str, composition: str) -> None:
    """Per-sample QC rows joined into one table, and cells by source, tissue and cell type."""
    write_table(pd.concat([pd.read_csv(t, sep="\t") for t in qc_tables], ignore_index=True), summary)
    parts = []
    for path in qc_h5ads:
        obs = read_h5ad(path, what="QC'd h5ad", backed="r", min_cells=0).obs
        parts.append(obs.loc[obs["filter_pass"], ["source", "tissue", "cell_type"]].astype(str))
    cells = pd.concat(parts, ignore_index=True)
    write_table(cells.value_counts().rename("cells").reset_index(), composition)
