"""CELLxGENE Discover: dataset h5ad files (curation API assets) and the Census.

Dataset files hold raw counts in ``raw.X`` when ``X`` is normalized, else in ``X``; the var index
is Ensembl ids and obs follows the CELLxGENE schema (``cell_type``, ``tissue``, ``organism``,
``is_primary_data``). ``is_primary_data = False`` marks cells re-hosted from another dataset:
QC drops them so no cell is counted twice across the corpus.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from cellfate.errors import CellfateError
from cellfate.harmonise import check_counts, harmonise_cell_types, harmonise_genes, parse_gene_ids
from cellfate.readers import check_unique, read_h5ad, read_json
from cellfate.synonyms import SynonymTable


def dataset_asset_url(listing: str | Path, dataset_id: str) -> str:
    """The H5AD asset URL of ``dataset_id`` in a curation-API ``/datasets`` listing (JSON list)."""
    datasets = read_json(listing, "JSON dataset listing")
    if not isinstance(datasets, list):
        raise CellfateError(f"the dataset listing is a JSON {type(datasets).__name__}, not a list", listing)
    for entry in datasets:
        if entry.get("dataset_id") == dataset_id:
            organisms = {o.get("label") for o in entry.get("organism", [])}
            if organisms and "Mus musculus" not in organisms:
                raise CellfateError(f"dataset {dataset_id} is {', '.join(sorted(organisms))}, not Mus musculus", listing)
            for asset in entry.get("assets", []):
                if asset.get("filetype", "").upper() == "H5AD":
                    return asset["url"]
            raise CellfateError(f"dataset {dataset_id} has no H5AD asset", listing)
    raise CellfateError(f"dataset {dataset_id} is not in the listing ({len(datasets)} datasets)", listing)


def read_cellxgene_dataset(h5ad: str | Path, *, dataset_id: str, tissue: str | None = None,
                           synonyms: SynonymTable | None = None) -> tuple[ad.AnnData, pd.DataFrame]:
    """One dataset as AnnData (cells x ENSMUSG ids, raw counts) and its unresolved-gene table."""
    data = read_h5ad(h5ad, what="CELLxGENE h5ad", min_cells=0)
    if data.n_obs == 0 or data.n_vars == 0:
        raise CellfateError(f"dataset {dataset_id} is empty: {data.n_obs} cells x {data.n_vars} genes", h5ad)
    check_unique(data.obs_names, "cell barcode", h5ad)
    organism = data.obs.get("organism")
    if organism is not None:
        species = set(organism.astype(str).unique())
        if species != {"Mus musculus"}:
            raise CellfateError(f"dataset {dataset_id} is {', '.join(sorted(species))}, not Mus musculus: this is a mouse run", h5ad)
    matrix, var_names = (data.raw.X, data.raw.var_names) if data.raw is not None else (data.X, data.var_names)
    counts = check_counts(matrix, h5ad)
    ids, symbols = parse_gene_ids(list(var_names))
    if "feature_name" in data.var:  # keep the published symbols where the id carries none
        names = data.var["feature_name"].reindex(var_names).astype(str).to_numpy()
        symbols = [s or n for s, n in zip(symbols, names)]
    counts, var, unresolved = harmonise_genes(counts, ids, symbols, h5ad, synonyms)
    obs_in = data.obs
    label = obs_in["cell_type"].astype(str) if "cell_type" in obs_in else pd.Series("unknown", index=obs_in.index)
    tissue_col = obs_in["tissue"].astype(str).to_numpy() if "tissue" in obs_in else "unknown"
    primary = obs_in["is_primary_data"].to_numpy(bool) if "is_primary_data" in obs_in else np.ones(data.n_obs, bool)
    obs = pd.DataFrame(
        {
            "barcode": obs_in.index.astype(str),
            "source": "cellxgene",
            "sample": dataset_id,
            "tissue": tissue if tissue else tissue_col,
            "cell_type_source": label.to_numpy(),
            "cell_type": harmonise_cell_types(label, h5ad, "" if "cell_type" in obs_in else "no obs column 'cell_type'").to_numpy(),
            "is_primary_data": primary,
        },
        index=pd.Index([f"{dataset_id}:{c}" for c in obs_in.index], name="cell_id"),
    )
    return ad.AnnData(X=counts, obs=obs, var=var), unresolved
