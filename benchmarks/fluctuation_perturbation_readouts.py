"""Read-outs of the fluctuation -> perturbation screen compared on the demo's outputs, over seeds of
the screen: which layer, pooling and shift measure tell VICDYF's drivers from random decoys?

The cells, genes, progenitors, state cells and tests are those of ``cellfate.foundation.fate_screen``
(same seeds); only the shift read from the embeddings changes:

- ``cosine``: cos(perturbed, fate) - cos(original, fate) (the screen's);
- ``centred``: the same after subtracting the mean embedding of the reference (state) cells;
- ``centred_std``: ... and dividing each dimension by its standard deviation over them;
- ``proj_std``: (perturbed - original) projected on the unit direction fate mean - progenitor mean,
  in the standardised space; ``proj_raw``: the same without standardising.

It also prints the cosines between the state mean embeddings and the spread of the cells' cosine to
the first fate, raw and centred-standardised (is a common component swamping the cosines?).
``--uncut`` lets a perturbed cell grow past the token budget (the screen's behaviour before it cut
perturbed cells back to ``max_tokens``).

``PYTHONPATH=src .venv/bin/python benchmarks/fluctuation_perturbation_readouts.py --results results``
"""

from __future__ import annotations

import argparse
import itertools
import logging

import anndata as ad
import numpy as np
import pandas as pd
import torch

from cellfate.corpus.dictionary import load_gene_medians
from cellfate.corpus.tokenizer import RankValueTokenizer
from cellfate.foundation import fate_screen as fs
from cellfate.foundation.embed import load_pretrained
from cellfate.foundation.perturb import GeneMatrix, gather, make_jobs, originals
from cellfate.foundation.screen import RunSettings, make_embedder

LAYERS, POOLINGS = (-1, -2), ("mean", "cls")


def embed_jobs(embedder, matrix: GeneMatrix, jobs, batch: int = 256) -> np.ndarray:
    """Pooled embeddings of perturbed (or original) cells, in job order."""
    out = np.zeros((len(jobs), embedder.encoder.config.hidden_size), np.float32)
    for start in range(0, len(jobs), batch):
        index = np.arange(start, min(start + batch, len(jobs)))
        ids, attention, _ = gather(matrix, jobs.take(index))
        ids, attention = torch.from_numpy(ids), torch.from_numpy(attention)
        out[index] = embedder.pool(embedder.hidden(ids, attention), ids, attention).numpy()
    return out


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def readouts(P, O, ref, labels, fate, progenitor) -> dict[str, np.ndarray]:
    """Every read-out's per-job shift; P/O perturbed/original embeddings, ref the state cells'."""
    mu, sd = ref.mean(0), ref.std(0) + 1e-8
    F, G = ref[labels == fate].mean(0), ref[labels == progenitor].mean(0)
    Ps, Os, Fs, Gs = (P - mu) / sd, (O - mu) / sd, (F - mu) / sd, (G - mu) / sd
    return {
        "cosine": cos(P, F) - cos(O, F),
        "centred": cos(P - mu, F - mu) - cos(O - mu, F - mu),
        "centred_std": cos(Ps, Fs) - cos(Os, Fs),
        "proj_std": (Ps - Os) @ ((Fs - Gs) / np.linalg.norm(Fs - Gs)),
        "proj_raw": (P - O) @ ((F - G) / np.linalg.norm(F - G)),
    }


def spread(ref, labels, states) -> str:
    """Cosines between state means and the spread of the cells' cosine to the first state."""
    mu, sd = ref.mean(0), ref.std(0) + 1e-8
    means = {s: ref[labels == s].mean(0) for s in states}
    pairs = list(itertools.combinations(states, 2))
    raw = ", ".join(f"{a}-{b} {cos(means[a], means[b]):.3f}" for a, b in pairs)
    cen = ", ".join(f"{a}-{b} {cos((means[a] - mu) / sd, (means[b] - mu) / sd):.3f}" for a, b in pairs)
    r, c = cos(ref, means[states[0]]), cos((ref - mu) / sd, (means[states[0]] - mu) / sd)
    return (
        f"state means raw: {raw}; centred-std: {cen}\n"
        f"  cells' cosine to {states[0]}: raw sd {r.std():.4f} ({r.min():.3f}..{r.max():.3f}),"
        f" centred-std sd {c.std():.3f} ({c.min():.3f}..{c.max():.3f})"
    )


