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

#: Close subtypes of a type above (Cell Ontology labels), as hard to tell apart as CD4 from CD8 T
#: cells in real PBMCs (``cellfate.simulate.calibration``): the parent's program plus a sibling
#: program. ``markers``: real mouse genes -> (log2 fold over the sibling, share of the subtype's
#: cells detecting it), both measured for CD4, CD8A, CD8B in pbmc68k_reduced: such markers are
#: weak (CD4 mRNA is missed in most CD4 T cells). ``up_weight``: share of sibling DE genes up in it.
SUBTYPES: dict[str, dict[str, object]] = {
    "CD4-positive, alpha-beta T cell": {
        "parent": "T cell", "panglaodb": "T helper cells", "markers": {"Cd4": (2.3, 0.28)}, "up_weight": 0.29,
    },
    "CD8-positive, alpha-beta T cell": {
        "parent": "T cell", "panglaodb": "T cytotoxic cells", "markers": {"Cd8a": (2.5, 0.40), "Cd8b1": (2.9, 0.56)},
        "up_weight": 0.71,
    },
}

#: Beta(SUBTYPE_ACTIVITY, 1) activity of a cell's subtype program: at 0.6 the PCA + logistic
#: baseline tells simulated CD4 from CD8 T cells of one source with macro-F1 0.80-0.87 (seeds
#: 0-2), as it does the real pbmc68k_reduced ones (0.84, 5-fold; benchmarks/corpus_calibration.py).
#: At 1.0 (uniform) it gets 0.93-0.95; with every cell at full activity, 1.0.
SUBTYPE_ACTIVITY = 0.6
#: The demo's median library size (``simulate_sample``), for genes set by their detection rate.
TYPICAL_LIBRARY = 3000.0

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
    #: log2 fold of each subtype's program over its siblings' midpoint (types x genes; None: no
    #: subtypes). A cell scales it by its own activity (:func:`subtype_activity`).
    state_fold: np.ndarray | None = None

    @classmethod
    def build(cls, genes: pd.DataFrame, cell_types: list[str], rng: np.random.Generator,
              marker_fold: float = 25.0, de_scale: float = 0.6, mito_fraction: float = 0.03) -> ExpressionModel:
        """Baseline proportions, then per type a DE program calibrated on real PBMCs, plus markers up.

        Each type changes a share of genes drawn from the seven PBMC types' shares
        (``cellfate.simulate.calibration``; ``de_scale`` multiplies it), up or down by |log2 fold
        changes| drawn from their pooled distribution; its six real markers are set to
        ``marker_fold`` x the mean baseline. Gene baselines are log-normal with the PBMC spread.
        A subtype (:data:`SUBTYPES`) takes its parent's program and adds a sibling program.
        """
        unknown = [t for t in cell_types if t not in CELL_TYPES and t not in SUBTYPES]
        if unknown:
            raise ValueError(f"unknown simulated cell types {unknown}; known: {sorted(CELL_TYPES) + sorted(SUBTYPES)}")
        symbol_pos = {s: i for i, s in enumerate(genes["symbol"])}
        base = _baseline(len(genes), symbol_pos, marker_fold, rng)
        mito = genes["is_mitochondrial"].to_numpy()
        programs: dict[str, np.ndarray] = {}
        props = np.empty((len(cell_types), len(genes)))
        for k, name in enumerate(cell_types):
            major = SUBTYPES[name]["parent"] if name in SUBTYPES else name
            if major not in programs:
                programs[major] = _type_program(major, base, symbol_pos, marker_fold, de_scale, rng)
                programs.update(_subtype_programs(major, cell_types, programs[major], symbol_pos, rng))
            w = programs[name].copy()
            w[mito] = 0.0
            w = w / w.sum() * (1.0 - mito_fraction)
            w[mito] = mito_fraction * base[mito] / base[mito].sum()
            props[k] = w
        state_fold = _state_fold(cell_types, programs, mito)
        return cls(genes=genes, cell_types=list(cell_types), proportions=props, state_fold=state_fold)

    def cell_proportions(self, type_index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Per-cell proportions (cells x genes): the type's, with subtype programs at each cell's activity.

        Draws from ``rng`` only when the model has subtypes, so other corpora stay as they were.
        """
        proportions = self.proportions[type_index].copy()
        if self.state_fold is None:
            return proportions
        activity = subtype_activity(len(type_index), rng)
        proportions *= np.exp2((activity[:, None] - 1.0) * self.state_fold[type_index])
        return proportions / proportions.sum(axis=1, keepdims=True)

    def sample(self, type_index: np.ndarray, library_size: np.ndarray, rng: np.random.Generator,
               proportions: np.ndarray | None = None) -> np.ndarray:
        """Negative-binomial counts (cells x genes, int32) for cells of the given types and sizes.

        ``proportions`` (cells x genes) overrides the type proportions, e.g. for damaged cells.
        """
        p = self.proportions[type_index] if proportions is None else proportions
        mean = p * library_size[:, None]
        rate = rng.gamma(self.dispersion, mean / self.dispersion)
        return rng.poisson(rate).astype(np.int32)


def _baseline(n_genes: int, symbol_pos: dict[str, int], marker_fold: float, rng: np.random.Generator) -> np.ndarray:
    """Every gene's expression outside its type's program: log-normal, housekeeping 50x, markers low.

    Markers are expressed at a low level everywhere (as real ones are, ambient RNA included) and
    ~2^4.5 = 23x higher in their type (the PBMC |log2FC| q90 is 3.0-4.8): the gene's median then
    comes from the many low cells, so rank-value encoding puts it near the top of its type's cells.
    With the random baseline instead, a marker absent elsewhere took its median from its own type
    and ranked mid-cell (Cd79a in the top 64 of only 7% of B cells).
    """
    base = rng.lognormal(0.0, calibration.PBMC_LOG_MEAN_SD, size=n_genes)
    for s in HOUSEKEEPING:
        base[symbol_pos[s]] *= 50.0
    for spec in CELL_TYPES.values():
        for m in spec["markers"]:
            if m in symbol_pos:
                base[symbol_pos[m]] = base.mean() * marker_fold / 2**4.5
    return base


def _type_program(name: str, base: np.ndarray, symbol_pos: dict[str, int], marker_fold: float, de_scale: float,
                  rng: np.random.Generator) -> np.ndarray:
    """One major type's unnormalised weights: a calibrated DE program, its markers up."""
    shares = list(calibration.PBMC_DE_SHARE.values())
    share = min(1.0, de_scale * shares[rng.integers(len(shares))])
    fold = calibration.draw_log2_fold_changes(len(base), share, rng)
    # housekeeping genes hold still (a 50x gene down 8-fold would free an eighth of the library:
    # every other gene "up")
    fold[[symbol_pos[s] for s in HOUSEKEEPING]] = 0.0
    w = base * np.exp2(fold)
    for m in CELL_TYPES[name]["markers"]:
        w[symbol_pos[m]] = base.mean() * marker_fold * rng.uniform(0.5, 1.5)
    return w


def _subtype_programs(parent: str, cell_types: list[str], weights: np.ndarray, symbol_pos: dict[str, int],
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The weights of ``parent``'s subtypes among ``cell_types``: its program times a sibling program.

    The subtypes share everything of the parent (markers included) and differ by
    :func:`calibration.draw_sibling_fold_changes`; each subtype's own markers are set to the level
    detected in the measured share of its cells, and to that over their measured fold in the
    siblings. Draws nothing when no subtype of ``parent`` is asked for.
    """
    names = [t for t, spec in SUBTYPES.items() if spec["parent"] == parent and t in cell_types]
    if not names:
        return {}
    up = [SUBTYPES[t]["up_weight"] for t in names]
    fold = calibration.draw_sibling_fold_changes(len(weights), up, calibration.PBMC_SIBLING_DE_SHARE, rng)
    stable = [symbol_pos[s] for s in HOUSEKEEPING] + [symbol_pos[m] for m in CELL_TYPES[parent]["markers"]]
    fold[:, stable] = 0.0
    programs = {name: weights * np.exp2(fold[k]) for k, name in enumerate(names)}
    for owner in names:
        for marker, (log2fc, detected) in SUBTYPES[owner]["markers"].items():
            level = _detected_level(detected) * weights.sum()
            for name in names:
                programs[name][symbol_pos[marker]] = level if name == owner else level / 2**log2fc
    return programs


def _state_fold(cell_types: list[str], programs: dict[str, np.ndarray], mito: np.ndarray) -> np.ndarray | None:
    """log2 of each subtype's weights over the geometric mean of its siblings' (0 elsewhere)."""
    if not any(t in SUBTYPES for t in cell_types):
        return None
    fold = np.zeros((len(cell_types), len(mito)))
    for k, name in enumerate(cell_types):
        if name in SUBTYPES:
            siblings = [t for t in cell_types if SUBTYPES.get(t, {}).get("parent") == SUBTYPES[name]["parent"]]
            midpoint = np.mean([np.log2(programs[t]) for t in siblings], axis=0)
            fold[k] = np.log2(programs[name]) - midpoint
    fold[:, mito] = 0.0
    return fold


def subtype_activity(n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """How strongly each cell runs its subtype's program: Beta(SUBTYPE_ACTIVITY, 1), in [0, 1].

    Real subtypes are not two points: naive CD8 T cells sit close to CD4 T cells, effector ones
    far (a cell-state continuum within each label). At activity 0 a cell is at its siblings'
    midpoint; at 1 it runs its full program.
    """
    return rng.beta(SUBTYPE_ACTIVITY, 1.0, size=n_cells)


def _detected_level(share: float, library: float = TYPICAL_LIBRARY, dispersion: float = 5.0) -> float:
    """The gene proportion a negative binomial (``dispersion``) needs to be non-zero in ``share`` of cells."""
    return dispersion * ((1.0 - share) ** (-1.0 / dispersion) - 1.0) / library


def random_barcodes(n: int, rng: np.random.Generator, length: int = 16) -> list[str]:
    """``n`` unique 10x-style nucleotide barcodes, in the order drawn."""
    letters = np.array(list("ACGT"))
    found: dict[str, None] = {}
    while len(found) < n:
        for row in letters[rng.integers(0, 4, size=(n, length))]:
            found.setdefault("".join(row))
    return list(found)[:n]
