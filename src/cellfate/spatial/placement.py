"""Where a modelled cell lives, measured from the genes its dynamics model does not read.

The environment analysis asks whether a cell's neighbourhood explains its dynamics beyond its own
state. DeepCOLOR places every cell by all of its expression, so a lineage cell is placed mostly by
its fate and state genes (cells of a fate go where that fate is common): its colocalization is then
largely a function of its state (the test cannot separate the two), and where fate and niche
disagree the cell lands in the wrong niche, which mixes the partners' columns.

The state-blind placement maps the modelled cells again from the rest of their expression only:
the genes the dynamics model does not read and that these cells do express (on real data, niche-
or signal-induced genes outside the modelled programme; nothing of the simulator is assumed). A
spot's counts of those genes are mostly the partner cells' own expression, so that part is taken
out first: each spot's partner amounts are fitted (non-negative least squares) on the genes the
modelled cells do not express at all, with the partner types' mean reference profiles, and their
expected counts are subtracted, and the remainder is smoothed over neighbouring spots (it is a few
captured cells' counts over the noise of what was subtracted). Each modelled cell is then matched
to the spots whose remainder correlates best with its own counts (a softmax over spots). The
partner maps are unchanged. The ``niche`` alternative skips the placement: from the same
remainder it learns, over spots, a regression of each partner's mapped log density, and applies it
to each cell, so each column predicts its own partner.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import nnls
from scipy.spatial import cKDTree

from cellfate.errors import CellfateError
from cellfate.spatial.cell_level import expression_match


def placement_genes(x_cells: np.ndarray, dynamics: np.ndarray, min_share: float = 0.05) -> np.ndarray:
    """Indices of the genes the dynamics model does not read (``~dynamics``) that at least
    ``min_share`` of the modelled cells express: the only genes that can place a cell without
    its state. A gene none of them expresses cannot say where one of them lives."""
    share = (np.asarray(x_cells) > 0).mean(0)
    return np.flatnonzero(~np.asarray(dynamics, dtype=bool) & (share >= min_share))


def partner_amounts(spot_counts: np.ndarray, profiles: np.ndarray) -> np.ndarray:
    """Spots x partner types: non-negative amounts a with spot counts ~ a @ profiles (types x genes).

    Fitted per spot on genes the modelled cells do not express, so the amounts are the partners'
    alone and the modelled cells' own niche expression cannot leak into them."""
    return np.stack([nnls(profiles.T, row)[0] for row in np.asarray(spot_counts, dtype=np.float64)])


def _standardise(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(0)) / np.maximum(a.std(0), 1e-12)


def smooth_over_spots(values: np.ndarray, xy: np.ndarray, sigma: float) -> np.ndarray:
    """Spots x features averaged with a Gaussian kernel of ``sigma`` median nearest-spot distances.

    A spot's residual niche expression comes from a few captured cells over the noise of the
    partner counts subtracted from it; niches span several spots, so neighbours share it."""
    if sigma <= 0:
        return values
    tree = cKDTree(xy)
    distance, _ = tree.query(xy, k=2)
    width = sigma * float(np.median(distance[:, 1]))
    # the kernel is cut at 4 widths (weight < 4e-4): sparse, never a spots x spots dense matrix
    pairs = tree.sparse_distance_matrix(tree, 4.0 * width, output_type="coo_matrix")  # keeps i == j (distance 0)
    kernel = sparse.csr_matrix((np.exp(-pairs.data**2 / (2.0 * width**2)), (pairs.row, pairs.col)), shape=pairs.shape)
    return np.asarray(kernel @ values) / np.asarray(kernel.sum(1))


