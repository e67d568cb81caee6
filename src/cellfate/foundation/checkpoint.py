"""Resumable training state, written atomically.

A checkpoint holds everything a run needs to continue as if never stopped: model, optimizer and
scheduler states, the step, the position in the batch stream (epoch, batch), the history so far,
and every rank's random-number states (dropout draws from torch's global generator; masks are
re-derived from the seed and the batch position, so they need no state). A fingerprint of the
settings that shape the trajectory is stored too: resuming under other settings is refused
rather than silently mixing two runs.

The file is written under a temporary name and renamed (``cellfate.io.atomic_path``): a job
killed while writing leaves the previous checkpoint intact. Only plain containers and tensors are
stored, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellfate.errors import CellfateError
from cellfate.io import atomic_path

LATEST = "latest.pt"


def rng_state() -> dict[str, Any]:
    """This process's Python, numpy, torch and CUDA generator states, as plain data."""
    version, state, gauss = random.getstate()
    legacy = np.random.get_state(legacy=False)
    return {
        "python": [version, list(state), gauss],
        "numpy": {
            "key": legacy["state"]["key"].tolist(),
            "pos": legacy["state"]["pos"],
            "has_gauss": legacy["has_gauss"],
            "gauss": legacy["gauss"],
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np.asarray(state["numpy"]["key"], dtype=np.uint32), "pos": state["numpy"]["pos"]},
            "has_gauss": state["numpy"]["has_gauss"],
            "gauss": state["numpy"]["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``directory/latest.pt`` atomically and return the path."""
    path = Path(directory) / LATEST
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The latest checkpoint in ``directory`` (on CPU), or None when there is none yet."""
    path = Path(directory) / LATEST
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a torn or foreign file: say which, do not guess
        raise CellfateError(
            f"checkpoint cannot be read ({type(err).__name__}); delete it to start afresh", path
        ) from None


def fingerprint_change(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """What differs between a checkpoint's training settings and this run's (None: nothing).

    A checkpoint only resumes under the settings that shaped its trajectory. One written under
    others belongs to a run whose outputs are being remade (Snakemake reruns pretraining when its
    corpus, dictionary or settings change), so the caller starts afresh and says why.
    """
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if not changed:
        return None
    key = changed[0]
    return (f"it was written with {key}={saved.get(key)!r} but this run has {key}={current.get(key)!r} "
            f"({len(changed)} setting(s) differ)")
