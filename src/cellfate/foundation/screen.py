"""Rule perturb: one goal-state perturbation screen from config to table.

Chooses the cells (start cells to perturb, cells of every state for the state embeddings),
resolves the genes to perturb (Ensembl ids or mouse symbols; genes outside the vocabulary are
reported and skipped, never an ``IndexError``), adds random control genes when asked, runs all
perturbations batched (:mod:`cellfate.foundation.perturb`) and tests each gene's shifts towards the
goal against the pooled shifts (:mod:`cellfate.foundation.stats`).

Table columns: ``gene_id``, ``symbol``, ``group`` (requested / control / expressed), ``status``
(tested, not_in_vocabulary, unknown_gene, not_detected, too_few_cells), ``n_cells`` (cells
perturbed: for deletion, the cells that express the gene), ``mean_shift`` and ``median_shift``
towards the goal, ``p_value``, ``fdr``, ``significant`` (FDR < ``fdr``), ``direction``, and the
mean shift towards every alternative state and the start state.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from cellfate.errors import CellfateError
from cellfate.foundation.cells import (
    ATTRIBUTES,
    check_dictionaries,
    check_token_range,
    cut_to,
    load_cells,
    read_attributes,
)
from cellfate.foundation.embed import Embedder, Pretrained, load_pretrained
from cellfate.foundation.gene_names import model_gene_mapping, symbol_lookup
from cellfate.foundation.perturb import (
    GeneMatrix,
    GeneShiftAccumulator,
    Jobs,
    Perturber,
    make_jobs,
    originals,
    quantize_int8,
    state_embeddings,
)
from cellfate.foundation.stats import DEFAULT_BACKGROUND_CAP, shift_statistics
from cellfate.genes import mouse_gene_table
from cellfate.io import write_table

log = logging.getLogger(__name__)

MODES = ("delete", "overexpress", "shift")
STATUS_TESTED = "tested"


@dataclass(frozen=True)
class Experiment:
    """One goal-state perturbation screen (the keys of an entry of ``foundation.perturb.experiments``)."""

    name: str
    start: str
    goal: str
    state_column: str = "cell_type"
    alternatives: tuple[str, ...] = ()
    mode: str = "overexpress"
    rank: int = 0
    genes: str | tuple[str, ...] = "all"  # "all" (every gene the start cells express) or ids / symbols
    control_genes: int = 0  # random vocabulary genes perturbed alongside, as a null reference
    max_cells: int = 100  # start cells perturbed
    max_state_cells: int = 500  # cells averaged per state embedding
    min_cells: int = 3  # genes perturbed in fewer cells are reported, not tested
    gene_shifts: bool = False
    model: str = "pretrained"  # pretrained | classifier (the fine-tuned cell-type model's encoder)
    seed: int = 0

    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, object]) -> Experiment:
        """Checked construction from a config entry; unknown keys and bad values are one-line errors."""
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise CellfateError(
                f"perturbation {name!r}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        for key in ("start", "goal"):
            if key not in spec:
                raise CellfateError(f"perturbation {name!r} needs {key!r} (a value of its state_column)")
        values = dict(spec)
        values["alternatives"] = tuple(str(a) for a in values.get("alternatives") or ())
        genes = values.get("genes", "all")
        values["genes"] = "all" if genes == "all" else tuple(str(g) for g in (genes or ()))
        experiment = cls(name=name, **values)
        if experiment.mode not in MODES:
            raise CellfateError(
                f"perturbation {name!r}: mode must be one of {', '.join(MODES)}, got {experiment.mode!r}"
            )
        if experiment.rank < 0 or experiment.max_cells < 1 or experiment.min_cells < 1 or experiment.control_genes < 0:
            raise CellfateError(
                f"perturbation {name!r}: rank and control_genes must be >= 0, max_cells and min_cells >= 1"
            )
        if experiment.model not in ("pretrained", "classifier"):
            raise CellfateError(
                f"perturbation {name!r}: model must be pretrained or classifier, got {experiment.model!r}"
            )
        if experiment.goal == experiment.start or experiment.goal in experiment.alternatives:
            raise CellfateError(
                f"perturbation {name!r}: the goal state must differ from the start and the alternatives"
            )
        return experiment

    @property
    def states(self) -> list[str]:
        """Goal first, then the alternatives, then the start: the columns of every shift matrix."""
        return [self.goal, *self.alternatives, self.start]

    @property
    def target_rank(self) -> int | None:
        """Where the gene goes (None: deleted)."""
        return None if self.mode == "delete" else (0 if self.mode == "overexpress" else self.rank)


@dataclass(frozen=True)
class RunSettings:
    """How screens run (the ``foundation.perturb`` block outside ``experiments``)."""

    batch_size: int = 64
    device: str = "auto"
    layer: int = -1
    pooling: str = "auto"
    precision: str = "fp32"
    quantize: str = "none"  # "int8": dynamic int8 Linear layers on CPU (opt-in; see perturb.quantize_int8)
    background_cap: int = DEFAULT_BACKGROUND_CAP
    fdr: float = 0.05
    max_tokens: int | None = None  # cells cut to their top genes (None: as tokenized)


def resolve_genes(
    requested: Sequence[str], token_to_id: Mapping[str, int], gene_mapping: Mapping[str, str] | None = None
) -> tuple[dict[str, int], pd.DataFrame]:
    """Requested names -> {gene id: token}; the rest in a table with why (``unknown_gene``, ``not_in_vocabulary``).

    Symbols resolve through the model's own map first (``gene_mapping``), then the gene table."""
    table = mouse_gene_table()
    by_symbol = symbol_lookup(gene_mapping)
    by_lower = {s.lower(): g for s, g in by_symbol.items()}
    found, skipped = {}, []
    for name in requested:
        clean = name.strip()
        gene = (
            clean.split(".")[0]
            if clean.upper().startswith("ENSMUSG")
            else by_symbol.get(clean, by_lower.get(clean.lower()))
        )
        if gene is None:
            skipped.append({"gene_id": clean, "symbol": clean, "status": "unknown_gene"})
        elif gene not in token_to_id:
            skipped.append({"gene_id": gene, "symbol": table["symbol"].get(gene, clean), "status": "not_in_vocabulary"})
        else:
            found[gene] = token_to_id[gene]
    for row in skipped:
        log.warning("gene %s (%s): %s, skipped", row["symbol"], row["gene_id"], row["status"].replace("_", " "))
    return found, pd.DataFrame(skipped, columns=["gene_id", "symbol", "status"])


