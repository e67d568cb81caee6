"""The expression model shared by the simulators: cell-type programs and count sampling.

Counts are gamma-Poisson (negative binomial) draws around ``library size x gene proportion``,
the standard generative model of UMI data, so sparsity and mean-variance behave like droplet data.
Marker genes are real mouse genes, so a user can read the simulated biology.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cellfate.genes import mouse_gene_table, symbols_to_ids
from cellfate.simulate import calibration

#: Cell types (Cell Ontology labels) with real mouse marker genes and the names PanglaoDB uses.
CELL_TYPES: dict[str, dict[str, object]] = {
    "T cell": {"panglaodb": "T cells", "markers": ["Cd3e", "Cd3d", "Cd3g", "Cd2", "Lck", "Il7r"]},
    "B cell": {"panglaodb": "B cells", "markers": ["Cd79a", "Cd79b", "Cd19", "Ms4a1", "Pax5", "Ebf1"]},
    "macrophage": {"panglaodb": "Macrophages", "markers": ["Lyz2", "Cd68", "Adgre1", "C1qa", "C1qb", "Csf1r"]},
    "hepatocyte": {"panglaodb": "Hepatocytes", "markers": ["Alb", "Apoa1", "Ttr", "Apoc3", "Fgb", "Ahsg"]},
    "endothelial cell": {"panglaodb": "Endothelial cells", "markers": ["Pecam1", "Cdh5", "Kdr", "Emcn", "Cldn5", "Tie1"]},
    "fibroblast": {"panglaodb": "Fibroblasts", "markers": ["Col1a1", "Col1a2", "Dcn", "Lum", "Pdgfra", "Col3a1"]},
    "epithelial cell": {"panglaodb": "Epithelial cells", "markers": ["Epcam", "Krt8", "Krt18", "Krt19", "Cldn4", "Cdh1"]},
}

HOUSEKEEPING = ["Actb", "Gapdh", "B2m", "Malat1", "Rplp0", "Eef1a1"]


def choose_genes(n_genes: int, rng: np.random.Generator, extra_symbols: list[str] = ()) -> pd.DataFrame:
    """Pick ``n_genes`` real mouse genes: every marker, housekeeping and mitochondrial gene first.

    Returns a frame indexed by Ensembl id with ``symbol`` and ``is_mitochondrial``, in id order.
    """
    table = mouse_gene_table().dropna(subset=["symbol"])
    table = table[~table["symbol"].duplicated(keep="first")]
    wanted = [m for spec in CELL_TYPES.values() for m in spec["markers"]] + HOUSEKEEPING + list(extra_symbols)
    fixed = set(symbols_to_ids(wanted)) | set(table.index[table["is_mitochondrial"] & table["symbol"].str.match(r"mt-(Nd|Co|Atp|Cytb)")])
    if n_genes < len(fixed):
        raise ValueError(f"n_genes must be at least {len(fixed)} (markers + housekeeping + mitochondrial)")
    others = table.index.difference(pd.Index(sorted(fixed)))
    picked = rng.choice(np.asarray(others), size=n_genes - len(fixed), replace=False)
    return table.loc[sorted(fixed | set(picked)), ["symbol", "is_mitochondrial"]]


@dataclass(frozen=True)
class ExpressionModel:
    """Per-type gene proportions over a fixed gene set; rows of ``proportions`` sum to one."""

    genes: pd.DataFrame
    cell_types: list[str]
    proportions: np.ndarray  # types x genes
    dispersion: float = 5.0

    @classmethod
    def build(cls, genes: pd.DataFrame, cell_types: list[str], rng: np.random.Generator,
              marker_fold: float = 25.0, de_scale: float = 0.6, mito_fraction: float = 0.03) -> ExpressionModel:
        """Baseline proportions, then per type a DE program calibrated on real PBMCs, plus markers up.

        Each type changes a share of genes drawn from the seven PBMC types' shares
        (``cellfate.simulate.calibration``; ``de_scale`` multiplies it), up or down by |log2 fold
        changes| drawn from their pooled distribution; its six real markers are set to
        ``marker_fold`` x the mean baseline. Gene baselines are log-normal with the PBMC spread.
        """
        unknown = [t for t in cell_types if t not in CELL_TYPES]
        if unknown:
            raise ValueError(f"unknown simulated cell types {unknown}; known: {sorted(CELL_TYPES)}")
        n_genes = len(genes)
        base = rng.lognormal(0.0, calibration.PBMC_LOG_MEAN_SD, size=n_genes)
        symbol_pos = {s: i for i, s in enumerate(genes["symbol"])}
        for s in HOUSEKEEPING:
            base[symbol_pos[s]] *= 50.0
        # Markers are expressed at a low level everywhere (as real ones are, ambient RNA included)
        # and ~2^4.5 = 23x higher in their type (the PBMC |log2FC| q90 is 3.0-4.8): the gene's median
        # then comes from the many low cells, so rank-value encoding puts it near the top of its
        # type's cells. With the random baseline instead, a marker absent elsewhere took its median
        # from its own type and ranked mid-cell (Cd79a in the top 64 of only 7% of B cells).
        for spec in CELL_TYPES.values():
            for m in spec["markers"]:
                if m in symbol_pos:
                    base[symbol_pos[m]] = base.mean() * marker_fold / 2**4.5
        mito = genes["is_mitochondrial"].to_numpy()
        shares = list(calibration.PBMC_DE_SHARE.values())
        stable = np.array([symbol_pos[s] for s in HOUSEKEEPING])
        props = np.empty((len(cell_types), n_genes))
        for k, name in enumerate(cell_types):
            share = min(1.0, de_scale * shares[rng.integers(len(shares))])
            fold = calibration.draw_log2_fold_changes(n_genes, share, rng)
            fold[stable] = 0.0  # housekeeping genes hold still (a 50x gene down 8-fold would
            w = base * np.exp2(fold)  # free an eighth of the library: every other gene "up")
            for m in CELL_TYPES[name]["markers"]:
                w[symbol_pos[m]] = base.mean() * marker_fold * rng.uniform(0.5, 1.5)
            w[mito] = 0.0
            w = w / w.sum() * (1.0 - mito_fraction)
            w[mito] = mito_fraction * base[mito] / base[mito].sum()
            props[k] = w
        return cls(genes=genes, cell_types=list(cell_types), proportions=props)

    def sample(self, type_index: np.ndarray, library_size: np.ndarray, rng: np.random.Generator,
               proportions: np.ndarray | None = None) -> np.ndarray:
        """Negative-binomial counts (cells x genes, int32) for cells of the given types and sizes.

        ``proportions`` (cells x genes) overrides the type proportions, e.g. for damaged cells.
        """
        p = self.proportions[type_index] if proportions is None else proportions
        mean = p * library_size[:, None]
        rate = rng.gamma(self.dispersion, mean / self.dispersion)
        return rng.poisson(rate).astype(np.int32)


def random_barcodes(n: int, rng: np.random.Generator, length: int = 16) -> list[str]:
    """``n`` unique 10x-style nucleotide barcodes, in the order drawn."""
    letters = np.array(list("ACGT"))
    found: dict[str, None] = {}
    while len(found) < n:
        for row in letters[rng.integers(0, 4, size=(n, length))]:
            found.setdefault("".join(row))
    return list(found)[:n]
