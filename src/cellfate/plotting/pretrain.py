"""The pretraining curve: is the model learning, at what learning rate, and how fast."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from cellfate.plotting.style import PALETTE, plt, save


def training_curve(
    history_tsv: str | os.PathLike[str], heldout_tsv: str | os.PathLike[str], path: str | os.PathLike[str]
) -> None:
    """Train and held-out MLM loss by step, the learning-rate schedule, and throughput in tokens/s."""
    history = pd.read_csv(history_tsv, sep="\t")
    heldout = pd.read_csv(heldout_tsv, sep="\t")
    train = history.dropna(subset=["train_loss"])
    evals = history.dropna(subset=["heldout_loss"])
    fig, (ax_loss, ax_lr, ax_speed) = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"width_ratios": [2, 1, 1]})
    ax_loss.plot(train["step"], train["train_loss"], color=PALETTE[0], lw=1, alpha=0.5, label="train (per log window)")
    if len(train) >= 5:
        span = max(len(train) // 20, 2)
        ax_loss.plot(
            train["step"], train["train_loss"].ewm(span=span).mean(), color=PALETTE[0], lw=2, label="train (smoothed)"
        )
    ax_loss.plot(evals["step"], evals["heldout_loss"], "o-", color=PALETTE[1], ms=4, label="held-out")
    final = float(heldout["heldout_mlm_loss"].iloc[-1]) if len(heldout) else math.nan
    title = "masked-gene modelling loss"
    if np.isfinite(final):
        title += f" (final held-out {final:.3f}, perplexity {math.exp(final):.1f})"
    if "unigram_cross_entropy" in heldout and len(heldout):  # the context-free baseline it must beat
        row = heldout.iloc[-1]
        ax_loss.axhline(row["unigram_cross_entropy"], color="0.4", ls="--", lw=1,
                        label=f"unigram baseline {row['unigram_cross_entropy']:.2f}")
        title += (f"\n{row['nats_below_unigram']:.2f} nats below unigram; cell-type kNN {row['knn_accuracy']:.2f} "
                  f"(untrained {row.get('knn_accuracy_untrained', math.nan):.2f}, chance {row['knn_majority_share']:.2f})")
    ax_loss.set_title(title, fontsize=10)
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("cross-entropy (nats)")
    ax_loss.legend(fontsize=8)
    ax_lr.plot(train["step"], train["lr"], color=PALETTE[2])
    ax_lr.set_title("learning rate")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax_speed.plot(train["step"], train["tokens_per_s"], color=PALETTE[3])
    ax_speed.set_title("throughput (all processes)")
    ax_speed.set_xlabel("optimizer step")
    ax_speed.set_ylabel("tokens / s")
    ax_speed.set_ylim(bottom=0)
    save(fig, path)
