"""Pretraining learns on the calibrated corpus; saved model folders are self-contained; published
Geneformer-format checkpoints (BertForMaskedLM folder + pickles) run the model use with no pretraining."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_snakemake
from foundation_helpers import make_world, one_torch_thread  # noqa: F401  (fixture)

from cellfate.errors import CellfateError
from cellfate.foundation.embed import write_embeddings
from cellfate.foundation.learning import knn_cv_accuracy, learning_table, majority_share, unigram_cross_entropy
from cellfate.foundation.model_card import import_pretrained, publish_pretrained
from cellfate.foundation.train import TrainSettings, train

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "config/models/tiny.yaml")
STEPS = 150


def _train(world, out: Path, seed: int = 0) -> TrainSettings:
    settings = TrainSettings(
        token_dictionary=str(world.dictionary_path), model_config=TINY, shards=[str(s) for s in world.shards],
        output_model=str(out / "trained"), checkpoint_dir=str(out / "ck"), history=str(out / "history.tsv"),
        heldout=str(out / "heldout_mlm.tsv"), max_steps=STEPS, batch_size=16, lr=5e-3, warmup_steps=15,
        heldout_fraction=0.1, eval_every=STEPS, checkpoint_every=10_000, log_every=50, megabatch_batches=10,
        num_workers=0, device="cpu", seed=seed,
    )
    train(settings)
    return settings


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """The calibrated simulator's cells (4 types, 300 genes, 32 tokens, v2) and a tiny model trained on them."""
    root = tmp_path_factory.mktemp("learn")
    world = make_world(root / "world", n_genes=300, cells=(300, 300), v2=True, max_length=32)
    settings = _train(world, root)
    return world, settings, root


def test_unigram_cross_entropy_and_knn_by_hand() -> None:
    train_rows = [np.array([2, 3, 3, 4]), np.array([3])]  # gene counts 2:1, 3:3, 4:1 (+0.5 each)
    held = [np.array([0, 3, 2])]  # <pad> ignored
    p = np.array([1.5, 3.5, 1.5]) / 6.5
    assert unigram_cross_entropy(train_rows, held, special_ids=(0, 1), vocab_size=5) == pytest.approx(
        -(np.log(p[1]) + np.log(p[0])) / 2)
    emb = np.r_[np.tile([1.0, 0.0], (10, 1)), np.tile([0.0, 1.0], (10, 1))] + 0.01 * np.arange(20)[:, None]
    labels = ["a"] * 10 + ["b"] * 10
    assert knn_cv_accuracy(emb, labels, k=3) == 1.0
    assert majority_share(["a", "a", "b"]) == pytest.approx(2 / 3)


def test_pretraining_learns_cell_identity(learned) -> None:
    """Fails when pretraining stops learning: the held-out loss must fall well below the unigram
    baseline (measured: 0.42 nats at 150 steps). The zero-shot kNN is checked against chance only:
    on this corpus an untrained model's embeddings already separate types (0.80 here vs 0.61
    trained, <cls> pooling), so kNN is no evidence of learning (see foundation.learning)."""
    world, settings, root = learned
    table = learning_table(settings.output_model, settings.shards, settings.heldout,
                           heldout_fraction=settings.heldout_fraction, heldout_max_cells=settings.heldout_max_cells,
                           seed=settings.seed)
    row = table.iloc[-1]
    assert row["step"] == STEPS
    assert row["nats_below_unigram"] > 0.3, row.to_dict()
    assert row["knn_accuracy"] > 2 * row["knn_majority_share"], row.to_dict()
    assert 0 < row["knn_accuracy_untrained"] <= 1
    assert row["knn_cells"] == 600
    # the kNN on part of the corpus (the demo's lineage cells are pretrained on, not classified);
    # the held-out split and unigram stay the trainer's, drawn on every shard
    part = learning_table(settings.output_model, settings.shards, settings.heldout,
                          heldout_fraction=settings.heldout_fraction, heldout_max_cells=settings.heldout_max_cells,
                          seed=settings.seed, knn_shards=settings.shards[:1])
    assert part.iloc[-1]["knn_cells"] == 300
    assert part.iloc[-1]["unigram_cross_entropy"] == row["unigram_cross_entropy"]