def control_genes(token_to_id: Mapping[str, int], n: int, exclude: set[int], seed: int) -> dict[str, int]:
    """``n`` random vocabulary genes (seeded), none of ``exclude``: a null reference for the screen."""
    pool = sorted((g, t) for g, t in token_to_id.items() if not g.startswith("<") and t not in exclude)
    chosen = np.random.default_rng([seed, 17]).choice(len(pool), size=min(n, len(pool)), replace=False)
    return dict(pool[i] for i in sorted(chosen))


def _column(state: str) -> str:
    return re.sub(r"\W+", "_", state.strip()).strip("_")


def _choose(labels: np.ndarray, state: str, n: int, seed: int) -> np.ndarray:
    cells = np.flatnonzero(labels == state)
    return np.sort(np.random.default_rng([seed, 23]).choice(cells, size=n, replace=False)) if len(cells) > n else cells


def _check_states(shards: Sequence[str], experiment: Experiment) -> None:
    """Every state of the screen has cells, else one line naming the missing one and the known ones."""
    column = experiment.state_column
    present = read_attributes(shards, [column])[column]
    missing = [s for s in experiment.states if s not in set(present)]
    if missing:
        known = ", ".join(f"{k} ({v})" for k, v in present.value_counts().items())
        raise CellfateError(f"perturbation {experiment.name!r}: no cell has {column} = {missing[0]!r}; known: {known}")


def make_embedder(pretrained: Pretrained, settings: RunSettings) -> Embedder:
    embedder = Embedder(
        pretrained,
        layer=settings.layer,
        pooling=settings.pooling,
        batch_size=settings.batch_size,
        precision=settings.precision,
    )
    if settings.quantize == "int8":
        quantize_int8(embedder)
    elif settings.quantize != "none":
        raise CellfateError(f"foundation.perturb.quantize must be none or int8, got {settings.quantize!r}")
    return embedder


