"""Environmental share per fit against the simulator's niche / random choosers (issue 16 item 4).

For each seed: the environment tissue with half the lineage choosing at random, ``--fits`` fits of
the conditioned dynamics (true partner densities as c), and per fit the graph read-out's
decomposition with every progenitor under every progenitor's condition. Prints, per seed, the
AUROC of the environmental share (niche choosers against random choosers) for each fit and for
the median and mean over fits, the fitted drift's environment sensitivity at niche choosers over
random choosers, and how well the latent state alone tells the groups apart.

    PYTHONPATH=src .venv/bin/python benchmarks/decomposition_bench.py --seeds 10 --fit-seed 42
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict

from cellfate.counts import dense
from cellfate.simulate.environment import simulate_environment, spec_from_config
from cellfate.spatial import environment as env
from cellfate.spatial import forward as fw
from cellfate.spatial import forward_pipeline as fp


def sensitivity(module, z: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per cell: the Frobenius norm of d drift / d c (how much its own environment moves it)."""
    zt = torch.as_tensor(z, dtype=torch.float32)
    ct = torch.as_tensor(c, dtype=torch.float32).requires_grad_(True)
    mu = module.drift(zt, ct)
    rows = [torch.autograd.grad(mu[:, i].sum(), ct, retain_graph=True)[0] for i in range(mu.shape[1])]
    return torch.stack(rows, 1).norm(dim=(1, 2)).detach().numpy()


def one_seed(seed: int, fit_seed: int, n_fits: int, epochs: int, work: Path) -> dict[str, float]:
    """The per-fit and aggregated AUROCs and the diagnostics of one simulated tissue."""
    sim = {"seed": seed, "environment": {"insensitive_share": 0.5}}
    _, ref, _ = simulate_environment(spec_from_config(sim))
    ref.write_h5ad(work / "ref.h5ad")
    cfg = {"seed": fit_seed, "environment": {"epochs_vae": epochs, "epochs_dynamics": epochs},
           "forward": {"condition": "truth"}}
    s_cfg, f = fp.forward_settings(cfg)
    e = s_cfg["environment"]
    cells, labels, lineage, cond = fp.read_lineage(work / "ref.h5ad", None, s_cfg, f)
    sub = cells[lineage]
    s, u = dense(sub.layers["spliced"]), dense(sub.layers["unspliced"])
    keep = s.sum(0) >= max(1, e["min_counts"])
    lab = labels[lineage]
    starts = np.flatnonzero(np.isin(lab, f["progenitors"]))
    niche = cells.obs["niche_chooser"].to_numpy()[lineage][starts].astype(bool)
    c0 = cond.standardised()[starts]
    out, shares = {"seed": seed}, []
    for k, (module, _) in enumerate(fp.fit_models(s[:, keep], u[:, keep], cond, e, n_fits, fit_seed, fp.DEFAULTS["resample"])):
        z = env.latent_mean(module, s[:, keep]).cpu().numpy()
        terminals = fw.terminal_states(z, lab, f["progenitors"], f["fates"], seed=fit_seed + k)
        graph = fw.state_graph(module, z, cond.standardised())
        p = fw.fates_per_condition(module, z, terminals, graph, starts, c0)
        shares.append(fw.uncertainty_parts(p)["environmental_share"].to_numpy())
        out[f"fit{k}"] = roc_auc_score(niche, shares[-1])
        sens = sensitivity(module, z[starts], c0)
        out[f"sens_ratio{k}"] = float(sens[niche].mean() / sens[~niche].mean())
        guess = cross_val_predict(LogisticRegression(max_iter=2000), z[starts], niche, cv=5, method="predict_proba")
        out[f"state_auroc{k}"] = roc_auc_score(niche, guess[:, 1])
    out["median"] = roc_auc_score(niche, np.median(shares, 0))
    out["mean"] = roc_auc_score(niche, np.mean(shares, 0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--fit-seed", type=int, default=42)
    parser.add_argument("--fits", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            rows.append(one_seed(seed, args.fit_seed, args.fits, args.epochs, Path(tmp)))
            print({k: round(v, 2) for k, v in rows[-1].items()}, flush=True)
    table = pd.DataFrame(rows).set_index("seed")
    print(table.round(2).T.to_string())
    for col in [c for c in table if not c.startswith(("sens", "state"))]:
        print(f"{col}: AUROC >= 0.8 in {int((table[col] >= 0.8).sum())}/{len(table)} (median {table[col].median():.2f})")


if __name__ == "__main__":
    main()
