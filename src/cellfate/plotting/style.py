"""Shared figure conventions: a headless backend, one palette, atomic saving."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # workflows run without a display
import matplotlib.pyplot as plt  # noqa: E402

from cellfate.io import atomic_path  # noqa: E402

PALETTE = plt.get_cmap("tab10").colors


def save(fig: plt.Figure, path: str | os.PathLike[str], dpi: int = 130) -> None:
    """Save a figure atomically as PNG and release it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