def _genes_to_perturb(
    matrix: GeneMatrix,
    token_to_id: Mapping[str, int],
    experiment: Experiment,
    gene_mapping: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, dict[int, str], bool, pd.DataFrame]:
    """(tokens, token -> group, perturb only cells expressing the gene?, skipped requests).

    Requested symbols resolve through the checkpoint's own symbol map (``gene_mapping``) first."""
    skipped = pd.DataFrame(columns=["gene_id", "symbol", "status"])
    if experiment.genes == "all":
        tokens, counts = np.unique(
            matrix.genes[np.arange(matrix.genes.shape[1])[None, :] < matrix.lengths[:, None]], return_counts=True
        )
        tokens = tokens[counts >= experiment.min_cells]
        group = dict.fromkeys(tokens.tolist(), "expressed")
        expressed_only = True
    else:
        found, skipped = resolve_genes(experiment.genes, token_to_id, gene_mapping)
        group = dict.fromkeys(found.values(), "requested")
        group |= dict.fromkeys(
            control_genes(token_to_id, experiment.control_genes, set(group), experiment.seed).values(), "control"
        )
        tokens = np.array(sorted(group), dtype=np.int64)
        expressed_only = experiment.mode == "delete"
    if len(tokens) == 0:
        why = (
            "; ".join(f"{r.symbol}: {r.status}" for r in skipped.itertuples())
            or f"no gene in {experiment.min_cells}+ start cells"
        )
        raise CellfateError(f"perturbation {experiment.name!r}: no gene left to perturb ({why})")
    return tokens, group, expressed_only, skipped


def _shifts(
    embedder: Embedder,
    matrix: GeneMatrix,
    tokens: np.ndarray,
    states: np.ndarray,
    experiment: Experiment,
    expressed_only: bool,
    settings: RunSettings,
) -> tuple[Jobs, np.ndarray, GeneShiftAccumulator | None]:
    """(jobs, cosine shift of every job toward every state, gene-embedding shifts or None)."""
    jobs = make_jobs(matrix, tokens, experiment.target_rank, expressed_only=expressed_only)
    log.info(
        "%s: %d perturbations (%s) of %d genes in %d %s cells; states %s",
        *(experiment.name, len(jobs), experiment.mode, len(tokens), len(matrix.lengths), experiment.start),
        experiment.states,
    )
    perturber = Perturber(embedder, settings.batch_size)
    accumulator = (
        GeneShiftAccumulator({int(t): i for i, t in enumerate(tokens)}, embedder.vocab.vocab_size)
        if experiment.gene_shifts and len(tokens)
        else None
    )
    cosine = perturber.cosines(matrix, jobs, states, desc=experiment.name, gene_shifts=accumulator)
    base = perturber.cosines(matrix, originals(matrix), states, desc="originals")
    return jobs, cosine - base[jobs.cell], accumulator


def _gene_rows(
    per_gene: Mapping[int, np.ndarray],
    tested: Mapping[int, np.ndarray],
    shifts: np.ndarray,
    group: Mapping[int, str],
    id_of: Mapping[int, str],
    experiment: Experiment,
) -> pd.DataFrame:
    """One row per perturbed gene: its status and its mean shift toward every non-goal state."""
    symbols = mouse_gene_table()["symbol"]
    names = [_column(a) for a in experiment.alternatives] + ["start"]
    rows_out = []
    for t, idx in per_gene.items():
        gene = id_of[t]
        row = {
            "gene_id": gene,
            "symbol": symbols.get(gene, ""),
            "group": group[t],
            "n_cells": len(idx),
            "status": STATUS_TESTED if t in tested else ("not_detected" if len(idx) == 0 else "too_few_cells"),
        }
        for k, name in enumerate(names, start=1):  # states: goal, alternatives..., start
            row[f"mean_shift_to_{name}"] = float(shifts[idx, k].mean()) if len(idx) else np.nan
        rows_out.append(row)
    return pd.DataFrame(rows_out)


def _screen_table(
    genes: pd.DataFrame, stats: pd.DataFrame, skipped: pd.DataFrame, token_to_id: Mapping[str, int], name: str
) -> pd.DataFrame:
    """Gene rows + test statistics + skipped requests, tested genes first by mean shift (the module's columns)."""
    stats = stats.rename(columns={"key": "token"}).drop(columns=["n"])
    table = genes.assign(token=[token_to_id[g] for g in genes["gene_id"]]).merge(stats, on="token", how="left")
    table["direction"] = np.where(table["mean_shift"] > 0, "toward_goal", np.where(table["mean_shift"] < 0, "away", ""))
    table = pd.concat([table.drop(columns=["token"]), skipped.assign(group="requested", n_cells=0)], ignore_index=True)
    table["significant"] = table["significant"].astype("boolean").fillna(False).astype(bool)
    order = [
        "gene_id",
        "symbol",
        "group",
        "status",
        "n_cells",
        "mean_shift",
        "median_shift",
        "p_value",
        "fdr",
        "significant",
        "direction",
    ]
    table = table[order + [c for c in table.columns if c.startswith("mean_shift_to_")] + ["u_statistic"]]
    untested = table["status"].ne(STATUS_TESTED)
    table = table.assign(_untested=untested).sort_values(["_untested", "mean_shift"], ascending=[True, False])
    table = table.drop(columns="_untested").reset_index(drop=True)
    table.insert(0, "experiment", name)
    return table


