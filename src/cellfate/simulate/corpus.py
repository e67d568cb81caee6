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
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfate.simulate.expression import SUBTYPES, ExpressionModel, choose_genes, random_barcodes


@dataclass(frozen=True)
class Technology:
    """How one source's protocol distorts the same biology (Svensson et al. 2017; Ding et al. 2020):

    ``depth`` scales the median library size; ``capture`` is the mean fraction of molecules caught
    (each cell's own efficiency ~ Beta around it, then binomial thinning); ``gene_bias_sd`` is the
    spread (natural log) of a gene-specific detection factor drawn once per source: protocols
    differ gene by gene (GC content, length, 3' bias), ~0.5-1 log units between platforms.
    """

    depth: float = 1.0
    capture: float = 1.0
    gene_bias_sd: float = 0.0


#: The demo sources' protocols: PanglaoDB (10x v2, the reference), Expression Atlas (a deeper
#: plate-based protocol with a strong gene bias), CELLxGENE (10x v3-like: a different gene bias,
#: lower capture). Cross-source classification is measured across these differences.
SOURCE_TECHNOLOGY = {
    "panglaodb": Technology(),
    "expression_atlas": Technology(depth=1.5, capture=0.8, gene_bias_sd=0.8),
    "cellxgene": Technology(depth=1.0, capture=0.6, gene_bias_sd=0.6),
}


def apply_technology(proportions: np.ndarray, library: np.ndarray, technology: Technology, source: str, seed: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gene-biased proportions, scaled libraries and per-cell capture efficiencies (None: all caught)."""
    bias_rng = sample_rng(seed, f"__technology__:{source}")  # one bias per source, shared by its samples
    bias = np.exp(bias_rng.normal(0.0, technology.gene_bias_sd, proportions.shape[1]))
    biased = proportions * bias
    biased /= biased.sum(axis=1, keepdims=True)
    capture = None  # every molecule caught: no thinning
    if technology.capture < 1.0:
        capture = rng.beta(20 * technology.capture, 20 * (1 - technology.capture), size=len(library))
    return biased, library * technology.depth, capture


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    """A generator that depends only on the global seed and the sample id (stable across runs)."""
    return np.random.default_rng([seed, zlib.crc32(sample_id.encode())])


def corpus_model(cell_types: list[str], n_genes: int, seed: int) -> ExpressionModel:
    """The expression model shared by all samples of a corpus."""
    rng = sample_rng(seed, "__model__")
    extra = [m for t in cell_types if t in SUBTYPES for m in SUBTYPES[t]["markers"]]
    genes = choose_genes(n_genes, rng, extra_symbols=extra)
    return ExpressionModel.build(genes, cell_types, rng)


def _damage(proportions: np.ndarray, damaged: np.ndarray, mito: np.ndarray, rng: np.random.Generator) -> None:
    """In place: a broken membrane loses cytoplasmic RNA, so mitochondrial reads dominate (30-60%)."""
    if not damaged.any():
        return
    share = rng.uniform(0.3, 0.6, size=damaged.sum())[:, None]
    block = proportions[damaged]
    block[:, ~mito] *= (1 - share) / block[:, ~mito].sum(axis=1, keepdims=True)
    block[:, mito] *= share / block[:, mito].sum(axis=1, keepdims=True)
    proportions[damaged] = block


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
    source: str | None = None,
) -> ad.AnnData:
    """Simulate one sample: raw integer counts (CSR) with ``obs`` holding the truth.

    obs: ``barcode``, ``cell_type`` (Cell Ontology label), ``sim_quality`` in {ok, damaged,
    low_counts}, ``sim_duplicate_of`` (empty here). var: Ensembl ids with ``symbol``. With a
    ``source`` named in :data:`SOURCE_TECHNOLOGY`, that protocol's depth, capture and gene bias apply.
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

    proportions = model.cell_proportions(cell_type_idx, rng)
    _damage(proportions, quality == "damaged", model.genes["is_mitochondrial"].to_numpy(), rng)
    technology = SOURCE_TECHNOLOGY.get(source) if source else None
    capture = None
    if technology is not None:  # library sizes are the molecules present; capture thins them
        proportions, library, capture = apply_technology(proportions, library, technology, source, seed, rng)
        library = library / technology.capture  # keep the median captured depth at depth x median
    counts = model.sample(cell_type_idx, library, rng, proportions=proportions)
    if capture is not None:
        counts = rng.binomial(counts, capture[:, None]).astype(np.int32)

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
