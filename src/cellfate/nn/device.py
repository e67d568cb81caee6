"""The one reading of a ``device`` setting, for every model of the workflow."""

from __future__ import annotations

import torch

from cellfate.errors import CellfateError


def resolve_device(name: str = "auto", gpu: int | None = None) -> torch.device:
    """The torch device a setting names.

    ``auto``: the current GPU when PyTorch sees one, else the CPU. Otherwise ``cpu``, ``cuda`` or
    ``cuda:N`` (the models run on nothing else). ``auto`` and ``cuda`` mean GPU ``gpu`` (a process's
    local rank under torchrun), by default the current one, so the result always carries the index
    tensors report. A name torch does not know, or a GPU that is
    not visible, is a user error: one line at the start of the job, rather than a fit that runs for
    hours on the CPU or an error from deep inside torch.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise CellfateError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        raise CellfateError(f"device {name!r} was asked for but no GPU is visible to PyTorch")
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device() if gpu is None else gpu)
    if device.index >= torch.cuda.device_count():
        raise CellfateError(f"device {name!r} was asked for but PyTorch sees {torch.cuda.device_count()} GPU(s)")
    return device
