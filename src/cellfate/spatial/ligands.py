"""Ligand activity over colocalization edges: which signals plausibly pass between neighbours.

Input: a ligand-target regulatory-potential matrix (NicheNet's is the usual one; a user-supplied
TSV, targets as rows and ligands as columns, gene symbols). For every cell:

- receiver activity of ligand L: how enriched L's potential is among the cell's top-expressed
  target genes (mean potential over those genes / mean over all targets, minus 1, floored at 0);
  "top-expressed" is on expression standardised per gene across cells, so it means specific to
  the cell rather than merely abundant (housekeeping genes would otherwise win everywhere);
- sender expression of L: the cell's expression of the ligand gene relative to its 99th
  percentile across cells, clipped to [0, 1].

Each colocalization edge (i, j) contributes sender(i, L) x receiver(j, L) and the reverse; the sums
are grouped by (sender type, receiver type, ligand).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from cellfate.errors import CellfateError

log = logging.getLogger(__name__)


def read_ligand_target(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Targets x ligands, checked: numeric, finite, non-negative, unique names."""
    try:
        table = pd.read_csv(path, sep="\t", index_col=0)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise CellfateError(f"cannot read the ligand-target matrix: {err}", path) from None
    with open(path) as handle:
        header = handle.readline().rstrip("\n").split("\t")[1:]
    if len(set(header)) < len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise CellfateError(f"duplicate ligand {dup!r} in the ligand-target matrix", path)
    if table.shape[0] == 0 or table.shape[1] == 0:
        raise CellfateError("the ligand-target matrix is empty (expected targets as rows, ligands as columns)", path)
    bad = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if bad:
        raise CellfateError(f"non-numeric column(s) {bad[:3]} in the ligand-target matrix", path)
    values = table.to_numpy(dtype=float)
    if not np.isfinite(values).all() or (values < 0).any():
        raise CellfateError("the ligand-target matrix must hold finite, non-negative potentials", path)
    for what, names in (("target", table.index), ("ligand", table.columns)):
        if names.duplicated().any():
            raise CellfateError(f"duplicate {what} {names[names.duplicated()][0]!r} in the ligand-target matrix", path)
    table.index = table.index.astype(str)
    table.columns = table.columns.astype(str)
    return table


def receiver_activity(expression: pd.DataFrame, ligand_target: pd.DataFrame, n_top: int = 20) -> pd.DataFrame:
    """Cells x ligands: enrichment of each ligand's potential among the cell's top targets."""
    targets = expression.columns.intersection(ligand_target.index)
    if len(targets) == 0:
        raise CellfateError("no target gene of the ligand-target matrix is among the modelled genes")
    x = expression[targets].to_numpy(dtype=float)
    z = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    k = min(n_top, len(targets))
    top = np.argpartition(-z, k - 1, axis=1)[:, :k]
    w = ligand_target.loc[targets].to_numpy(dtype=float)
    mean_w = np.maximum(w.mean(0), 1e-12)
    act = w[top].mean(1) / mean_w - 1.0  # cells x ligands
    return pd.DataFrame(np.maximum(act, 0.0), index=expression.index, columns=ligand_target.columns)


def sender_expression(expression: pd.DataFrame, ligands: pd.Index) -> pd.DataFrame:
    """Cells x ligands (those among the modelled genes): expression / its 99th percentile, in [0, 1]."""
    present = pd.Index(ligands).intersection(expression.columns)
    x = expression[present].to_numpy(dtype=float)
    scale = np.maximum(np.quantile(x, 0.99, axis=0), 1e-12)
    return pd.DataFrame(np.clip(x / scale, 0.0, 1.0), index=expression.index, columns=present)


def ligand_activity(expression: pd.DataFrame, labels: pd.Series, edges: pd.DataFrame, ligand_target: pd.DataFrame,
                    n_top: int = 20, chunk: int = 200_000) -> pd.DataFrame:
    """(sender type, receiver type, ligand) co-activity summed over both directions of every edge.

    ``expression``: cells x genes (symbols) indexed by cell name; ``labels``: cell type per cell.
    Columns: sender_type, receiver_type, ligand, coactivity, n_edges, mean_coactivity, rank (within
    the type pair, 1 = strongest); sorted by coactivity.
    """
    recv = receiver_activity(expression, ligand_target, n_top)
    send = sender_expression(expression, ligand_target.columns)
    if send.shape[1] == 0:
        raise CellfateError("no ligand of the ligand-target matrix is among the modelled genes")
    recv = recv[send.columns]
    log.info("%d ligands and %d targets matched to the modelled genes", send.shape[1],
             len(expression.columns.intersection(ligand_target.index)))
    pos = pd.Series(np.arange(len(expression)), index=expression.index)
    S, R = send.to_numpy(), recv.to_numpy()
    lab = np.asarray(labels.loc[expression.index], dtype=str)
    i = pos.loc[edges["cell_i"]].to_numpy()
    j = pos.loc[edges["cell_j"]].to_numpy()
    senders, receivers = np.concatenate([i, j]), np.concatenate([j, i])
    pair = pd.MultiIndex.from_arrays([lab[senders], lab[receivers]])
    codes, uniques = pd.factorize(pair)
    sums = np.zeros((len(uniques), S.shape[1]))
    for s in range(0, len(senders), chunk):
        part = S[senders[s:s + chunk]] * R[receivers[s:s + chunk]]
        np.add.at(sums, codes[s:s + chunk], part)
    n_edges = np.bincount(codes, minlength=len(uniques))
    rows = []
    for k, (st, rt) in enumerate(uniques):
        for li, lig in enumerate(send.columns):
            rows.append((st, rt, lig, sums[k, li], int(n_edges[k])))
    out = pd.DataFrame(rows, columns=["sender_type", "receiver_type", "ligand", "coactivity", "n_edges"])
    out["mean_coactivity"] = out["coactivity"] / out["n_edges"].clip(lower=1)
    out["rank"] = out.groupby(["sender_type", "receiver_type"])["coactivity"].rank(ascending=False, method="first").astype(int)
    return out.sort_values("coactivity", ascending=False, ignore_index=True)
