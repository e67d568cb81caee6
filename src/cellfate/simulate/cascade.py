"""A second, independent differentiation design: a stochastic gene-regulatory cascade with a toggle.

Unlike :mod:`cellfate.simulate.bifurcation` (fixed sigmoid transcription programmes, one cell =
a point on a precomputed path, Poisson sampling around it), here nothing is scripted per lineage:

- a small regulatory network (dyngen-like modules) drives transcription: a progenitor factor P
  (on at the start, repressed by M), a maturation factor M (activated by P through a delay), and
  two fate factors X and Y, both activated by M and repressing each other (a toggle switch, so the
  fate is decided by noise, not drawn in advance); every other gene is a target of one factor
  (activated or repressed, Hill kinetics) or a housekeeping gene;
- each cell is one trajectory of the chemical Langevin equation du = (a(t) - beta u) dt + noise,
  ds = (beta u - gamma s) dt + noise, observed at its own random time; its counts are a binomial
  capture of its molecules with a per-cell capture efficiency;
- the truth is read off the trajectories: ``pseudotime`` (observation time / duration), the fate
  (which of X and Y wins by the end), the true ds/dt of the observed molecules, and the branch
  point: the median time at which cells commit (|X - Y| stays above half its final gap).

``branching=False`` removes the mutual repression (X and Y rise together): one lineage, no fate
decision, the negative control for "fluctuation peaks at the branch".
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from cellfate.simulate.corpus import sample_rng

FACTORS = ("P", "M", "X", "Y")


@dataclass(frozen=True)
class CascadeSpec:
    """Sizes, time scale and noise of the cascade simulation."""

    n_cells: int = 1000
    n_genes: int = 200
    duration: float = 30.0
    n_steps: int = 600
    capture: float = 0.03  # mean fraction of molecules counted
    molecules: float = 400.0  # typical spliced molecules of an active gene (few: intrinsic noise swamps ds/dt)
    branching: bool = True
    seed: int = 0


def _hill(x: np.ndarray, k: float, n: float = 4.0) -> np.ndarray:
    xn = np.power(np.maximum(x, 0.0), n)
    return xn / (xn + k**n)


def _network(spec: CascadeSpec, rng: np.random.Generator) -> pd.DataFrame:
    """One row per gene: its regulator (a factor or none), the sign, rates and maximal transcription."""
    n_targets = spec.n_genes - len(FACTORS)
    regulator = rng.choice(["P", "M", "X", "Y", ""], size=n_targets, p=[0.2, 0.15, 0.2, 0.2, 0.25])
    sign = np.where(rng.random(n_targets) < 0.8, 1, -1)
    genes = pd.DataFrame({
        "regulator": list(FACTORS) + list(regulator),
        "sign": [1] * len(FACTORS) + list(np.where(regulator == "", 0, sign)),
        "role": ["factor"] * len(FACTORS) + ["target"] * n_targets,
    }, index=pd.Index([f"F_{f}" for f in FACTORS] + [f"G{i:04d}" for i in range(n_targets)], name="gene_id"))
    genes["beta"] = rng.uniform(0.8, 2.5, spec.n_genes)
    genes["gamma"] = rng.uniform(0.15, 0.6, spec.n_genes)
    genes["alpha_max"] = spec.molecules * genes["gamma"] * rng.lognormal(0.0, 0.4, spec.n_genes)
    genes["k"] = rng.uniform(0.3, 0.6, spec.n_genes)  # Hill threshold, in units of the regulator's maximum
    # a fair toggle: X and Y share their kinetics, so noise alone picks the fate
    genes.loc["F_Y", ["beta", "gamma", "alpha_max"]] = genes.loc["F_X", ["beta", "gamma", "alpha_max"]].to_numpy()
    return genes


def _factor_activity(s_f: np.ndarray, s_max: np.ndarray) -> np.ndarray:
    return s_f / s_max


def _transcription(genes: pd.DataFrame, act: dict[str, np.ndarray], branching: bool) -> np.ndarray:
    """Transcription rate of every gene (cells x genes) from the factors' activities (each in ~[0, 1])."""
    k = genes["k"].to_numpy()
    a_max = genes["alpha_max"].to_numpy()
    n_cells = len(act["P"])
    rate = np.empty((n_cells, len(genes)))
    # the factors: P self-sustains until M represses it; M follows P with a delay (its own kinetics);
    # X and Y need M, each self-activates and, when branching, represses the other
    rate[:, 0] = a_max[0] * (0.2 + 0.8 * _hill(act["P"], 0.3)) * (1 - _hill(act["M"], 0.5))
    rate[:, 1] = a_max[1] * (1 - (1 - _hill(act["P"], 0.4)) * (1 - _hill(act["M"], 0.4)))  # latches on
    for j, (own, other) in ((2, ("X", "Y")), (3, ("Y", "X"))):
        drive = _hill(act["M"], 0.4) * (0.25 + 0.75 * _hill(act[own], 0.35))
        rate[:, j] = a_max[j] * drive * ((1 - _hill(act[other], 0.35)) if branching else 1.0)
    reg = genes["regulator"].to_numpy()[len(FACTORS):]
    sign = genes["sign"].to_numpy()[len(FACTORS):]
    off = len(FACTORS)
    for f in FACTORS:
        sel = np.flatnonzero(reg == f)
        h = _hill(act[f][:, None], k[off + sel][None, :])
        rate[:, off + sel] = a_max[off + sel] * np.where(sign[sel] > 0, 0.05 + 0.95 * h, 0.05 + 0.95 * (1 - h))
    house = np.flatnonzero(reg == "")
    rate[:, off + house] = a_max[off + house] * 0.5
    return rate