def test_no_learning_without_steps(learned, tmp_path) -> None:
    """Negative control: the same run stopped after 2 steps sits at the unigram baseline, not below it."""
    world, _, _ = learned
    settings = TrainSettings(
        token_dictionary=str(world.dictionary_path), model_config=TINY, shards=[str(s) for s in world.shards],
        output_model=str(tmp_path / "m"), checkpoint_dir=str(tmp_path / "ck"), history=str(tmp_path / "h.tsv"),
        heldout=str(tmp_path / "ho.tsv"), max_steps=2, batch_size=16, lr=5e-3, warmup_steps=1,
        heldout_fraction=0.1, eval_every=2, checkpoint_every=10, log_every=1, megabatch_batches=10,
        num_workers=0, device="cpu",
    )
    train(settings)
    table = learning_table(settings.output_model, settings.shards, settings.heldout, heldout_fraction=0.1,
                           heldout_max_cells=settings.heldout_max_cells, seed=0)
    assert table.iloc[-1]["nats_below_unigram"] < 0.1


def test_saved_folder_is_self_contained_and_reloads_to_the_same_embeddings(learned, tmp_path) -> None:
    world, settings, root = learned
    medians = tmp_path / "gene_medians.tsv"
    pd.DataFrame({"gene_id": world.medians.dropna().index, "median": world.medians.dropna().to_numpy(),
                  "n_cells": 1}).to_csv(medians, sep="\t", index=False)
    card = publish_pretrained(settings.output_model, medians, settings.shards, settings.heldout,
                              tmp_path / "model", tmp_path / "heldout_loss.tsv", settings={"max_steps": STEPS})
    folder = tmp_path / "model"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "token_dictionary.json", "gene_medians.tsv",
            "model_card.md", "model_card.json"} <= names
    assert card["steps"] == STEPS and card["corpus"]["cells"] == 600
    assert "heldout_mlm_loss" in (folder / "model_card.md").read_text().replace(" ", "_")
    # A user hands the folder over alone: it is moved, and imported with the files it holds.
    moved = Path(shutil.move(str(folder), tmp_path / "elsewhere"))
    import_pretrained(moved, moved / "token_dictionary.json", moved / "gene_medians.tsv", tmp_path / "imported",
                      max_length=32)
    shards = [str(s) for s in world.shards]
    write_embeddings(str(settings.output_model), shards, str(world.dictionary_path), str(tmp_path / "a.h5ad"),
                     device="cpu")
    write_embeddings(str(tmp_path / "imported"), shards, str(moved / "token_dictionary.json"),
                     str(tmp_path / "b.h5ad"), device="cpu")
    import anndata as ad

    a, b = ad.read_h5ad(tmp_path / "a.h5ad"), ad.read_h5ad(tmp_path / "b.h5ad")
    assert np.array_equal(a.obsm["X_cellfate"], b.obsm["X_cellfate"])


def _geneformer_checkpoint(root: Path, world, v2: bool, weights: str) -> Path:
    """A random BertForMaskedLM saved as Hugging Face does, its dictionaries as Geneformer's pickles."""
    from transformers import BertConfig, BertForMaskedLM

    genes = list(world.medians.dropna().index)
    specials = ["<pad>", "<mask>"] + (["<cls>", "<eos>"] if v2 else [])
    tokens = {t: np.int64(i) for i, t in enumerate(specials + genes)}  # numpy ints, as in the real pickles
    torch.manual_seed(3)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokens), hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=32,
                                       max_position_embeddings=4096 if v2 else 2048, pad_token_id=0))
    folder = root / "checkpoint"
    model.save_pretrained(folder)
    if weights == "pytorch_model.bin":  # older releases (Geneformer V1, Mouse-Geneformer) ship torch pickles
        torch.save(model.state_dict(), folder / weights)
        (folder / "model.safetensors").unlink()
    assert (folder / weights).is_file()
    with open(root / "token_dictionary.pkl", "wb") as f:
        pickle.dump(tokens, f)
    with open(root / "gene_median_dictionary.pkl", "wb") as f:
        pickle.dump({g: np.float64(m) for g, m in world.medians.dropna().items()}, f)
    with open(root / "GeneSymbol_to_EnsemblID.pkl", "wb") as f:
        pickle.dump({f"Gene{i}": g for i, g in enumerate(genes)}, f)
    return folder


