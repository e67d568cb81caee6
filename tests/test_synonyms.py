"""Old and alias gene symbols through the real MGI and HGNC tables (slices in tests/data/gene_synonyms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellfate.errors import CellfateError
from cellfate.foundation.orthologs import convert_to_mouse
from cellfate.harmonise import harmonise_genes, parse_gene_ids
from cellfate.synonyms import load_synonyms, read_synonyms, resolve_symbols

DATA = Path(__file__).parent / "data" / "gene_synonyms"
MGI = DATA / "mgi_entries_slice.tsv"
HGNC = DATA / "hgnc_entries_slice.tsv"


def test_real_mouse_old_symbols_resolve_and_ambiguous_ones_are_reported() -> None:
    table = read_synonyms(MGI)
    names, notes = resolve_symbols(["Wbp5", "Atp5b", "Gnb2l1", "Sur2", "Actb", "NotAGene1"], table, table.current)
    assert names == ["Tceal9", "Atp5f1b", "Rack1", "Sur2", "Actb", "NotAGene1"]
    assert notes == {"Sur2": "ambiguous: Abcc9|Med23"}  # Abcc9 and Med23 both list it: not guessed
    assert "Tceal9" in table.current and "Tceal9" not in table.lookup  # a current symbol is never remapped


def test_real_human_previous_symbols_resolve() -> None:
    table = read_synonyms(HGNC)
    assert table.lookup["IGJ"] == "JCHAIN" and table.lookup["ATP5B"] == "ATP5F1B"
    assert table.ambiguous["AK3L1"] == ("AK3", "AK4")


def test_hgnc_complete_set_layout_reads_the_same(tmp_path) -> None:
    """The complete set names its columns symbol / prev_symbol / alias_symbol and separates with '|'."""
    custom = pd.read_csv(HGNC, sep="\t", dtype=str, keep_default_na=False)
    complete = pd.DataFrame({
        "hgnc_id": custom["HGNC ID"], "symbol": custom["Approved symbol"],
        "alias_symbol": custom["Alias symbols"].str.replace(", ", "|"),
        "prev_symbol": custom["Previous symbols"].str.replace(", ", "|"),
        "ensembl_gene_id": custom["Ensembl gene ID"],
    })
    complete.to_csv(tmp_path / "hgnc_complete_set.txt", sep="\t", index=False)
    a, b = read_synonyms(HGNC), read_synonyms(tmp_path / "hgnc_complete_set.txt")
    assert a.lookup == b.lookup and a.ambiguous == b.ambiguous and a.current == b.current


def test_mouse_counts_of_old_symbols_are_kept() -> None:
    names = ["Wbp5", "Atp5b", "Gnb2l1", "Sur2", "Actb"]
    counts = sp.csr_matrix(np.array([[5, 4, 3, 2, 1], [1, 1, 1, 1, 1]]))
    ids, symbols = parse_gene_ids(names)
    _, var, before = harmonise_genes(counts, ids, symbols, "p.h5ad")
    assert set(before["name"]) == {"Wbp5", "Atp5b", "Gnb2l1", "Sur2"}
    merged, var, after = harmonise_genes(counts, ids, symbols, "p.h5ad", read_synonyms(MGI))
    assert list(var.loc[var["symbol"].isin(["Tceal9", "Atp5f1b", "Rack1"])].index) == sorted(
        ["ENSMUSG00000042712", "ENSMUSG00000025393", "ENSMUSG00000020372"])
    assert after.to_dict("records") == [{"name": "Sur2", "total_counts": 3, "note": "ambiguous: Abcc9|Med23"}]
    assert merged.sum() == counts.sum() - 3


def test_human_old_symbols_reach_their_mouse_orthologs() -> None:
    names = ["IGJ", "ATP5B", "AK3L1", "CD3E"]
    counts = sp.csr_matrix(np.array([[7, 3, 2, 1]]))
    _, var0, dropped0, _ = convert_to_mouse(counts, names, "pbmc.h5ad")
    assert set(dropped0["name"]) == {"IGJ", "ATP5B", "AK3L1"}
    merged, var, dropped, by_class = convert_to_mouse(counts, names, "pbmc.h5ad", read_synonyms(HGNC))
    assert {"ENSMUSG00000067149", "ENSMUSG00000025393"} <= set(var.index)  # Jchain, Atp5f1b
    assert dropped.set_index("name")["homology"].to_dict() == {"AK3L1": "ambiguous_symbol"}
    assert merged.sum() == 11


def test_bad_or_missing_table_is_one_line(tmp_path) -> None:
    (tmp_path / "x.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(CellfateError, match="x.tsv: not a gene synonym table"):
        read_synonyms(tmp_path / "x.tsv")
    with pytest.raises(CellfateError, match="does not exist"):
        read_synonyms(tmp_path / "none.tsv")
    assert load_synonyms([]) is None and load_synonyms(None) is None


def test_workflow_fetches_the_table_and_every_reader_takes_it(tmp_path) -> None:
    """A configured URL is downloaded like any source (manifest with sha256); the read rules wait for it."""
    import yaml

    from conftest import run_snakemake

    config = {"download": {"urls": {"gene_synonyms_mouse": f"file://{MGI}", "gene_synonyms_human": f"file://{HGNC}"}}}
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(config))
    common = ("--nolock", "--configfile", str(tmp_path / "extra.yaml"), "--config", f"results={tmp_path}/results")
    table = f"{tmp_path}/results/downloads/genes/mouse_synonyms.tsv"
    result = run_snakemake(table, "--cores", "1", *common)
    assert result.returncode == 0, result.stderr
    assert Path(table).read_bytes() == MGI.read_bytes()
    manifest = list((tmp_path / "results" / "manifests").rglob("*"))
    assert any(p.is_file() for p in manifest)
    result = run_snakemake("-n", *common)
    assert result.returncode == 0, result.stderr
    jobs = result.stdout.split("Job stats:")[1]
    assert "download_gene_synonyms" in jobs  # the human table (the mouse one is already there)
    for rule in ("read_panglaodb", "read_expression_atlas", "read_cellxgene", "read_cross_species"):
        assert rule in jobs
