"""Write simulated samples exactly as the three public sources publish them.

- PanglaoDB: an R workspace holding ``sm``, a genes x cells ``dgCMatrix`` with row names
  ``SYMBOL_ENSMUSG...`` (some ``SYMBOL-ENSMUSG...`` or with a ``.N`` version suffix, as in the
  real files), Seurat cluster files, ``cell_type_annotations.txt`` and ``metadata.txt``.
- Single Cell Expression Atlas: the ``quantification-raw`` zip (MatrixMarket genes x cells plus
  ``.mtx_rows`` / ``.mtx_cols``) and the experiment-design TSV.
- CELLxGENE: an h5ad with normalized ``X``, raw counts in ``raw.X`` and an Ensembl ``var`` index,
  with the schema's obs columns (``cell_type``, ``is_primary_data``...).
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from cellfate.io import atomic_path, write_h5ad
from cellfate.simulate.expression import CELL_TYPES, SUBTYPES
from cellfate.simulate.rdata_writer import write_rdata_dgcmatrix

#: Cell Ontology and UBERON ids used by the CELLxGENE writer.
CELL_ONTOLOGY = {
    "T cell": "CL:0000084", "B cell": "CL:0000236", "macrophage": "CL:0000235", "hepatocyte": "CL:0000182",
    "endothelial cell": "CL:0000115", "fibroblast": "CL:0000057", "epithelial cell": "CL:0000066",
    "CD4-positive, alpha-beta T cell": "CL:0000624", "CD8-positive, alpha-beta T cell": "CL:0000625",
}
UBERON = {"liver": "UBERON:0002107", "lung": "UBERON:0002048", "spleen": "UBERON:0002106", "kidney": "UBERON:0002113"}


def panglaodb_row_names(adata: ad.AnnData) -> list[str]:
    """``SYMBOL_ENSMUSG`` row names, with the separator and version-suffix variants of the real files."""
    names = []
    for k, (gene_id, symbol) in enumerate(zip(adata.var_names, adata.var["symbol"])):
        sep = "-" if k % 7 == 3 else "_"
        suffix = f".{1 + k % 3}" if k % 11 == 5 else ""
        names.append(f"{symbol}{sep}{gene_id}{suffix}")
    return names


def panglaodb_clusters(adata: ad.AnnData, cell_types: list[str]) -> pd.Series:
    """Cluster number of each cell: the index of its type in the sample's type list (Seurat style)."""
    return pd.Series([cell_types.index(t) for t in adata.obs["cell_type"]], index=adata.obs["barcode"].to_numpy())


def write_panglaodb_sample(adata: ad.AnnData, cell_types: list[str], rdata_path: str | Path, clusters_path: str | Path) -> None:
    """The sample's ``.RData`` (object ``sm``) and its ``seurat_clusters.txt`` (barcode, cluster)."""
    matrix = sp.csc_matrix(adata.X.T)
    write_rdata_dgcmatrix(rdata_path, matrix, panglaodb_row_names(adata), list(adata.obs["barcode"]), name="sm")
    clusters = panglaodb_clusters(adata, cell_types)
    with atomic_path(clusters_path) as tmp:
        tmp.write_text("".join(f"{b} {c}\n" for b, c in clusters.items()))


def write_panglaodb_tables(samples: list[dict], metadata_path: str | Path, annotations_path: str | Path) -> None:
    """PanglaoDB's ``metadata.txt`` and ``cell_type_annotations.txt`` rows for the simulated samples.

    Quoted CSV without header, ``\\N`` for missing values, as in the published files.
    """
    def quoted(rows: list[list[str]]) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerows(rows)
        return buf.getvalue().replace('"\\N"', "\\N")

    meta, annot = [], []
    for s in samples:
        meta.append([s["sra"], s["srs"], s["tissue"].capitalize(), "10x chromium", "Mus musculus",
                     "Illumina HiSeq 4000", "15000", "1200", str(len(s["cell_types"])), "0", "1", "\\N"])
        for k, t in enumerate(s["cell_types"]):
            annot.append([s["sra"], s["srs"], str(k), str({**CELL_TYPES, **SUBTYPES}[t]["panglaodb"]), "1e-10", "1e-08", "30.5"])
    with atomic_path(metadata_path) as tmp:
        tmp.write_text(quoted(meta))
    with atomic_path(annotations_path) as tmp:
        tmp.write_text(quoted(annot))