@pytest.mark.parametrize(("v2", "weights"), [(False, "pytorch_model.bin"), (True, "model.safetensors")])
def test_published_checkpoint_runs_the_model_use(v2, weights, tmp_path) -> None:
    world = make_world(tmp_path / "world", n_genes=120, cells=(60,), v2=v2, max_length=32)
    folder = _geneformer_checkpoint(tmp_path, world, v2, weights)
    from cellfate.corpus.dictionary import build

    dictionary = tmp_path / "token_dictionary.json"
    build(tmp_path / "unused.tsv", dictionary, version="v2" if v2 else "v1", given=tmp_path / "token_dictionary.pkl")
    out = tmp_path / "pretrained"
    import_pretrained(folder, dictionary, tmp_path / "gene_median_dictionary.pkl", out, max_length=32,
                      gene_mapping=tmp_path / "GeneSymbol_to_EnsemblID.pkl")
    assert json.loads((out / "gene_mapping.json").read_text())["Gene0"] == world.medians.dropna().index[0]
    write_embeddings(str(out), [str(s) for s in world.shards], str(dictionary), str(tmp_path / "e.h5ad"), device="cpu")
    import anndata as ad

    emb = ad.read_h5ad(tmp_path / "e.h5ad").obsm["X_cellfate"]
    assert emb.shape == (60, 16) and np.isfinite(emb).all()


def test_screen_resolves_symbols_through_the_checkpoints_own_mapping(tmp_path) -> None:
    """A user names genes by symbol; a published checkpoint's symbol -> Ensembl pickle
    (``tokenize.gene_mapping``) is what its vocabulary was built with, so the screen resolves the
    symbols through it first: here symbols 'Gene0'... that the project's gene table does not know."""
    from cellfate.corpus.dictionary import build
    from cellfate.foundation.screen import perturb, resolve_genes

    world = make_world(tmp_path / "world", n_genes=120, cells=(60,), max_length=32)
    folder = _geneformer_checkpoint(tmp_path, world, False, "model.safetensors")
    dictionary = tmp_path / "token_dictionary.json"
    build(tmp_path / "unused.tsv", dictionary, version="v1", given=tmp_path / "token_dictionary.pkl")
    kwargs = dict(name="mapped", settings={"device": "cpu"}, out_table=str(tmp_path / "t.tsv"),
                  out_gene_shifts=str(tmp_path / "g.tsv"),
                  experiment={"start": "T cell", "goal": "B cell", "genes": ["Gene0", "Gene1", "NoSuchGene"],
                              "max_cells": 5, "control_genes": 3})
    genes = list(world.medians.dropna().index)
    for mapping in (None, tmp_path / "GeneSymbol_to_EnsemblID.pkl"):
        out = tmp_path / f"pretrained-{mapping is not None}"
        import_pretrained(folder, dictionary, tmp_path / "gene_median_dictionary.pkl", out, max_length=32,
                          gene_mapping=mapping)
        table = perturb(str(out), [str(s) for s in world.shards], str(dictionary), **kwargs)
        table = table[table["group"] != "control"].set_index("gene_id")
        status = table["status"]
        assert status["NoSuchGene"] == "unknown_gene"
        if mapping is None:  # without the checkpoint's map the names mean nothing here
            assert status["Gene0"] == "unknown_gene" and status["Gene1"] == "unknown_gene"
        else:
            assert set(table.index) == {genes[0], genes[1], "NoSuchGene"}
            assert status[genes[0]] != "unknown_gene" and status[genes[1]] != "unknown_gene"
    # the checkpoint's map wins over the project's table where they disagree
    tokens = json.loads(dictionary.read_text())
    found, _ = resolve_genes(["Cd79a"], tokens, {"Cd79a": genes[5]})
    assert found == {genes[5]: tokens[genes[5]]}


def test_checkpoint_of_another_vocabulary_is_refused(tmp_path) -> None:
    world = make_world(tmp_path / "world", n_genes=120, cells=(40,), max_length=32)
    folder = _geneformer_checkpoint(tmp_path, world, False, "model.safetensors")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"<pad>": 0, "<mask>": 1, "ENSMUSG00000000001": 2}))
    with pytest.raises(CellfateError, match="vocab_size"):
        import_pretrained(folder, other, tmp_path / "gene_median_dictionary.pkl", tmp_path / "out", max_length=32)
    assert not (tmp_path / "out").exists()
    (folder / "model.safetensors").unlink()
    with pytest.raises(CellfateError, match="no weights"):
        import_pretrained(folder, other, tmp_path / "gene_median_dictionary.pkl", tmp_path / "out")


