"""The two seeds together: do VICDYF's fluctuation drivers move progenitors toward their fate in the
foundation model?

For each fate, the top ``n_drivers`` genes of VICDYF's fluctuation ranking toward it (the table
of :mod:`cellfate.dynamics.fluctuation`, read from disk: foundation does not import dynamics) are
overexpressed in progenitor cells (moved or inserted at rank 0, :mod:`cellfate.foundation.perturb`),
and so are ``n_controls`` random genes detected in the data. The shift of a perturbed cell toward
the fate is ``cos(perturbed, fate) - cos(original, fate)``, the fate's state embedding being the mean
embedding of its terminal cells (the latest ``terminal_fraction`` of the fate's cells by
``time_key``). Each driver's per-cell shifts are tested against the pooled per-cell shifts of the
control genes, rank-sum one-sided (greater), and Benjamini-Hochberg runs over all drivers of all fates.

Negative control: ``n_decoys`` further random genes, disjoint from the controls and from the drivers,
are tested exactly as the drivers (their own BH family). They stand for "drivers" that drive nothing;
a screen whose decoys come out significant is measuring something other than the drivers.

Genes outside the model's vocabulary: the demo's model is pretrained on a simulated corpus of other
tissues, whose 2,000 genes share few ids with the simulated pancreas. Such genes are mapped one to
one onto unused vocabulary genes (seeded), and the cells are tokenized under the mapped ids with the
corpus medians. Drivers, decoys and controls go through the same mapping, so the comparison stays
fair; the table records both ids (``gene_id``: the data's, ``model_gene_id``: the token used).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from cellfate.corpus.dictionary import load_gene_medians
from cellfate.corpus.reader import Chunk
from cellfate.corpus.tokenizer import RankValueTokenizer, normalise_gene_id
from cellfate.errors import CellfateError
from cellfate.foundation.embed import Embedder, load_pretrained
from cellfate.foundation.perturb import GeneMatrix, Perturber, make_jobs, originals, state_embeddings
from cellfate.foundation.screen import RunSettings, make_embedder
from cellfate.foundation.stats import benjamini_hochberg
from cellfate.io import write_table

log = logging.getLogger(__name__)

GROUPS = ("driver", "decoy", "control")


@dataclass(frozen=True)
class FateScreenSpec:
    """The screen's keys (``foundation.fluctuation_perturbation`` plus the dynamics' fate annotation)."""

    fate_key: str = "branch"
    fates: tuple[str, ...] = ("alpha", "beta")
    progenitor: str = "progenitor"  # the fate_key value of the cells perturbed
    time_key: str | None = "pseudotime"  # orders a fate's cells; None: all its cells are terminal
    terminal_fraction: float = 0.5
    n_drivers: int = 10
    n_decoys: int = 10
    n_controls: int = 30
    min_detected: int = 5  # decoy and control genes: detected (spliced > 0) in this many cells
    max_cells: int = 60  # progenitors perturbed
    max_state_cells: int = 200  # terminal cells averaged per state embedding
    layer: str = "spliced"
    # The hidden state read: -2, the second-to-last (Geneformer's read-out for a model not fine-tuned:
    # the last layer is shaped by the masked-gene objective). The pooling is foundation.perturb's.
    hidden_layer: int = -2
    # goal: the change of the cosine to the fate; contrast: that minus the change of the cosine to the
    # other fates (their mean), Geneformer's goal against alternative states. Where the fates differ
    # little from each other next to their common difference from the progenitors, the goal shift
    # reads "toward any terminal state" rather than the fate choice.
    shift: str = "goal"
    fdr: float = 0.05
    seed: int = 0

    @classmethod
    def from_config(cls, spec: Mapping[str, object]) -> FateScreenSpec:
        """Checked construction; an unknown key or a bad value is a one-line error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise CellfateError(f"fluctuation_perturbation: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        values = dict(spec)
        if "fates" in values:
            values["fates"] = tuple(str(f) for f in values["fates"] or ())
        screen = cls(**values)
        if screen.shift not in ("goal", "contrast"):
            raise CellfateError(f"fluctuation_perturbation: shift must be goal or contrast, not {screen.shift!r}")
        if not screen.fates or not 0 < screen.terminal_fraction <= 1:
            raise CellfateError("fluctuation_perturbation: needs fates, and terminal_fraction in (0, 1]")
        if min(screen.n_drivers, screen.n_controls, screen.max_cells, screen.max_state_cells) < 1 or screen.n_decoys < 0:
            raise CellfateError("fluctuation_perturbation: n_drivers, n_controls, max_cells must be >= 1, n_decoys >= 0")
        return screen


def vocabulary_mapping(gene_ids: Sequence[str], vocabulary: Sequence[str], seed: int) -> pd.DataFrame:
    """Each data gene -> the model gene whose token it uses: itself when in the vocabulary, else a
    distinct unused vocabulary gene drawn with the seed (``surrogate`` True)."""
    genes = [normalise_gene_id(g) for g in gene_ids]
    known = set(vocabulary)
    missing = [g for g in genes if g not in known]
    pool = sorted(known - set(genes))
    if len(missing) > len(pool):
        raise CellfateError(f"{len(missing)} genes lie outside the model's vocabulary, only {len(pool)} tokens are free")
    chosen = np.random.default_rng([seed, 31]).choice(len(pool), size=len(missing), replace=False)
    surrogate = dict(zip(missing, (pool[i] for i in chosen)))
    return pd.DataFrame(
        {"gene_id": genes, "model_gene_id": [surrogate.get(g, g) for g in genes], "surrogate": [g in surrogate for g in genes]}
    )


def count_matrix(counts: sp.spmatrix | np.ndarray) -> sp.csr_matrix:
    """The counts as the CSR float32 matrix, without stored zeros, that the tokenizer and the
    detection counts both read (built once per run)."""
    matrix = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    matrix.eliminate_zeros()
    return matrix


def tokenize_counts(counts: sp.spmatrix | np.ndarray, model_gene_ids: Sequence[str], tokenizer: RankValueTokenizer) -> list[np.ndarray]:
    """Every cell's rank-value token row (the corpus tokenizer, its medians), in cell order; a cell
    with no known gene is an error (it could not be embedded)."""
    matrix = counts if isinstance(counts, sp.csr_matrix) and counts.dtype == np.float32 else count_matrix(counts)
    vocab = tokenizer.vocabulary(list(model_gene_ids))
    chunk = Chunk(0, matrix.shape[0], matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64), matrix.data)
    totals = np.asarray(matrix.sum(1), dtype=np.float64).ravel()
    passed = totals > 0
    tokens, offsets, rows, _ = tokenizer.encode(vocab, chunk, passed, np.where(passed, totals, 1.0))
    if len(rows) != matrix.shape[0]:
        raise CellfateError(f"{matrix.shape[0] - len(rows)} cells have no counts in the model's vocabulary")
    return [np.array(tokens[offsets[i] : offsets[i + 1]], dtype=np.int64) for i in range(len(rows))]


