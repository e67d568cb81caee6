"""The fully connected block every network of the dynamics and spatial models is built of."""

from __future__ import annotations

from torch import nn


def mlp(n_in: int, n_hidden: int, n_layers: int, n_out: int | None = None) -> nn.Sequential:
    """(Linear, LayerNorm without affine, ReLU) x ``n_layers``, then a Linear to ``n_out`` if given.

    The LayerNorm without its own scale keeps each hidden layer on one scale whatever the input's
    library size, and leaves the scaling to the next Linear. The layers are created in order, so a
    seeded build draws the same initial weights as the models' former copies of this block, and
    one flat ``nn.Sequential`` keeps their state-dict keys (``0.weight``, ``3.weight``, ...): saved
    models load unchanged.
    """
    layers: list[nn.Module] = []
    for k in range(n_layers):
        layers += [nn.Linear(n_in if k == 0 else n_hidden, n_hidden), nn.LayerNorm(n_hidden, elementwise_affine=False),
                   nn.ReLU()]
    if n_out is not None:
        layers.append(nn.Linear(n_hidden, n_out))
    return nn.Sequential(*layers)
