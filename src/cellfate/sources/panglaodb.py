"""PanglaoDB: an ``.RData`` count matrix per sample, cell types through Seurat clusters.

Each sample's ``sm`` is a genes x cells dgCMatrix; the cell type of a cell is the annotation of
its Seurat cluster (``sample_clusters/<SRA>_<SRS>.seurat_clusters.txt`` maps barcode -> cluster,
``cell_type_annotations.txt`` maps (SRA, SRS, cluster) -> cell type). Cells outside any cluster
get ``unknown``: PanglaoDB clustered only the cells that passed its own filters.
"""

from __future__ import annotations

import csv
from pathlib import Path

import anndata as ad
import pandas as pd

from cellfate.errors import CellfateError
from cellfate.harmonise import check_counts, harmonise_cell_types, harmonise_genes, parse_gene_ids
from cellfate.readers import check_unique
from cellfate.sources.rdata import read_rdata_dgcmatrix
from cellfate.synonyms import SynonymTable


def read_metadata(path: str | Path) -> pd.DataFrame:
    """PanglaoDB's ``metadata.txt``: quoted CSV, no header, ``\\N`` for missing (tissues contain commas)."""
    columns = ["sra", "srs", "tissue", "protocol", "species", "instrument", "n_expressed_genes",
               "median_genes_per_cell", "n_clusters", "is_tumor", "is_primary_adult", "is_cell_line"]
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    bad = [k for k, row in enumerate(rows) if len(row) != len(columns)]
    if bad:
        raise CellfateError(f"line {bad[0] + 1} has {len(rows[bad[0]])} fields, expected {len(columns)}", path)
    frame = pd.DataFrame(rows, columns=columns).replace("\\N", pd.NA)
    return frame


def read_annotations(path: str | Path, sra: str, srs: str) -> dict[int, str]:
    """Cluster -> cell type of one sample from ``cell_type_annotations.txt``."""
    out: dict[int, str] = {}
    with open(path, newline="") as handle:
        for row in csv.reader(handle):
            if len(row) >= 4 and row[0] == sra and row[1] == srs:
                out[int(row[2])] = row[3]
    return out


def read_clusters(path: str | Path) -> pd.Series:
    """Barcode -> cluster from a ``seurat_clusters.txt`` (space separated, no header)."""
    try:
        frame = pd.read_csv(path, sep=r"\s+", header=None, names=["barcode", "cluster"], dtype={"barcode": str})
    except pd.errors.EmptyDataError:
        return pd.Series(dtype=int)
    if frame["cluster"].isna().any() or not pd.api.types.is_integer_dtype(frame["cluster"]):
        raise CellfateError("expected lines of '<barcode> <cluster number>'", path)
    return frame.set_index("barcode")["cluster"]


def read_panglaodb_sample(
    rdata: str | Path, clusters: str | Path, annotations: str | Path, *, sra: str, srs: str, tissue: str,
    synonyms: SynonymTable | None = None,
) -> tuple[ad.AnnData, pd.DataFrame]:
    """One sample as AnnData (cells x ENSMUSG ids, int32 counts) and its unresolved-gene table."""
    matrix, rows, cols = read_rdata_dgcmatrix(rdata)
    check_unique(cols, "cell barcode", rdata)
    counts = check_counts(matrix.T, rdata)
    ids, symbols = parse_gene_ids(rows)
    counts, var, unresolved = harmonise_genes(counts, ids, symbols, rdata, synonyms)
    cluster_table = read_clusters(clusters)
    cluster = cluster_table.reindex(cols)
    why = (f"none of the {len(cluster_table)} barcodes of the clusters file is a cell of the counts "
           f"(clusters e.g. {list(cluster_table.index[:1])}, counts e.g. {list(cols[:1])}: a '-1' suffix on one side?)"
           if len(cluster_table) and cluster.isna().all() else "no cluster has a cell-type annotation")
    names = read_annotations(annotations, sra, srs)
    label = cluster.map(lambda c: names.get(int(c), "Unknown") if pd.notna(c) else "Unknown")
    obs = pd.DataFrame(
        {
            "barcode": cols,
            "source": "panglaodb",
            "sample": f"{sra}_{srs}",
            "tissue": tissue,
            "cell_type_source": label.to_numpy(),
            "cell_type": harmonise_cell_types(label, clusters, why).to_numpy(),
            "is_primary_data": True,
        },
        index=pd.Index([f"{sra}_{srs}:{b}" for b in cols], name="cell_id"),
    )
    return ad.AnnData(X=counts, obs=obs, var=var), unresolved
