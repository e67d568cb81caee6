"""Ligand activity: the resource file, its checks, and the planted ligands found over colocalization edges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from cellfate.errors import CellfateError
from cellfate.simulate.ligands import demo_ligand_target, planted_ligands
from cellfate.simulate.tissue import TissueSpec, simulate_tissue
from cellfate.spatial import ligands as lig

RESOURCE = REPO / "resources" / "demo_ligand_target.tsv"


def test_shipped_matrix_is_the_seeded_simulation(tmp_path) -> None:
    out = tmp_path / "lt.tsv"
    demo_ligand_target().to_csv(out, sep="\t", float_format="%.4f")
    assert out.read_bytes() == RESOURCE.read_bytes()
    table = lig.read_ligand_target(RESOURCE)
    assert set(planted_ligands()["ligand"]) == set(table.columns)


@pytest.mark.parametrize(("content", "message"), [
    ("target\tL1\nG1\tx\n", "non-numeric"),
    ("target\tL1\nG1\t-0.5\n", "non-negative"),
    ("target\tL1\tL1\nG1\t0.1\t0.2\n", "duplicate ligand"),
    ("target\n", "empty"),
])
def test_bad_matrix_is_a_clear_error(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "lt.tsv"
    path.write_text(content)
    with pytest.raises(CellfateError, match=message) as err:
        lig.read_ligand_target(path)
    assert str(err.value).startswith(str(path))


def test_missing_matrix_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(CellfateError, match="cannot read"):
        lig.read_ligand_target(tmp_path / "absent.tsv")


@pytest.fixture(scope="module")
def reference() -> tuple[pd.DataFrame, pd.Series]:
    """Log-normalised expression (symbols) and types of a simulated reference."""
    _, cells = simulate_tissue(TissueSpec(grid=(6, 6), n_reference_cells=300, n_genes=150, seed=2))
    x = cells.X.toarray().astype(float)
    x = np.log1p(x / x.sum(1, keepdims=True) * 1e4)
    expr = pd.DataFrame(x, index=cells.obs_names, columns=cells.var["symbol"].to_numpy())
    return expr, cells.obs["cell_type"].astype(str)


def _edges(labels: pd.Series, pairs: list[tuple[str, str]], n: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for a, b in pairs:
        ia, ib = labels.index[labels == a], labels.index[labels == b]
        rows += [(rng.choice(ia), rng.choice(ib), a, b) for _ in range(n)]
    return pd.DataFrame(rows, columns=["cell_i", "cell_j", "type_i", "type_j"]).assign(score=2.0)


def test_planted_ligands_rank_first_over_colocalization_edges(reference) -> None:
    expr, labels = reference
    rng = np.random.default_rng(0)
    colocalized = [("epithelial cell", "macrophage"), ("endothelial cell", "fibroblast"), ("B cell", "T cell")]
    edges = pd.concat([_edges(labels, colocalized, 300, rng), _edges(labels, [("B cell", "fibroblast")], 10, rng)])
    table = lig.ligand_activity(expr, labels, edges, lig.read_ligand_target(RESOURCE))
    plan = planted_ligands()
    for row in plan[plan["kind"] == "planted"].itertuples():
        group = table[(table["sender_type"] == row.sender_type) & (table["receiver_type"] == row.receiver_type)]
        assert group.iloc[0]["ligand"] == row.ligand, group.head(3)
    # a decoy whose receivers are rarely neighbours stays far below the planted signals
    decoy = table[(table["ligand"] == "Cd79b") & (table["sender_type"] == "B cell")]["coactivity"].max()
    assert decoy < 0.2 * table["coactivity"].max()
    assert set(table.columns) >= {"sender_type", "receiver_type", "ligand", "coactivity", "n_edges", "rank"}


def test_no_shared_ligand_is_a_clear_error(reference) -> None:
    expr, labels = reference
    table = pd.DataFrame({"NotAGene": [1.0]}, index=["Cd3e"])
    edges = _edges(labels, [("B cell", "T cell")], 5, np.random.default_rng(0))
    with pytest.raises(CellfateError, match="no ligand"):
        lig.ligand_activity(expr, labels, edges, table)
