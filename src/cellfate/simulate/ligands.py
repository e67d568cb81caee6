"""The demo's small simulated ligand-target matrix (``resources/demo_ligand_target.tsv``).

Real ligand-target matrices (NicheNet's) need real ligands and targets among the measured genes;
the demo tissue has only its cell types' markers for sure, so the matrix is simulated over them,
with a planted truth. For each cell type A of the demo tissue:

- a *planted* ligand, A's first marker, regulates the markers of A's colocalized partner B (same
  spatial domain) with potential 0.6-1.0;
- a *decoy* ligand, A's second marker, regulates the markers of a type that never shares A's
  domain, equally strongly.

Every other (target, ligand) entry is a small background potential. Colocalization-aware ligand
activity must therefore rank the planted ligand first for A -> B, and give decoys little weight
because their receivers are rarely A's neighbours. Regenerate with
``python -m cellfate.simulate.ligands resources/demo_ligand_target.tsv`` (seeded, byte-identical).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from cellfate.simulate.expression import CELL_TYPES, HOUSEKEEPING
from cellfate.simulate.tissue import DEFAULT_DOMAINS


def planted_ligands(domains: dict[str, dict[str, float]] = DEFAULT_DOMAINS) -> pd.DataFrame:
    """One row per (sender, receiver, ligand, kind): the planted and decoy ligands."""
    types = sorted({t for d in domains.values() for t in d})
    domain_of = {t: name for name, d in domains.items() for t in d}
    rows = []
    for a in types:
        partner = sorted(t for t in domains[domain_of[a]] if t != a)[0]
        stranger = [t for t in types[types.index(a) + 1:] + types[:types.index(a)] if domain_of[t] != domain_of[a]][0]
        rows.append((a, partner, CELL_TYPES[a]["markers"][0], "planted"))
        rows.append((a, stranger, CELL_TYPES[a]["markers"][1], "decoy"))
    return pd.DataFrame(rows, columns=["sender_type", "receiver_type", "ligand", "kind"])


def demo_ligand_target(seed: int = 7) -> pd.DataFrame:
    """Targets (every marker and housekeeping gene) x ligands, potentials rounded to 4 decimals."""
    rng = np.random.default_rng(seed)
    plan = planted_ligands()
    targets = sorted({m for spec in CELL_TYPES.values() for m in spec["markers"]} | set(HOUSEKEEPING))
    table = pd.DataFrame(rng.exponential(0.02, size=(len(targets), len(plan))), index=pd.Index(targets, name="target"),
                         columns=plan["ligand"].to_list())
    for row in plan.itertuples():
        for marker in CELL_TYPES[row.receiver_type]["markers"]:
            table.loc[marker, row.ligand] = rng.uniform(0.6, 1.0)
    return table.round(4)


def main(path: str) -> None:
    demo_ligand_target().to_csv(path, sep="\t", float_format="%.4f")


if __name__ == "__main__":
    main(sys.argv[1])