def cell_states(obs: pd.DataFrame, spec: FateScreenSpec) -> pd.Series:
    """Each cell's state for the screen: the progenitor label, a fate for its terminal cells, '' otherwise."""
    for key in (spec.fate_key, spec.time_key):
        if key is not None and key not in obs:
            raise CellfateError(f"the cells have no obs column {key!r} (columns: {list(obs.columns)[:10]})")
    labels = obs[spec.fate_key].astype(str)
    state = pd.Series("", index=obs.index, dtype=object)
    state[labels == spec.progenitor] = spec.progenitor
    for fate in spec.fates:
        cells = labels == fate
        if not cells.any():
            raise CellfateError(f"no cell has {spec.fate_key} = {fate!r} (known: {sorted(labels.unique())})")
        if spec.time_key is None:
            state[cells] = fate
            continue
        time = obs.loc[cells, spec.time_key].astype(float)
        state[time.index[time >= time.quantile(1 - spec.terminal_fraction)]] = fate
    if not (state == spec.progenitor).any():
        raise CellfateError(f"no cell has {spec.fate_key} = {spec.progenitor!r}: no progenitor to perturb")
    return state


def choose_genes(drivers: pd.DataFrame, detected: pd.Series, fate: str, spec: FateScreenSpec) -> dict[str, list[str]]:
    """Drivers toward ``fate`` (VICDYF's top ranks with a positive contribution), then decoys and
    controls drawn (seeded, per fate) from the other detected genes."""
    table = drivers[(drivers["fate"].astype(str) == fate) & (drivers["contribution"] > 0)].sort_values("rank")
    chosen = [normalise_gene_id(g) for g in table["gene_id"].head(spec.n_drivers)]
    if not chosen:
        raise CellfateError(f"the fluctuation table has no gene with a positive contribution toward {fate!r}")
    pool = sorted(set(detected.index[detected >= spec.min_detected]) - set(chosen))
    need = spec.n_decoys + spec.n_controls
    if len(pool) < need:
        raise CellfateError(f"{fate}: {len(pool)} other genes detected in {spec.min_detected}+ cells, need {need}")
    fate_index = list(spec.fates).index(fate)
    order = np.random.default_rng([spec.seed, 37, fate_index]).permutation(len(pool))
    picked = [pool[i] for i in order[:need]]
    return {"driver": chosen, "decoy": sorted(picked[: spec.n_decoys]), "control": sorted(picked[spec.n_decoys :])}


