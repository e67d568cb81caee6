"""The shared model parts (cellfate.nn): the epoch loop's NaN guard and early stopping, the device
resolver, and the layers/likelihoods both models build on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from cellfate.errors import CellfateError
from cellfate.nn.adam import Adam
from cellfate.nn.device import resolve_device
from cellfate.nn.layers import mlp
from cellfate.nn.likelihoods import kl_standard_normal, nb_nll, poisson_log_prob
from cellfate.nn.training import Phase, Stopping, fit_batches, run_phase


def _regression(n: int = 64, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    x = torch.randn(n, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n)
    return torch.nn.Linear(3, 1), x, y


def _phase(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, poison_at: int | None = None,
           evaluate=None) -> Phase:
    """Four batches an epoch; from global batch ``poison_at`` on the loss is NaN."""
    calls = {"n": 0}

    def losses():
        for idx in torch.arange(len(x)).chunk(4):
            calls["n"] += 1
            loss = ((module(x[idx]).squeeze(-1) - y[idx]) ** 2).mean()
            yield {"loss": loss * math.nan if poison_at is not None and calls["n"] > poison_at else loss}

    def run_epoch(optimizer: Adam, epoch: int) -> dict[str, float]:
        parts = fit_batches(optimizer, losses(), "loss")
        return {"loss": float(torch.stack([p["loss"] for p in parts]).mean())}

    return Phase("test", list(module.parameters()), epochs, 0.05, run_epoch, evaluate)


def test_nan_guard_restores_the_last_finite_state_and_reports_failure() -> None:
    module, x, y = _regression()
    history, finished = run_phase(module, _phase(module, x, y, 10, poison_at=4 * 3 + 2), Stopping(), progress=False)
    assert not finished and len(history) == 3  # three clean epochs, then NaN in the fourth
    assert all(torch.isfinite(p).all() for p in module.parameters())
    # the restored state is the one after epoch 3: rerunning three clean epochs gives it exactly
    again, x2, y2 = _regression()
    run_phase(again, _phase(again, x2, y2, 3), Stopping(), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), again.state_dict().values()))
    assert all(p.requires_grad for p in module.parameters())


def test_early_stopping_stops_after_patience_and_restores_the_best_state() -> None:
    module, x, y = _regression()
    scores = iter([5.0, 4.0, 4.5, 4.0, 3.9999, 7.0, 8.0])  # best at epoch 2 (4.0); 3.9999 is within min_delta
    states = []

    def evaluate() -> float:
        states.append({k: v.clone() for k, v in module.state_dict().items()})
        return next(scores)

    history, finished = run_phase(module, _phase(module, x, y, 50, evaluate=evaluate),
                                  Stopping(patience=3, min_delta=1e-3, enabled=True), progress=False)
    assert finished and len(history) == 5  # epochs 3, 4, 5 bring no relative improvement of 1e-3
    assert [r["eval_loss"] for r in history] == [5.0, 4.0, 4.5, 4.0, 3.9999]
    assert all(torch.equal(states[1][k], v) for k, v in module.state_dict().items())


def test_early_stopping_off_keeps_the_final_state_and_runs_every_epoch() -> None:
    module, x, y = _regression()
    scores = iter([1.0] + [2.0] * 9)
    history, _ = run_phase(module, _phase(module, x, y, 10, evaluate=lambda: next(scores)),
                           Stopping(patience=1, enabled=False), progress=False)
    assert len(history) == 10


def test_a_phase_freezes_what_it_does_not_train() -> None:
    module, x, y = _regression()
    bias = module.bias.detach().clone()
    seen = []
    phase = _phase(module, x, y, 2)
    phase.params = [module.weight]
    inner = phase.run_epoch

    def run_epoch(optimizer: Adam, epoch: int) -> dict[str, float]:
        seen.append(module.bias.requires_grad)
        return inner(optimizer, epoch)

    phase.run_epoch = run_epoch
    run_phase(module, phase, Stopping(), progress=False)
    assert seen == [False, False] and torch.equal(module.bias.detach(), bias) and module.bias.requires_grad


def test_device_resolver() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CellfateError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(CellfateError, match="no GPU"):
            resolve_device("cuda:0")


def test_mlp_and_likelihoods() -> None:
    net = mlp(5, 8, 2, 3)
    assert [type(m).__name__ for m in net] == ["Linear", "LayerNorm", "ReLU"] * 2 + ["Linear"]
    assert net(torch.randn(4, 5)).shape == (4, 3)
    x, mu, theta = torch.tensor([[0.0, 3.0, 17.0]]), torch.tensor([[1.5, 4.0, 10.0]]), torch.tensor([2.0, 0.5, 8.0])
    const = torch.lgamma(x + 1).sum(-1)
    expected = stats.nbinom.logpmf(x.numpy(), theta.numpy(), (theta / (theta + mu)).numpy()).sum()
    assert float(-nb_nll(x, mu, theta) - const) == pytest.approx(expected, abs=1e-4)
    assert np.allclose(poisson_log_prob(x, mu).numpy(), stats.poisson.logpmf(x.numpy(), mu.numpy()), atol=1e-5)
    assert float(kl_standard_normal(torch.zeros(1, 4), torch.ones(1, 4))) == 0.0
