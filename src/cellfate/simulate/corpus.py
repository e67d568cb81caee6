"""A mini-corpus of mouse cells of known types, one AnnData per sample, with its ground truth.

Every sample of every source shares one expression model (same genes, same biology), so a
correct harmonisation puts the same cell type from different sources together. Each sample is
drawn from its own seed (global seed + sample id), so one sample can be regenerated alone.
Known defects are planted for QC to find: low-count droplets and damaged cells with a high
mitochondrial fraction (``obs['sim_quality']``), and cells copied from another sample
(``obs['sim_duplicate_of']``) as CELLxGENE marks them with ``is_primary_data = False``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfate.simulate.expression import ExpressionModel, choose_genes, random_barcodes


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    """A generator that depends only on the global seed and the sample id (stable across runs)."""
    return np.random.default_rng([seed, zlib.crc32(sample_id.encode())])


def corpus_model(cell_types: list[str], n_genes: int, seed: int) -> ExpressionModel:
    """The expression model shared by all samples of a corpus."""
    rng = sample_rng(seed, "__model__")
    genes = choose_genes(n_genes, rng)
    return ExpressionModel.build(genes, cell_types, rng)


def simulate_sample(
    model: ExpressionModel,
    sample_id: str,
    cell_types: list[str],
    n_cells: int,
    seed: int,
    *,
    median_library_size: float = 3000.0,
    damaged_fraction: float = 0.04,
    low_count_fraction: float = 0.03,
) -> ad.AnnData:
    """Simulate one sample: raw integer counts (CSR) with ``obs`` holding the truth.

    obs: ``barcode``, ``cell_type`` (Cell Ontology label), ``sim_quality`` in {ok, damaged,
    low_counts}, ``sim_duplicate_of`` (empty here). var: Ensembl ids with ``symbol``.
    """
    rng = sample_rng(seed, sample_id)
    type_index = np.array([model.cell_types.index(t) for t in cell_types])
    abundance = rng.dirichlet(np.full(len(cell_types), 3.0))
    cell_type_idx = type_index[rng.choice(len(cell_types), size=n_cells, p=abundance)]
    library = rng.lognormal(np.log(median_library_size), 0.45, size=n_cells)
    quality = np.full(n_cells, "ok", dtype=object)
    u = rng.random(n_cells)
    quality[u < damaged_fraction + low_count_fraction] = "damaged"
    quality[u < low_count_fraction] = "low_counts"
    library[quality == "low_counts"] = rng.uniform(60, 250, size=(quality == "low_counts").sum())

    proportions = model.proportions[cell_type_idx].copy()
    damaged = quality == "damaged"
    if damaged.any():  # a broken membrane loses cytoplasmic RNA: mitochondrial reads dominate
        mito = model.genes["is_mitochondrial"].to_numpy()
        share = rng.uniform(0.3, 0.6, size=damaged.sum())[:, None]
        block = proportions[damaged]
        block[:, ~mito] *= (1 - share) / block[:, ~mito].sum(axis=1, keepdims=True)
        block[:, mito] *= share / block[:, mito].sum(axis=1, keepdims=True)
        proportions[damaged] = block
    counts = model.sample(cell_type_idx, library, rng, proportions=proportions)

    barcodes = random_barcodes(n_cells, rng)
    obs = pd.DataFrame(
        {
            "barcode": barcodes,
            "cell_type": pd.Categorical(np.asarray(model.cell_types)[cell_type_idx], categories=model.cell_types),
            "sim_quality": pd.Categorical(quality, categories=["ok", "damaged", "low_counts"]),
            "sim_duplicate_of": "",
        },
        index=pd.Index(barcodes, name="cell_id"),
    )
    adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=model.genes.copy())
    adata.uns["sample_id"] = sample_id
    return adata


def add_duplicates(adata: ad.AnnData, donor: ad.AnnData, n_duplicates: int, donor_id: str, seed: int) -> ad.AnnData:
    """Append ``n_duplicates`` exact copies of ``donor`` cells (as a portal re-hosting a dataset does).

    The copies get new barcodes and ``sim_duplicate_of = '<donor_id>:<barcode>'``; their counts are
    identical to the donor cells', which is what makes them duplicates.
    """
    rng = sample_rng(seed, f"{adata.uns['sample_id']}:duplicates")
    chosen = np.sort(rng.choice(donor.n_obs, size=min(n_duplicates, donor.n_obs), replace=False))
    copies = donor[chosen].copy()
    taken = set(adata.obs_names)
    new_barcodes = [b for b in random_barcodes(len(chosen) + len(taken), rng) if b not in taken][: len(chosen)]
    copies.obs["sim_duplicate_of"] = [f"{donor_id}:{b}" for b in copies.obs["barcode"]]
    copies.obs["barcode"] = new_barcodes
    copies.obs_names = new_barcodes
    merged = ad.concat([adata, copies], merge="same")
    merged.uns["sample_id"] = adata.uns["sample_id"]
    return merged


def truth_table(adata: ad.AnnData) -> pd.DataFrame:
    """The per-cell ground truth that tests and reports compare against."""
    return adata.obs[["barcode", "cell_type", "sim_quality", "sim_duplicate_of"]].reset_index(drop=True)


def tissue_cell_types(tissues: Mapping[str, list[str]], tissue: str) -> list[str]:
    """The cell types a tissue holds, from the simulator config."""
    if tissue not in tissues:
        raise ValueError(f"tissue {tissue!r} has no cell types in the simulator config; known: {sorted(tissues)}")
    return list(tissues[tissue])
