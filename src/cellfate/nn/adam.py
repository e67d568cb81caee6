"""Adam without ``torch.optim.Optimizer``'s first-use import of ``torch._dynamo``.

Every method of ``torch.optim.Optimizer`` (its constructor included) is wrapped to disable
dynamo, and that wrapper imports ``torch._dynamo`` the first time it runs, in every job. Measured
in the workflow (the demo's ``deepcolor`` rule, three alternating runs of each): with
``torch.optim.Adam`` the job took 1.1-2.1 more CPU-seconds (about +17% of the 10 CPU-s of the whole
``snakemake`` call) and 64 MB more peak memory (551-557 against 487-490 MB); every VICDYF,
DeepCOLOR and environment fit of the demo pays that. The update here is torch's own
(``torch.optim.adam.adam``, the documented functional form that ``torch.optim.Adam.step`` calls,
with the same state tensors), so the steps are bit-identical to ``torch.optim.Adam`` with the same
``fused`` setting; only the bookkeeping around it is ours.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.adam import adam


class Adam:
    """Adam (Kingma & Ba) over ``params``: ``zero_grad`` and ``step`` as in ``torch.optim.Adam``.

    Parameters without a gradient at a step are skipped, as torch skips them.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, fused: bool = False) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps, self.fused = lr, betas, eps, fused
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        # the step counters torch keeps: float32 on the parameter's device when fused, else a CPU scalar
        step_dtype = torch.float32 if fused or torch.get_default_dtype() != torch.float64 else torch.float64
        self.steps = [torch.zeros((), dtype=step_dtype, device=p.device if fused else "cpu") for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients (or zero them in place with ``set_to_none=False``), as torch does."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        live = [k for k, p in enumerate(self.params) if p.grad is not None]
        adam([self.params[k] for k in live], [self.params[k].grad for k in live], [self.exp_avg[k] for k in live],
             [self.exp_avg_sq[k] for k in live], [], [self.steps[k] for k in live], foreach=False,
             capturable=False, differentiable=False, fused=self.fused, grad_scale=None, found_inf=None,
             has_complex=False, amsgrad=False, beta1=self.betas[0], beta2=self.betas[1], lr=self.lr,
             weight_decay=0.0, eps=self.eps, maximize=False)