def pick_cells(cells: np.ndarray, n: int, seed: int, salt: int) -> np.ndarray:
    """At most ``n`` of ``cells``, drawn with the seed (and a salt per use), in their order."""
    if len(cells) <= n:
        return cells
    return np.sort(np.random.default_rng([seed, salt]).choice(cells, size=n, replace=False))


def per_cell_shifts(
    embedder: Embedder,
    rows: Sequence[np.ndarray],
    state: np.ndarray,
    fate: str,
    tokens: Mapping[str, int],
    spec: FateScreenSpec,
    batch_size: int = 64,
    max_length: int | None = None,
) -> pd.DataFrame:
    """(gene_id, cell, shift toward ``fate``) of every gene overexpressed in every chosen progenitor.

    ``max_length`` is the screen's token budget, the length the cells were tokenized to (default: the
    model's positions). A perturbed cell is cut back to it (the inserted gene pushes the lowest-ranked
    one out, as Geneformer's perturber does): a model trained on cells of that length never learnt the
    positions past it, and a token there moves every perturbed cell alike, burying the genes' effects.
    """
    states = [fate] + [s for s in spec.fates if s != fate] + [spec.progenitor]
    chosen = np.concatenate([pick_cells(np.flatnonzero(state == s), spec.max_state_cells, spec.seed, 41) for s in states])
    targets = state_embeddings(embedder, [rows[i] for i in chosen], state[chosen], states)
    start = pick_cells(np.flatnonzero(state == spec.progenitor), spec.max_cells, spec.seed, 43)
    matrix = GeneMatrix.from_rows([rows[i] for i in start], embedder.vocab.token_to_id, max_length or embedder.max_length)
    jobs = make_jobs(matrix, np.array(sorted(set(tokens.values()))), 0, expressed_only=False)
    perturber = Perturber(embedder, batch_size)
    cosine = perturber.cosines(matrix, jobs, targets, desc=f"toward {fate}")
    base = perturber.cosines(matrix, originals(matrix), targets, desc="originals")
    delta = cosine - base[jobs.cell]
    n_alt = len(spec.fates) - 1
    shift = delta[:, 0] - (delta[:, 1 : 1 + n_alt].mean(1) if spec.shift == "contrast" and n_alt else 0.0)
    gene_of = {t: g for g, t in tokens.items()}
    return pd.DataFrame({"gene_id": [gene_of[int(t)] for t in jobs.token], "cell": start[jobs.cell], "shift": shift})