def run_screen(
    model_dir: str,
    shards: Sequence[str],
    token_dictionary: str | None,
    experiment: Experiment,
    settings: RunSettings = RunSettings(),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-gene table, gene-embedding-shift table) of one screen."""
    if token_dictionary:
        check_dictionaries(token_dictionary, Path(model_dir) / "token_dictionary.json")
    _check_states(shards, experiment)
    pretrained = load_pretrained(model_dir, settings.device)
    token_to_id = pretrained.vocab.token_to_id
    column = experiment.state_column
    cells = load_cells(
        shards, attributes=list(dict.fromkeys([*ATTRIBUTES, column])), select={column: experiment.states}
    )
    check_token_range(cells, pretrained.vocab.vocab_size, token_dictionary)
    cells = cut_to(cells, settings.max_tokens, token_to_id)
    labels = cells.obs[column].astype(str).to_numpy()
    embedder = make_embedder(pretrained, settings)
    chosen = np.concatenate(
        [_choose(labels, s, experiment.max_state_cells, experiment.seed) for s in experiment.states]
    )
    rows = cells.rows()
    states = state_embeddings(embedder, [rows[i] for i in chosen], labels[chosen], experiment.states)
    start = _choose(labels, experiment.start, experiment.max_cells, experiment.seed + 1)
    max_length = min(pretrained.config.max_position_embeddings, settings.max_tokens or 10**9)
    matrix = GeneMatrix.from_rows([rows[i] for i in start], token_to_id, max_length)
    id_of = {t: g for g, t in token_to_id.items()}
    tokens, group, expressed_only, skipped = _genes_to_perturb(
        matrix, token_to_id, experiment, model_gene_mapping(model_dir)
    )
    jobs, shifts, accumulator = _shifts(embedder, matrix, tokens, states, experiment, expressed_only, settings)
    per_gene = {int(t): np.flatnonzero(jobs.token == t) for t in tokens}
    tested = {t: idx for t, idx in per_gene.items() if len(idx) >= experiment.min_cells}
    stats = shift_statistics(
        {t: shifts[idx, 0] for t, idx in tested.items()},
        background_cap=settings.background_cap,
        seed=experiment.seed,
        fdr=settings.fdr,
    )
    genes = _gene_rows(per_gene, tested, shifts, group, id_of, experiment)
    table = _screen_table(genes, stats, skipped, token_to_id, experiment.name)
    gene_table = (
        accumulator.table(id_of, experiment.min_cells)
        if accumulator is not None
        else pd.DataFrame(columns=["perturbed_gene", "affected_gene", "n_cells", "mean_cosine"])
    )
    n_sig = int((table["significant"] & (table["mean_shift"] > 0)).sum())
    log.info(
        "%s: %d genes tested, %d shift cells significantly toward %s (FDR < %g)",
        *(experiment.name, len(tested), n_sig, experiment.goal, settings.fdr),
    )
    return table, gene_table


def perturb(
    model_dir: str,
    shards: Sequence[str],
    token_dictionary: str | None,
    *,
    name: str,
    experiment: Mapping[str, object],
    settings: Mapping[str, object] | None,
    out_table: str,
    out_gene_shifts: str,
) -> pd.DataFrame:
    """Rule perturb: the screen ``name`` of ``foundation.perturb.experiments`` -> its two tables."""
    run = {k: v for k, v in dict(settings or {}).items() if k in RunSettings.__dataclass_fields__}
    table, genes = run_screen(
        model_dir, shards, token_dictionary, Experiment.from_config(name, experiment), RunSettings(**run)
    )
    write_table(table, out_table)
    write_table(genes, out_gene_shifts)
    return table
