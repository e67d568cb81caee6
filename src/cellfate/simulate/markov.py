"""A branching differentiation from the third-party ``markovmodus`` simulator, with the truth it implies.

markovmodus (PyPI, MIT, Bleher) moves cells through a hidden continuous-time Markov state graph;
each state sets steady-state targets for splicing kinetics (dU/dt = alpha_z - beta U,
dS/dt = beta U - gamma S, stochastic steps) and its own marker genes (shared between connected
states). It was not designed with VICDYF in mind, which is why it validates it. Here its state
graph is a trunk of ``n_trunk`` states followed by two arms (fates A and C) of ``n_arm`` states.

markovmodus reports only the final states and counts, so the run is observed step by step (a
subclass that records each cell's entry time into its state and integrates the expected U, S
given the state path) to recover:

- ``pseudotime``: (position on the path + time in the state x exit rate, capped at 1) / path length;
- the branch point: the entry into the first arm state, ``n_trunk / path length``;
- ``true_velocity``: beta E[U] - gamma E[S] given the cell's state path (the expected ds/dt);
- fate drivers: marker genes of a fate's arm states that no trunk state uses.

Requires ``markovmodus==0.3.0`` (a dev extra: only tests and benchmarks use it).
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd


@dataclass(frozen=True)
class MarkovSpec:
    """Graph, sizes and rates of the markovmodus run (its own defaults where not stated)."""

    n_cells: int = 1000
    n_genes: int = 200
    n_trunk: int = 3
    n_arm: int = 3
    rate: float = 0.3  # exit rate of every non-terminal state
    markers_per_state: int = 20
    marker_overlap: int = 5
    t_final: float = 12.0
    dt: float = 0.25
    branching: bool = True  # False: one arm only (a linear path; the negative control)
    seed: int = 0


def _graph(spec: MarkovSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transition rates, each state's position on the path, and its fate label ('', 'A' or 'C')."""
    arms = ("A", "C") if spec.branching else ("A",)
    n = spec.n_trunk + spec.n_arm * len(arms)
    rates = np.zeros((n, n))
    position = np.zeros(n, dtype=int)
    fate = np.array([""] * n, dtype=object)
    for k in range(spec.n_trunk - 1):
        rates[k, k + 1] = spec.rate
    position[: spec.n_trunk] = np.arange(spec.n_trunk)
    for a, arm in enumerate(arms):
        first = spec.n_trunk + a * spec.n_arm
        rates[spec.n_trunk - 1, first] = spec.rate / len(arms)
        for k in range(spec.n_arm):
            position[first + k] = spec.n_trunk + k
            fate[first + k] = arm
            if k < spec.n_arm - 1:
                rates[first + k, first + k + 1] = spec.rate
    return rates, position, fate


def _recorder_class():
    from markovmodus.simulation import Simulation

    class Recorder(Simulation):
        """The markovmodus engine, observed: entry times and the expected U, S given the state path."""

        def start_recording(self) -> None:
            target = self.state_expression[self.cell_states]
            self.entry = np.zeros(len(self.cell_states))
            self.mean_s = target.astype(float)
            self.mean_u = target * self.params.decay_rate / self.params.splicing_rate

        def _update_latent_states(self, dt, transition_rates, cell_count, *, transition_mask=None):
            self._advance_means(dt)
            before = self.cell_states.copy()
            super()._update_latent_states(dt, transition_rates, cell_count, transition_mask=transition_mask)
            self.entry[self.cell_states != before] = self.time + dt

        def _advance_means(self, dt: float, substeps: int = 10) -> None:
            beta, gamma = self.params.splicing_rate, self.params.decay_rate
            alpha = gamma * self.state_expression[self.cell_states]
            h = dt / substeps
            for _ in range(substeps):  # the step's state holds for the whole step, as in markovmodus
                du = alpha - beta * self.mean_u
                ds = beta * self.mean_u - gamma * self.mean_s
                self.mean_u = self.mean_u + h * du
                self.mean_s = self.mean_s + h * ds

    return Recorder


def simulate_markov(spec: MarkovSpec) -> ad.AnnData:
    """Run markovmodus on the branching graph; counts plus the truth under the bifurcation's keys.

    obs: ``pseudotime``, ``state``, ``fate`` (A/C for arm cells; trunk cells get the fate of the
    nearer arm by expression, only for labels), ``branch`` (progenitor/A/C). var: ``fate_driver``.
    layers: ``spliced``, ``unspliced``, ``true_velocity``. uns['simulation']['branch_time'].
    """
    from markovmodus import SimulationParameters

    rates, position, fate_of = _graph(spec)
    n_states = len(rates)
    initial = np.zeros(n_states)
    initial[: spec.n_trunk] = 1.0 / spec.n_trunk
    params = SimulationParameters(
        num_states=n_states, transition_rates=rates, num_genes=spec.n_genes, markers_per_state=spec.markers_per_state,
        marker_overlap=spec.marker_overlap, num_cells=spec.n_cells, t_final=spec.t_final, dt=spec.dt,
        initial_state_probs=initial.tolist(), rng_seed=spec.seed)
    sim = _recorder_class()(params)
    sim.start_recording()
    sim.run()
    out = sim.to_output()
    states = out.states
    length = spec.n_trunk + spec.n_arm
    in_state = np.minimum((sim.time - sim.entry) * spec.rate, 1.0)
    pseudotime = (position[states] + in_state) / length
    branch_time = spec.n_trunk / length
    arm = fate_of[states].astype(str)
    velocity = params.splicing_rate * sim.mean_u - params.decay_rate * sim.mean_s
    marker = out.state_expression > np.median(out.state_expression)
    trunk_markers = marker[: spec.n_trunk].any(0)
    drivers = np.array([""] * spec.n_genes, dtype=object)
    for label in ("A", "C"):
        mine = marker[fate_of == label].any(0) & ~trunk_markers
        drivers[mine] = label
    fate = np.where(arm == "", _nearest_arm(out.spliced, arm), arm)
    names = [f"cell{i:05d}" for i in range(len(states))]
    obs = pd.DataFrame({
        "pseudotime": pseudotime, "state": states,
        "fate": pd.Categorical(fate, categories=["A", "C"] if spec.branching else ["A"]),
        "branch": pd.Categorical(np.where(arm == "", "progenitor", arm), categories=["progenitor", "A", "C"]),
    }, index=pd.Index(names, name="cell_id"))
    var = pd.DataFrame({"fate_driver": drivers.astype(str)}, index=pd.Index([f"g{j:04d}" for j in range(spec.n_genes)]))
    var["symbol"] = var.index
    adata = ad.AnnData(X=out.spliced.astype(np.int32), obs=obs, var=var)
    adata.layers["spliced"] = out.spliced.astype(np.int32)
    adata.layers["unspliced"] = out.unspliced.astype(np.int32)
    adata.layers["true_velocity"] = velocity.astype(np.float32)
    adata.uns["simulation"] = {"kind": "markovmodus", "branch_time": branch_time, "branching": spec.branching,
                               "seed": spec.seed, "markovmodus": "0.3.0"}
    return adata


def _nearest_arm(spliced: np.ndarray, arm: np.ndarray) -> np.ndarray:
    """For trunk cells: the arm whose mean expression is nearer (a label only; the truth is the arm)."""
    labels = [a for a in ("A", "C") if (arm == a).any()]
    if not labels:
        return np.array(["A"] * len(arm))
    x = np.log1p(spliced)
    centres = np.stack([x[arm == a].mean(0) for a in labels])
    dist = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    return np.asarray(labels)[dist.argmin(1)]