def write_expression_atlas_experiment(adata: ad.AnnData, accession: str, tissue: str, zip_path: str | Path, design_path: str | Path) -> None:
    """The ``quantification-raw`` zip and the experiment-design TSV of one Atlas experiment."""
    cell_ids = [f"SAMEA{9000000 + k // 500}-{b}" for k, b in enumerate(adata.obs["barcode"])]
    mtx = io.BytesIO()
    scipy.io.mmwrite(mtx, sp.coo_matrix(adata.X.T), field="integer")
    rows = "".join(f"{g}\t{g}\n" for g in adata.var_names)
    cols = "".join(f"{c}\n" for c in cell_ids)
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for suffix, content in (("mtx", mtx.getvalue()), ("mtx_rows", rows), ("mtx_cols", cols)):
                # a fixed timestamp: the same simulation gives the same bytes, wherever it runs
                entry = zipfile.ZipInfo(f"{accession}.aggregated_filtered_counts.{suffix}", date_time=(1980, 1, 1, 0, 0, 0))
                zf.writestr(entry, content, compress_type=zipfile.ZIP_DEFLATED)
    design = pd.DataFrame(
        {
            "Assay": cell_ids,
            "Sample Characteristic[organism]": "Mus musculus",
            "Sample Characteristic Ontology Term[organism]": "http://purl.obolibrary.org/obo/NCBITaxon_10090",
            "Sample Characteristic[organism part]": tissue,
            "Sample Characteristic Ontology Term[organism part]": f"http://purl.obolibrary.org/obo/{UBERON.get(tissue, '').replace(':', '_')}",
            "Factor Value[inferred cell type - authors labels]": adata.obs["cell_type"].astype(str).to_numpy(),
            "Factor Value Ontology Term[inferred cell type - authors labels]": [
                f"http://purl.obolibrary.org/obo/{CELL_ONTOLOGY[t].replace(':', '_')}" for t in adata.obs["cell_type"]
            ],
        }
    )
    with atomic_path(design_path) as tmp:
        design.to_csv(tmp, sep="\t", index=False)


def write_cellxgene_dataset(adata: ad.AnnData, dataset_id: str, tissue: str, h5ad_path: str | Path) -> None:
    """A CELLxGENE-schema h5ad: log-normalized ``X``, raw counts in ``raw.X``, Ensembl var index."""
    counts = sp.csr_matrix(adata.X, dtype=np.float32)
    size = np.asarray(counts.sum(axis=1)).ravel()
    norm = sp.diags(1e4 / np.maximum(size, 1)) @ counts
    norm.data = np.log1p(norm.data)
    var = pd.DataFrame({"feature_name": adata.var["symbol"].to_numpy(), "feature_biotype": "gene"}, index=adata.var_names)
    cell_type = adata.obs["cell_type"].astype(str)
    obs = pd.DataFrame(
        {
            "cell_type": cell_type.to_numpy(),
            "cell_type_ontology_term_id": [CELL_ONTOLOGY[t] for t in cell_type],
            "tissue": tissue,
            "tissue_ontology_term_id": UBERON.get(tissue, "unknown"),
            "organism": "Mus musculus",
            "organism_ontology_term_id": "NCBITaxon:10090",
            "assay": "10x 3' v3",
            "assay_ontology_term_id": "EFO:0009922",
            "is_primary_data": (adata.obs["sim_duplicate_of"] == "").to_numpy(),
            "donor_id": f"{dataset_id[:8]}-donor",
        },
        index=adata.obs_names,
    )
    out = ad.AnnData(X=sp.csr_matrix(norm, dtype=np.float32), obs=obs, var=var)
    out.raw = ad.AnnData(X=counts, var=var.copy(), obs=obs[[]])
    out.uns["schema_version"] = "5.2.0"
    out.uns["title"] = f"Simulated mouse {tissue} ({dataset_id})"
    write_h5ad(out, h5ad_path)