def niche_residual(x_cells: np.ndarray, x_partners: np.ndarray, partner_labels: np.ndarray, partners: list[str],
                   spot_counts: np.ndarray, dynamics: np.ndarray,
                   min_share: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(placement genes, spots x those genes): what is left of each spot's counts of the genes the
    modelled cells express outside the dynamics once the partners' expected counts are removed.

    ``x_cells``, ``x_partners`` and ``spot_counts`` are raw counts over the same genes;
    ``dynamics`` marks the genes the dynamics model reads."""
    x_cells, x_partners = np.asarray(x_cells, dtype=np.float64), np.asarray(x_partners, dtype=np.float64)
    spot_counts = np.asarray(spot_counts, dtype=np.float64)
    genes = placement_genes(x_cells, dynamics, min_share)
    if len(genes) < 2:
        raise CellfateError(f"state-blind placement needs genes the dynamics model does not read that the modelled "
                            f"cells express; found {len(genes)} (spatial.environment.placement)")
    profiles = np.stack([x_partners[np.asarray(partner_labels) == name].mean(0) for name in partners])
    others = np.setdiff1d(np.flatnonzero((x_cells.sum(0) == 0) & (profiles.sum(0) > 0)), genes)
    if len(others) < len(partners):
        raise CellfateError(f"state-blind placement needs partner genes the modelled cells do not express to "
                            f"estimate each spot's partners; found {len(others)}")
    amounts = partner_amounts(spot_counts[:, others], profiles[:, others])
    return genes, np.maximum(spot_counts[:, genes] - amounts @ profiles[:, genes], 0.0)


def state_blind_map(x_cells: np.ndarray, x_partners: np.ndarray, partner_labels: np.ndarray, partners: list[str],
                    spot_counts: np.ndarray, dynamics: np.ndarray, temperature: float = 0.1,
                    xy: np.ndarray | None = None, smoothing: float = 0.0, min_share: float = 0.05) -> np.ndarray:
    """Cells x spots: each modelled cell matched (softmax of correlations) to what is left of each
    spot's expression of its non-dynamics genes once the partners' expected counts are removed,
    smoothed over ``smoothing`` nearest-spot distances (needs ``xy``). Rows sum to 1."""
    genes, rest = niche_residual(x_cells, x_partners, partner_labels, partners, spot_counts, dynamics, min_share)
    if smoothing > 0 and xy is not None:
        rest = smooth_over_spots(rest, np.asarray(xy, dtype=np.float64), smoothing)
    return expression_match(np.asarray(x_cells, dtype=np.float64)[:, genes], rest, temperature)


def niche_condition(x_cells: np.ndarray, x_partners: np.ndarray, partner_labels: np.ndarray, partners: list[str],
                    spot_counts: np.ndarray, dynamics: np.ndarray, partner_density: np.ndarray,
                    min_share: float = 0.05) -> np.ndarray:
    """Cells x partners: each partner's log density predicted from the cell's non-dynamics genes.

    A ridge regression learnt over spots (log of each partner's mapped cells per spot, from the
    partner maps, on the standardised log residual niche expression) is applied to the cells'
    standardised log expression of the same genes. Each column is then a prediction of its own
    partner, not a function of one shared placement, in which every column carries a share of the
    partner that best decides where a cell is put."""
    from sklearn.linear_model import RidgeCV

    genes, rest = niche_residual(x_cells, x_partners, partner_labels, partners, spot_counts, dynamics, min_share)
    target = np.log(np.maximum(np.asarray(partner_density, dtype=np.float64), 1e-3))
    model = RidgeCV(alphas=np.logspace(-2, 3, 12)).fit(_standardise(np.log1p(rest)), target)
    return model.predict(_standardise(np.log1p(np.asarray(x_cells, dtype=np.float64)[:, genes])))


def mean_distance_from_home(p_cells: np.ndarray, xy: np.ndarray, home: np.ndarray) -> tuple[float, float]:
    """(mean over cells of the expected distance of the mapped spot from the home spot, mean distance
    of the mapped expected position from home): how far a map places cells from where they live."""
    p = np.asarray(p_cells, dtype=np.float64)
    d = np.sqrt(((xy[None, :, :] - xy[home][:, None, :]) ** 2).sum(-1))
    expected = p @ xy
    return float((p * d).sum(1).mean()), float(np.sqrt(((expected - xy[home]) ** 2).sum(1)).mean())