def _initial(genes: pd.DataFrame, n_cells: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Progenitors at the start: P high, M, X, Y low; targets at the matching steady state (noisy)."""
    act = {"P": np.ones(n_cells), "M": np.zeros(n_cells), "X": np.zeros(n_cells), "Y": np.zeros(n_cells)}
    rate = _transcription(genes, act, True) * rng.lognormal(0, 0.1, (n_cells, len(genes)))
    rate[:, 1:len(FACTORS)] = 0.0  # M, X and Y start silent
    return rate / genes["beta"].to_numpy(), rate / genes["gamma"].to_numpy()


def _run(spec: CascadeSpec, genes: pd.DataFrame, times: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Integrate every cell to the end; keep each cell's molecules at its own observation time."""
    beta, gamma = genes["beta"].to_numpy(), genes["gamma"].to_numpy()
    s_max = (genes["alpha_max"].to_numpy() / gamma)[: len(FACTORS)]
    u, s = _initial(genes, spec.n_cells, rng)
    dt = spec.duration / spec.n_steps
    obs_u, obs_s = u.copy(), s.copy()
    gap = np.zeros((spec.n_steps + 1, spec.n_cells))  # (X - Y) / max, to find commitment
    step_of = np.minimum(np.round(times / dt).astype(int), spec.n_steps)
    for step in range(spec.n_steps + 1):
        act = {f: _factor_activity(s[:, j], s_max[j]) for j, f in enumerate(FACTORS)}
        gap[step] = act["X"] - act["Y"]
        here = step_of == step
        obs_u[here], obs_s[here] = u[here], s[here]
        if step == spec.n_steps:
            break
        a = _transcription(genes, act, spec.branching)
        make, splice, decay = a * dt, beta * u * dt, gamma * s * dt
        noise = rng.standard_normal((3, *u.shape))
        u = np.maximum(u + make - splice + np.sqrt(make) * noise[0] - np.sqrt(splice) * noise[1], 0.0)
        s = np.maximum(s + splice - decay + np.sqrt(splice) * noise[1] - np.sqrt(decay) * noise[2], 0.0)
    return {"u": obs_u, "s": obs_s, "gap": gap}


def _commitment(gap: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Fate (X or Y, by the final sign) and the time after which |gap| stays above half its final size."""
    final = gap[-1]
    fate = np.where(final >= 0, "X", "Y")
    below = np.abs(gap) < 0.5 * np.abs(final)[None, :]
    last_below = len(gap) - 1 - np.argmax(below[::-1], axis=0)
    committed = np.where(below.any(0), last_below + 1, 0)
    return fate, committed * dt


def simulate_cascade(spec: CascadeSpec) -> ad.AnnData:
    """Simulate the cascade; counts in ``spliced``/``unspliced`` and the truth (same keys as the bifurcation).

    obs: ``pseudotime``, ``fate`` (X/Y), ``branch`` (progenitor before the branch point, else the
    fate), ``commit_time``, ``capture``. var: ``regulator``, ``sign``, ``role``, ``beta``, ``gamma``,
    ``fate_driver`` (X or Y for genes activated by that fate's factor, else ""). layers:
    ``true_velocity`` (beta u - gamma s of the observed molecules, times the capture: count units).
    uns['simulation']['branch_time']: the median commitment, in pseudotime.
    """
    rng = sample_rng(spec.seed, "cascade")
    genes = _network(spec, rng)
    times = np.sort(rng.uniform(0, spec.duration, spec.n_cells))
    run = _run(spec, genes, times, rng)
    fate, commit = _commitment(run["gap"], spec.duration / spec.n_steps)
    branch_time = float(np.median(commit) / spec.duration) if spec.branching else 0.4
    pseudotime = times / spec.duration
    capture = np.clip(spec.capture * rng.lognormal(0, 0.25, spec.n_cells), 0.01, 1.0)
    spliced = rng.binomial(np.round(run["s"]).astype(np.int64), capture[:, None]).astype(np.int32)
    unspliced = rng.binomial(np.round(run["u"]).astype(np.int64), capture[:, None]).astype(np.int32)
    velocity = (genes["beta"].to_numpy() * run["u"] - genes["gamma"].to_numpy() * run["s"]) * capture[:, None]
    drives = genes["sign"].to_numpy() > 0
    genes["fate_driver"] = np.where(drives & genes["regulator"].isin(["X", "Y"]).to_numpy(), genes["regulator"], "")
    if not spec.branching:
        genes["fate_driver"] = ""
    genes["symbol"] = genes.index
    names = [f"cell{i:05d}" for i in range(spec.n_cells)]
    obs = pd.DataFrame({
        "pseudotime": pseudotime,
        "fate": pd.Categorical(fate, categories=["X", "Y"]),
        "branch": pd.Categorical(np.where(pseudotime < branch_time, "progenitor", fate), categories=["progenitor", "X", "Y"]),
        "commit_time": commit / spec.duration,
        "capture": capture,
    }, index=pd.Index(names, name="cell_id"))
    adata = ad.AnnData(X=spliced.copy(), obs=obs, var=genes)
    adata.layers["spliced"] = spliced
    adata.layers["unspliced"] = unspliced
    adata.layers["true_velocity"] = velocity.astype(np.float32)
    adata.uns["simulation"] = {"kind": "cascade", "branch_time": branch_time, "branching": spec.branching,
                               "duration": spec.duration, "seed": spec.seed}
    return adata
