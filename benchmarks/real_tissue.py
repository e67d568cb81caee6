"""A spatial tissue built from REAL single cells, with a design unlike the project's simulators.

Why: DeepCOLOR's speed and map quality were measured on ``cellfate.simulate.tissue``, whose
cells and spots come from the same expression model the project wrote. Here every count is a
real 10x count and the spatial design is different, so neither the expression model nor the
layout can flatter the method that was tuned on the project's own tissues.

Design (all in :func:`real_tissue`):

- cells: scanpy's bundled ``pbmc68k_reduced`` (700 human PBMCs, 765 genes), raw counts recovered
  as ``round(expm1(raw.X) * n_counts / 1e4)``; the types (``bulk_labels``) with >= 30 cells.
- hold-out: each type's cells are split in half. One half (the *pool*) builds the spots; the
  other half is the reference given to the mapper, so no reference cell is in any spot.
- layout: no domains. Each type has a smooth preference field on the grid, a sum of three
  Gaussian bumps at random centres (sd 15-30% of the grid side); a spot's type composition is
  the softmax of the fields (sharpness 3), so types overlap in gradients.
- cells per spot: 1 + negative binomial (mean 7, dispersion 4); each cell drawn with replacement
  from its type's pool.
- capture: the summed counts are binomially thinned per spot and gene with probability
  ``efficiency_spot * bias_gene``: efficiency ~ Beta(6, 14) (mean 0.3), gene bias lognormal
  (sd 0.4, mean 1, capped so the probability stays <= 1): a platform effect the reference lacks.
- ``n_reference`` > the held-out half resamples the held-out cells (with replacement, each copy
  thinned to 80% of its counts): for time and memory at scale only, not for map quality.
"""

from __future__ import annotations

import numpy as np


def pbmc_counts(min_cells: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts cells x genes int, type labels, gene names) of pbmc68k_reduced's common types."""
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    x = adata.raw.X.toarray() if hasattr(adata.raw.X, "toarray") else np.asarray(adata.raw.X)
    counts = np.round(np.expm1(x) * adata.obs["n_counts"].to_numpy()[:, None] / 1e4).astype(np.int64)
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    types, n = np.unique(labels, return_counts=True)
    keep = np.isin(labels, types[n >= min_cells])
    return counts[keep], labels[keep], np.asarray(adata.raw.var_names)


def preference_fields(n_types: int, grid: int, rng: np.random.Generator) -> np.ndarray:
    """Spots x types: each type's smooth preference, three Gaussian bumps each."""
    xy = np.stack(np.meshgrid(np.arange(grid), np.arange(grid), indexing="xy"), -1).reshape(-1, 2) + 0.5
    fields = np.zeros((len(xy), n_types))
    for t in range(n_types):
        for _ in range(3):
            centre = rng.uniform(0, grid, size=2)
            sd = rng.uniform(0.15, 0.3) * grid
            fields[:, t] += np.exp(-((xy - centre) ** 2).sum(1) / (2 * sd**2))
    return fields


def split_half(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per type, a random half of the cells (pool) and the rest (reference): indices."""
    pool, ref = [], []
    for t in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == t))
        pool.append(idx[: len(idx) // 2])
        ref.append(idx[len(idx) // 2:])
    return np.sort(np.concatenate(pool)), np.sort(np.concatenate(ref))


def real_tissue(grid: int = 20, seed: int = 0, n_reference: int | None = None) -> dict:
    """Spots from real pooled cells in smooth overlapping gradients, and a held-out reference.

    Returns a dict: ``spots`` (spots x genes int32), ``cells`` (reference cells x genes int32),
    ``labels`` (reference types), ``types``, ``abundance`` (spots x types true cell counts),
    ``xy`` (spot coordinates) and ``genes``.
    """
    rng = np.random.default_rng(seed)
    counts, labels, genes = pbmc_counts()
    types = np.unique(labels)
    pool, ref = split_half(labels, rng)
    logits = 3.0 * preference_fields(len(types), grid, rng)
    comp = np.exp(logits - logits.max(1, keepdims=True))
    comp /= comp.sum(1, keepdims=True)
    n_cells = 1 + rng.negative_binomial(4, 4 / (4 + 7.0), size=len(comp))
    abundance = np.stack([rng.multinomial(n, w) for n, w in zip(n_cells, comp)])
    spots = np.zeros((len(comp), counts.shape[1]), dtype=np.int64)
    for k, t in enumerate(types):
        members = pool[labels[pool] == t]
        for s in np.flatnonzero(abundance[:, k]):
            spots[s] += counts[rng.choice(members, size=abundance[s, k])].sum(0)
    bias = rng.lognormal(-0.08, 0.4, size=counts.shape[1])
    efficiency = rng.beta(6, 14, size=len(comp))
    spots = rng.binomial(spots, np.minimum(efficiency[:, None] * bias[None, :], 1.0)).astype(np.int32)
    cells, ref_labels = counts[ref], labels[ref]
    if n_reference is not None and n_reference > len(ref):
        pick = rng.integers(0, len(ref), size=n_reference)
        cells, ref_labels = rng.binomial(counts[ref][pick], 0.8), labels[ref][pick]
    xy = np.stack(np.meshgrid(np.arange(grid), np.arange(grid), indexing="xy"), -1).reshape(-1, 2).astype(float)
    return {"spots": spots, "cells": cells.astype(np.int32), "labels": ref_labels, "types": types,
            "abundance": abundance, "xy": xy, "genes": genes}


def main() -> None:
    """Write one real-cell tissue as two h5ad files (spots, reference) for a look or another tool."""
    import argparse

    import anndata as ad
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for spots.h5ad and reference.h5ad")
    parser.add_argument("--grid", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", type=int, default=None, help="resample the reference to this many cells")
    args = parser.parse_args()
    tissue = real_tissue(args.grid, args.seed, args.reference)
    var = pd.DataFrame(index=tissue["genes"].astype(str))
    spots = ad.AnnData(tissue["spots"], var=var, obsm={"spatial": tissue["xy"]})
    spots.obsm["true_abundance"] = tissue["abundance"]
    reference = ad.AnnData(tissue["cells"], var=var, obs=pd.DataFrame({"cell_type": tissue["labels"]}))
    from pathlib import Path

    Path(args.out).mkdir(parents=True, exist_ok=True)
    spots.write_h5ad(Path(args.out) / "spots.h5ad")
    reference.write_h5ad(Path(args.out) / "reference.h5ad")


if __name__ == "__main__":
    main()