def test_against_controls(shifts: pd.DataFrame, groups: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Per driver and decoy gene: one-sided rank-sum (greater) of its per-cell shifts against the
    pooled per-cell shifts of the control genes; controls get their summary only (no test)."""
    background = shifts.loc[shifts["gene_id"].isin(groups["control"]), "shift"].to_numpy()
    rows = []
    for group in GROUPS:
        for gene in groups[group]:
            values = shifts.loc[shifts["gene_id"] == gene, "shift"].to_numpy()
            u, p = np.nan, np.nan
            if group != "control" and len(values) and len(background):
                result = stats.mannwhitneyu(values, background, alternative="greater", method="asymptotic")
                u, p = float(result.statistic), float(result.pvalue)
            rows.append(
                {
                    "gene_id": gene,
                    "group": group,
                    "n_cells": len(values),
                    "mean_shift": float(values.mean()) if len(values) else np.nan,
                    "median_shift": float(np.median(values)) if len(values) else np.nan,
                    "control_mean_shift": float(background.mean()) if len(background) else np.nan,
                    "u_statistic": u,
                    "p_value": p,
                }
            )
    return pd.DataFrame(rows)


def adjust(table: pd.DataFrame, fdr: float) -> pd.DataFrame:
    """BH within each tested group (drivers; decoys) across all fates; ``significant``: FDR < ``fdr``."""
    table = _bh_within_groups(table.copy(), "p_value", "fdr")
    table["significant"] = table["fdr"].lt(fdr)
    return table


def _bh_within_groups(table: pd.DataFrame, p_column: str, fdr_column: str) -> pd.DataFrame:
    """BH over the rows of each tested group (drivers; decoys) on its own: decoys never dilute drivers."""
    table[fdr_column] = np.nan
    for group in ("driver", "decoy"):
        rows = table["group"] == group
        table.loc[rows, fdr_column] = benjamini_hochberg(table.loc[rows, p_column].to_numpy())
    return table


def set_tests(table: pd.DataFrame, fdr: float = 0.05) -> pd.DataFrame:
    """Per fate, the drivers as a set (and the decoys as a set): one-sided rank-sum of their genes'
    mean shifts against the control genes' mean shifts, BH over the fates within each group.

    Why a gene-level test beside the per-cell one: the per-cell test pools 60 cells per gene, so a
    gene whose shifts are all offset from the controls' by a little is 'significant' whatever it is
    (on the demo, random decoys pass it far above the nominal rate). Genes are the replicates here:
    this test holds its level when the set is random (the decoy row says so on every run).
    """
    rows = []
    for fate, part in table.groupby("fate", sort=False):
        controls = part.loc[part["group"] == "control", "mean_shift"].dropna()
        for group in ("driver", "decoy"):
            genes = part[part["group"] == group]
            shifts = genes["mean_shift"].dropna()
            p = stats.mannwhitneyu(shifts, controls, alternative="greater").pvalue if len(shifts) and len(controls) else np.nan
            rows.append(
                {
                    "fate": fate,
                    "group": group,
                    "n_genes": len(genes),
                    "n_significant_per_cell": int(genes["significant"].sum()),
                    "median_gene_shift": float(shifts.median()) if len(shifts) else np.nan,
                    "median_control_shift": float(controls.median()) if len(controls) else np.nan,
                    "set_p_value": float(p),
                }
            )
    out = _bh_within_groups(pd.DataFrame(rows), "set_p_value", "set_fdr")
    out["set_significant"] = out["set_fdr"].lt(fdr)
    return out


def screen_fates(
    embedder: Embedder,
    rows: Sequence[np.ndarray],
    state: np.ndarray,
    drivers: pd.DataFrame,
    detected: pd.Series,
    mapping: pd.DataFrame,
    spec: FateScreenSpec,
    batch_size: int = 64,
    max_length: int | None = None,
) -> pd.DataFrame:
    """Every fate's screen, tested and BH-adjusted: the table of :func:`run` (without symbols);
    ``max_length``: the token budget (:func:`per_cell_shifts`)."""
    token_of = embedder.vocab.token_to_id
    model_gene = mapping.set_index("gene_id")["model_gene_id"]
    parts = []
    for fate in spec.fates:
        groups = choose_genes(drivers, detected, fate, spec)
        genes = [g for group in GROUPS for g in groups[group]]
        tokens = {g: token_of[model_gene[g]] for g in genes}
        shifts = per_cell_shifts(embedder, rows, state, fate, tokens, spec, batch_size, max_length)
        part = test_against_controls(shifts, groups).assign(fate=fate)
        ranks = drivers[drivers["fate"].astype(str) == fate].assign(gene_id=lambda d: d["gene_id"].map(normalise_gene_id))
        part["fluctuation_rank"] = part["gene_id"].map(ranks.set_index("gene_id")["rank"])
        parts.append(part)
    table = adjust(pd.concat(parts, ignore_index=True), spec.fdr)
    table["model_gene_id"] = table["gene_id"].map(model_gene)
    table["surrogate"] = table["gene_id"].map(mapping.set_index("gene_id")["surrogate"])
    return table


def _read_inputs(h5ad: str, drivers_tsv: str, spec: FateScreenSpec) -> tuple[ad.AnnData, pd.DataFrame]:
    adata = ad.read_h5ad(h5ad)
    if spec.layer not in adata.layers:
        raise CellfateError(f"{h5ad}: no layer {spec.layer!r} (layers: {list(adata.layers)})")
    drivers = pd.read_csv(drivers_tsv, sep="\t")
    missing = {"fate", "rank", "gene_id", "contribution"} - set(drivers.columns)
    if missing:
        raise CellfateError(f"{drivers_tsv}: not a fluctuation gene table (missing column {sorted(missing)[0]!r})")
    return adata, drivers


def run(
    h5ad: str,
    drivers_tsv: str,
    model_dir: str,
    gene_medians: str,
    out_table: str,
    out_summary: str | None = None,
    *,
    spec: Mapping[str, object],
    settings: Mapping[str, object] | None = None,
    version: str = "v2",
    truth_h5ad: str | None = None,
) -> pd.DataFrame:
    """Rule fluctuation_perturbation: cells + VICDYF's driver table + the model -> the tested table
    (with each gene's true fate from ``truth_h5ad``'s var, the simulator's, when given)."""
    screen = FateScreenSpec.from_config(spec)
    run_settings = RunSettings(**{k: v for k, v in dict(settings or {}).items() if k in RunSettings.__dataclass_fields__})
    run_settings = replace(run_settings, layer=screen.hidden_layer)
    adata, drivers = _read_inputs(h5ad, drivers_tsv, screen)
    pretrained = load_pretrained(model_dir, run_settings.device)
    max_length = min(pretrained.config.max_position_embeddings, run_settings.max_tokens or 10**9)
    tokenizer = RankValueTokenizer(
        pretrained.vocab.token_to_id, load_gene_medians(gene_medians), version, max_length, source=model_dir
    )
    mapping = vocabulary_mapping(list(adata.var_names), sorted(tokenizer.gene_token), screen.seed)
    counts = count_matrix(adata.layers[screen.layer])
    rows = tokenize_counts(counts, mapping["model_gene_id"].tolist(), tokenizer)
    detected = np.bincount(counts.indices[counts.data > 0], minlength=counts.shape[1])
    detected = pd.Series(detected, index=mapping["gene_id"].to_numpy())
    state = cell_states(adata.obs, screen).to_numpy()
    log.info(
        "%d cells (%s), %d of %d genes mapped onto surrogate tokens",
        *(len(state), pd.Series(state).replace("", "other").value_counts().to_dict()),
        *(int(mapping["surrogate"].sum()), len(mapping)),
    )
    embedder = make_embedder(pretrained, run_settings)
    table = screen_fates(embedder, rows, state, drivers, detected, mapping, screen, run_settings.batch_size, max_length)
    var = ad.read_h5ad(truth_h5ad, backed="r").var if truth_h5ad else adata.var
    table = _annotate(table, var)
    summary = set_tests(table, screen.fdr)
    _log_summary(summary)
    write_table(table, out_table)
    if out_summary:
        write_table(summary, out_summary)
    return table


def _annotate(table: pd.DataFrame, var: pd.DataFrame) -> pd.DataFrame:
    """Symbols and, where the data know it (the simulator's ``fate_driver``), each gene's true fate."""
    var = var.set_axis([normalise_gene_id(g) for g in var.index])
    table.insert(1, "symbol", table["gene_id"].map(var["symbol"]) if "symbol" in var else "")
    if "fate_driver" in var:
        table["true_fate_driver"] = table["gene_id"].map(var["fate_driver"].astype(str))
    order = ["fate", "gene_id", "symbol", "group", "fluctuation_rank", "n_cells", "mean_shift", "median_shift"]
    rest = [c for c in table.columns if c not in order]
    return table[order + rest]


def _log_summary(summary: pd.DataFrame) -> None:
    for row in summary.itertuples():
        log.info(
            "toward %s: %ss %d/%d significant per cell; as a set, median shift %.5f vs controls %.5f, FDR %.3g",
            *(row.fate, row.group, row.n_significant_per_cell, row.n_genes, row.median_gene_shift),
            *(row.median_control_shift, row.set_fdr),
        )