def test_demo_dag_with_a_published_checkpoint_has_no_pretraining(tmp_path) -> None:
    """The demo's DAG pointed at a Geneformer V2-format checkpoint and its pickles: every model-use
    rule is planned, from the imported folder, and neither pretrain nor its card is."""
    world = make_world(tmp_path / "world", n_genes=120, cells=(40,), v2=True, max_length=32)
    folder = _geneformer_checkpoint(tmp_path, world, True, "model.safetensors")
    extra = tmp_path / "pretrained.yaml"
    extra.write_text(
        f"results: {tmp_path}/results\n"
        f"foundation: {{pretrained_model: {folder}}}\n"
        f"tokenize: {{token_dictionary: {tmp_path}/token_dictionary.pkl, "
        f"gene_medians: {tmp_path}/gene_median_dictionary.pkl, gene_mapping: {tmp_path}/GeneSymbol_to_EnsemblID.pkl}}\n"
    )
    result = run_snakemake("-n", "--nolock", "--configfile", "config/config.yaml", str(extra))
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = set(re.findall(r"^rule (\w+):", result.stdout, flags=re.M))
    assert {"import_pretrained", "classify_cells", "embed_cells", "perturb_screen", "cross_species"} <= jobs
    assert not jobs & {"pretrain", "pretrain_card", "figure_pretrain_curve"}
    assert f"{tmp_path}/results/pretrained/model" in result.stdout


def test_demo_model_use_runs_from_a_published_checkpoint(demo_results, tmp_path) -> None:
    """The demo's model-use rules, run for real from a random Geneformer V2-format checkpoint (weights
    + config.json, dictionary and medians as pickles) on a copy of the demo's results: the token
    dictionary is rebuilt from the pickle, the checkpoint imported, and no pretraining runs."""
    from transformers import BertConfig, BertForMaskedLM

    results = tmp_path / "results"
    shutil.copytree(demo_results, results, symlinks=True)  # copy2: modification times kept
    for stale in ("pretrain", "foundation"):
        shutil.rmtree(results / stale, ignore_errors=True)
    vocab = json.loads((results / "tokenize" / "token_dictionary.json").read_text())
    medians = pd.read_csv(results / "tokenize" / "gene_medians.tsv", sep="\t")
    with open(tmp_path / "token_dictionary.pkl", "wb") as f:
        pickle.dump({t: np.int64(i) for t, i in vocab.items()}, f)
    with open(tmp_path / "gene_median_dictionary.pkl", "wb") as f:
        pickle.dump(dict(zip(medians["gene_id"], medians["median"].astype(float))), f)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=4096, pad_token_id=0)
                    ).save_pretrained(tmp_path / "checkpoint")
    extra = tmp_path / "pretrained.yaml"
    extra.write_text(
        f"results: {results}\n"
        f"foundation: {{pretrained_model: {tmp_path}/checkpoint}}\n"
        f"tokenize: {{token_dictionary: {tmp_path}/token_dictionary.pkl, "
        f"gene_medians: {tmp_path}/gene_median_dictionary.pkl}}\n"
    )
    targets = [f"{results}/foundation/{p}" for p in ("classifier/metrics.tsv", "embeddings.h5ad",
                                                     "perturbation/t_cell_to_b_cell.tsv", "cross_species/summary.tsv")]
    run = run_snakemake("--profile", "profiles/local", "--cores", "2", "--configfile", "config/config.yaml", str(extra),
                        "--forcerun", "tokenize_dictionary", *targets, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ran = set(re.findall(r"rule (\w+):", run.stdout + run.stderr))
    assert {"tokenize_dictionary", "import_pretrained", "classify_cells", "embed_cells", "perturb_screen"} <= ran
    assert not ran & {"pretrain", "pretrain_card"} and not (results / "pretrain").exists()
    import anndata as ad

    assert ad.read_h5ad(results / "foundation" / "embeddings.h5ad").obsm["X_cellfate"].shape[1] == 16
    metrics = pd.read_csv(results / "foundation" / "classifier" / "metrics.tsv", sep="\t")
    assert set(metrics["method"]) == {"cellfate_finetuned", "baseline_logreg_pca", "knn_frozen_embeddings"}
