"""Tokenization figures: how long the cells' token sequences are, and how exact the medians are.

Reads only the small side files (lengths .npy, the accuracy TSV), never the shards.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cellfate.plotting.style import PALETTE, plt, save


MAX_CURVES = 12  # beyond this many samples, curves are per source ("source/sample" labels)


def length_distributions(lengths: Sequence[str | os.PathLike[str]], labels: Sequence[str],
                         path: str | os.PathLike[str], max_length: int | None = None) -> None:
    """Histogram of token lengths per sample (per source when there are many), and the share cut at the maximum."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1]})
    arrays = [np.load(p) for p in lengths]
    unit = "sample"
    if len(arrays) > MAX_CURVES:
        unit = "source"
        groups: dict[str, list[np.ndarray]] = {}
        for values, label in zip(arrays, labels):
            groups.setdefault(str(label).split("/")[0], []).append(values)
        labels = list(groups)
        arrays = [np.concatenate(parts) for parts in groups.values()]
    top = max([max_length or 0] + [int(a.max()) for a in arrays if a.size])
    bins = np.linspace(0, max(top, 1), 50)
    shares = []
    for k, (values, label) in enumerate(zip(arrays, labels)):
        left.hist(values, bins=bins, histtype="step", color=PALETTE[k % len(PALETTE)], label=f"{label} (n={values.size})")
        shares.append(float((values >= top).mean()) if values.size else 0.0)
    if max_length:
        left.axvline(max_length, color="grey", ls="--", lw=1)
    left.set_xlabel("tokens per cell")
    left.set_ylabel("cells")
    left.set_title(f"token lengths per {unit}")
    left.legend(fontsize=7)
    colors = [PALETTE[k % len(PALETTE)] for k in range(len(labels))]
    right.barh(range(len(labels)), [100 * s for s in shares], color=colors)
    for k, share in enumerate(shares):
        right.text(1, k, f"{100 * share:.1f}%", va="center", fontsize=8)
    right.set_yticks(range(len(labels)), [str(label).split("/")[-1][:24] for label in labels], fontsize=7)
    right.set_xlabel("cells at the maximum length (%)")
    right.set_xlim(0, 100)
    right.invert_yaxis()  # same order as the legend
    right.set_title("cells truncated")
    save(fig, path)


def median_accuracy(table: str | os.PathLike[str], path: str | os.PathLike[str], bound: float = 0.01) -> None:
    """Two-pass (map-reduce) median against an in-memory exact median per gene, and the relative error."""
    frame = pd.read_csv(table, sep="\t")
    checked = frame[frame["checked"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.loglog(frame["exact"], frame["sketch"], ".", ms=3, color=PALETTE[0])
    lims = [frame[["exact", "sketch"]].min().min(), frame[["exact", "sketch"]].max().max()]
    left.plot(lims, lims, color="grey", lw=1)
    left.set_xlabel("exact median (count / n_counts x 10,000)")
    left.set_ylabel("median from the two map-reduce passes")
    left.set_title(f"{len(frame)} genes")
    right.semilogx(frame["n_cells"], 100 * frame["rel_error"], ".", ms=3, color=PALETTE[1])
    right.axhline(100 * bound, color="red", ls="--", lw=1, label=f"bound {100 * bound:g}%")
    if len(checked):
        right.axvline(checked["n_cells"].min(), color="grey", ls=":", lw=1, label="checked genes from here")
        right.set_title(f"max error {100 * checked['rel_error'].max():.3f}% over {len(checked)} checked genes")
    right.set_xlabel("cells where the gene is detected")
    right.set_ylabel("relative error (%)")
    right.legend(fontsize=7)
    save(fig, path)