def one_fate(embedder, rows, state, fate, tokens, spec, max_genes) -> tuple[dict[str, pd.DataFrame], str]:
    """Per-cell shifts of every read-out toward ``fate`` (the screen's cells and genes)."""
    states = [fate] + [s for s in spec.fates if s != fate] + [spec.progenitor]
    pick = [fs.pick_cells(np.flatnonzero(state == s), spec.max_state_cells, spec.seed, 41) for s in states]
    chosen = np.concatenate(pick)
    ref, labels = embedder.embed([rows[i] for i in chosen]), state[chosen]
    start = fs.pick_cells(np.flatnonzero(state == spec.progenitor), spec.max_cells, spec.seed, 43)
    matrix = GeneMatrix.from_rows([rows[i] for i in start], embedder.vocab.token_to_id, max_genes)
    jobs = make_jobs(matrix, np.array(sorted(set(tokens.values()))), 0, expressed_only=False)
    P, O = embed_jobs(embedder, matrix, jobs), embed_jobs(embedder, matrix, originals(matrix))[jobs.cell]
    gene_of = {t: g for g, t in tokens.items()}
    genes = [gene_of[int(t)] for t in jobs.token]
    shifts = {
        name: pd.DataFrame({"gene_id": genes, "cell": start[jobs.cell], "shift": value})
        for name, value in readouts(P, O, ref, labels, fate, spec.progenitor).items()
    }
    return shifts, spread(ref, labels, states)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--model", default=None, help="model folder (default: <results>/pretrain/model)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--uncut", action="store_true", help="perturbed cells may grow past --max-tokens")
    parser.add_argument("--per-seed", action="store_true", help="also print every (seed, fate) row")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    r, model = args.results, args.model or f"{args.results}/pretrain/model"
    adata = ad.read_h5ad(f"{r}/dynamics/bifurcation.h5ad")
    drivers = pd.read_csv(f"{r}/dynamics/bifurcation/fluctuation_genes.tsv", sep="\t")
    pretrained = load_pretrained(model, "cpu")
    max_length = min(pretrained.config.max_position_embeddings, args.max_tokens)
    medians = load_gene_medians(f"{r}/tokenize/gene_medians.tsv")
    tokenizer = RankValueTokenizer(pretrained.vocab.token_to_id, medians, "v2", max_length, source=model)
    counts = fs.count_matrix(adata.layers["spliced"])
    rows_out = []
    for seed in args.seeds:
        spec = fs.FateScreenSpec.from_config({"fates": ["alpha", "beta"], "seed": seed})
        mapping = fs.vocabulary_mapping(list(adata.var_names), sorted(tokenizer.gene_token), seed)
        rows = fs.tokenize_counts(counts, mapping["model_gene_id"].tolist(), tokenizer)
        detected = pd.Series(np.bincount(counts.indices, minlength=counts.shape[1]), index=mapping["gene_id"].to_numpy())
        state = fs.cell_states(adata.obs, spec).to_numpy()
        model_gene = mapping.set_index("gene_id")["model_gene_id"]
        for layer, pooling in itertools.product(LAYERS, POOLINGS):
            embedder = make_embedder(pretrained, RunSettings(device="cpu", layer=layer, pooling=pooling))
            parts: dict[str, list[pd.DataFrame]] = {}
            for fate in spec.fates:
                groups = fs.choose_genes(drivers, detected, fate, spec)
                tokens = {g: pretrained.vocab.token_to_id[model_gene[g]] for grp in fs.GROUPS for g in groups[grp]}
                max_genes = pretrained.config.max_position_embeddings if args.uncut else max_length
                shifts, text = one_fate(embedder, rows, state, fate, tokens, spec, max_genes)
                if seed == args.seeds[0] and fate == spec.fates[0]:
                    print(f"seed {seed}, layer {layer}, {pooling}: {text}")
                for name, frame in shifts.items():
                    parts.setdefault(name, []).append(fs.test_against_controls(frame, groups).assign(fate=fate))
            for name, frames in parts.items():
                rows_out += summarise(pd.concat(frames, ignore_index=True), seed, layer, pooling, name)
    report(pd.DataFrame(rows_out), args.per_seed)


def summarise(table: pd.DataFrame, seed: int, layer: int, pooling: str, readout: str) -> list[dict]:
    table = fs.adjust(table, 0.05)
    sets = fs.set_tests(table).set_index(["fate", "group"])["set_fdr"]
    out = []
    for fate, part in table.groupby("fate"):
        d, c = part[part["group"] == "driver"], part[part["group"] == "decoy"]
        out.append(
            {
                **{"seed": seed, "layer": layer, "pooling": pooling, "readout": readout, "fate": fate},
                **{"drivers": int(d["significant"].sum()), "decoys": int(c["significant"].sum())},
                **{"driver_set_fdr": sets[(fate, "driver")], "decoy_set_fdr": sets[(fate, "decoy")]},
            }
        )
    return out


def report(res: pd.DataFrame, per_seed: bool) -> None:
    if per_seed:
        print(res.to_string(index=False, float_format=lambda v: f"{v:.2g}"))
    n = res.groupby(["layer", "pooling", "readout"]).size().iloc[0]
    agg = res.groupby(["layer", "pooling", "readout"]).agg(
        drivers_per_cell=("drivers", "sum"),
        decoys_per_cell=("decoys", "sum"),
        driver_sets=("driver_set_fdr", lambda x: f"{int((x < 0.05).sum())}/{len(x)}"),
        decoy_sets=("decoy_set_fdr", lambda x: f"{int((x < 0.05).sum())}/{len(x)}"),
        driver_set_fdr_median=("driver_set_fdr", "median"),
        decoy_set_fdr_min=("decoy_set_fdr", "min"),
    )
    print(f"(per-cell counts out of {n * 10} genes)")
    print(agg.to_string(float_format=lambda v: f"{v:.2g}"))


if __name__ == "__main__":
    main()
