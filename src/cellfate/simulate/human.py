"""A human sample for the cross-species demo: the mouse corpus' biology, expressed in human genes.

The cells follow the very expression model of the mouse mini-corpus (same cell types, same
marker programs), carried to human genes through the real Ensembl BioMart homology table: a mouse
gene's share of the transcriptome goes to its human ortholog, split evenly where it has several,
and is lost where it has none. Human genes without any mouse ortholog are added with their own
share, as a real human sample holds them. Gene ids are real ENSG ids (some with a ``.N`` version
suffix, as many files carry them), symbols in ``var['feature_name']``.

Because the truth is the mouse model's, a correct ortholog conversion followed by the mouse model
should recover the cell types, and the fraction of genes and counts lost is known by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfate.genes import human_gene_classes
from cellfate.genes import mouse_orthology_table
from cellfate.io import write_h5ad, write_table
from cellfate.simulate.corpus import corpus_model, sample_rng
from cellfate.simulate.expression import ExpressionModel, random_barcodes

HUMAN_ONLY_SHARE = 0.06  # transcriptome share of human genes that have no mouse ortholog


def _human_genes(
    model: ExpressionModel, n_human_only: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, sp.csr_matrix]:
    """Human genes of the sample and the (mouse model genes x human genes) share matrix."""
    table = mouse_orthology_table().dropna(subset=["human_gene_id"])
    pairs = table[table["gene_id"].isin(model.genes.index)]
    orthologs = pairs.drop_duplicates("human_gene_id")[["human_gene_id", "human_symbol"]]
    classes = human_gene_classes()
    lonely = classes.index[
        (classes["homology"] == "no_ortholog")
        & classes["human_symbol"].notna()
        & classes.index.str.match(r"ENSG\d{11}$")
    ]
    extra = rng.choice(np.asarray(lonely), size=min(n_human_only, len(lonely)), replace=False)
    genes = (
        pd.concat([orthologs.set_index("human_gene_id")["human_symbol"], classes.loc[np.sort(extra), "human_symbol"]])
        .rename("symbol")
        .to_frame()
    )
    genes = genes[~genes.index.duplicated()].sort_index()
    genes["is_mitochondrial"] = genes["symbol"].fillna("").str.startswith("MT-")
    row = model.genes.index.get_indexer(pairs["gene_id"])
    col = genes.index.get_indexer(pairs["human_gene_id"])
    per_gene = np.bincount(row, minlength=len(model.genes)).astype(float)
    share = sp.csr_matrix((1.0 / per_gene[row], (row, col)), shape=(len(model.genes), len(genes)))
    return genes, share


def simulate_human_sample(
    seed: int,
    sample_id: str,
    cell_types: list[str],
    n_cells: int,
    *,
    model_cell_types: list[str],
    n_genes: int,
    n_human_only: int = 400,
    median_library_size: float = 3000.0,
    low_count_fraction: float = 0.03,
) -> ad.AnnData:
    """Raw human counts (CSR int32, ENSG var index) with ``obs['cell_type']`` as the truth."""
    model = corpus_model(model_cell_types, n_genes, seed)
    rng = sample_rng(seed, f"human:{sample_id}")
    genes, share = _human_genes(model, n_human_only, rng)
    proportions = np.asarray(model.proportions @ share.toarray())
    only = np.asarray(share.sum(axis=0)).ravel() == 0  # human genes without a mouse ortholog
    baseline = rng.lognormal(0.0, 1.5, size=int(only.sum()))
    proportions = proportions / proportions.sum(axis=1, keepdims=True) * (1 - HUMAN_ONLY_SHARE)
    proportions[:, only] = HUMAN_ONLY_SHARE * baseline / baseline.sum()
    human = ExpressionModel(genes=genes, cell_types=list(model_cell_types), proportions=proportions)

    type_index = np.array([model_cell_types.index(t) for t in cell_types])
    cell_type_idx = type_index[
        rng.choice(len(cell_types), size=n_cells, p=rng.dirichlet(np.full(len(cell_types), 3.0)))
    ]
    library = rng.lognormal(np.log(median_library_size), 0.45, size=n_cells)
    low = rng.random(n_cells) < low_count_fraction
    library[low] = rng.uniform(60, 250, size=int(low.sum()))
    counts = human.sample(cell_type_idx, library, rng)

    barcodes = [f"{b}-1" for b in random_barcodes(n_cells, rng)]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(
                np.asarray(model_cell_types)[cell_type_idx], categories=sorted(set(cell_types))
            ),
            "sim_quality": np.where(low, "low_counts", "ok"),
            "organism": "Homo sapiens",
            "is_primary_data": True,
        },
        index=pd.Index(barcodes, name="barcode"),
    )
    names = [f"{g}.{1 + k % 4}" if k % 5 == 2 else g for k, g in enumerate(genes.index)]  # some versioned ids
    var = pd.DataFrame({"feature_name": genes["symbol"].fillna("").to_numpy()}, index=pd.Index(names, name="gene_id"))
    adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)
    adata.uns["sample_id"] = sample_id
    return adata


def human_sample(sim: Mapping[str, Any], sample: str, h5ad: str, truth: str) -> None:
    """Rule simulate_human_sample: the demo's human h5ad (raw counts in X) and its truth table."""
    corpus = sim["corpus"]
    human = sim.get("human") or {}
    tissue = human.get("tissue", "spleen")
    model_types = sorted({t for types in corpus["tissues"].values() for t in types})
    adata = simulate_human_sample(
        sim["seed"],
        sample,
        list(corpus["tissues"][tissue]),
        int(human.get("n_cells", 300)),
        model_cell_types=model_types,
        n_genes=corpus["n_genes"],
        n_human_only=int(human.get("n_human_only_genes", 400)),
    )
    adata.obs["tissue"] = tissue
    write_table(adata.obs.reset_index()[["barcode", "cell_type", "sim_quality"]], truth)
    write_h5ad(adata, h5ad)
