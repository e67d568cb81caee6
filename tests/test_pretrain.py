"""Pretraining on CPU: learning, bit-exact resumption, two gloo ranks in lockstep, user errors,
model configs and the torchrun / srun command lines. Tiny models and few steps (a few seconds each)."""

from __future__ import annotations

import json
import logging
import math
import socket
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from cellfate.errors import CellfateError
from cellfate.foundation import launch
from cellfate.foundation.config import bert_config, build_model, model_yaml, read_model_yaml
from cellfate.foundation.train import TrainSettings, main, train
from cellfate.foundation.vocab import load_token_dictionary

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "config/models/tiny.yaml")


def make_corpus(root: Path, n_cells=(40, 33), n_genes=40, n_types=4, lengths=(8, 24), seed=0, bad_id=None):
    """A learnable synthetic corpus in the tokenizer's layout: each cell type has a fixed gene ranking and a
    cell is a prefix of its type's ranking, so masked genes follow from the visible ones."""
    rng = np.random.default_rng(seed)
    tokenize = root / "tokenize"
    tokenize.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<mask>": 1} | {f"ENSMUSG{i:011d}": i + 2 for i in range(n_genes)}
    (tokenize / "token_dictionary.json").write_text(json.dumps(vocab))
    rankings = [rng.permutation(n_genes) + 2 for _ in range(n_types)]
    shards = []
    for s, n in enumerate(n_cells):
        types = rng.integers(n_types, size=n)
        ids = [rankings[t][: int(rng.integers(lengths[0], lengths[1] + 1))].tolist() for t in types]
        if bad_id is not None:
            ids = [cell + [bad_id] for cell in ids]
        shard = tokenize / f"shards/panglaodb/S{s}"
        features = datasets.Features(
            {
                "input_ids": datasets.Sequence(datasets.Value("int32")),
                "length": datasets.Value("int64"),
                "cell_type": datasets.Value("string"),
            }
        )
        datasets.Dataset.from_dict(
            {"input_ids": ids, "length": [len(c) for c in ids], "cell_type": [f"type{t}" for t in types]},
            features=features,
        ).save_to_disk(str(shard))
        np.save(f"{shard}.lengths.npy", np.array([len(c) for c in ids], dtype=np.int32))
        shards.append(str(shard))
    return str(tokenize / "token_dictionary.json"), shards


def settings_for(corpus, out: Path, **overrides) -> TrainSettings:
    dictionary, shards = corpus
    base = dict(
        token_dictionary=dictionary,
        model_config=TINY,
        shards=shards,
        output_model=str(out / "model"),
        checkpoint_dir=str(out / "checkpoints"),
        history=str(out / "history.tsv"),
        heldout=str(out / "heldout_loss.tsv"),
        batch_size=4,
        grad_accumulation=2,
        max_steps=6,
        lr=3e-3,
        warmup_steps=2,
        heldout_fraction=0.11,
        eval_every=3,
        checkpoint_every=2,
        log_every=1,
        megabatch_batches=3,
        num_workers=0,
        device="cpu",
        seed=5,
    )
    return TrainSettings(**(base | overrides))


def cli_args(settings: TrainSettings) -> list[str]:
    fields = {k: v for k, v in vars(settings).items() if k != "stop_after_step"}
    return launch.train_arguments(**fields)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a small shared machine, OpenMP's spinning threads cost more than they give."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # 73 cells, 8 held out -> 65 to train: with 2 ranks x batch 4, rank 1's last batch of an epoch is empty
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loss_falls_on_a_learnable_corpus(tmp_path) -> None:
    corpus = make_corpus(tmp_path / "data", n_cells=(150, 150), n_genes=20, n_types=2, lengths=(12, 20), seed=1)
    result = train(
        settings_for(
            corpus,
            tmp_path / "run",
            max_steps=40,
            batch_size=16,
            grad_accumulation=1,
            lr=2e-2,
            warmup_steps=3,
            eval_every=20,
            checkpoint_every=40,
            log_every=1,
            heldout_fraction=0.1,
            megabatch_batches=50,
        )
    )
    uniform = math.log(22)
    first = result.history[0]["train_loss"]  # step 1: the untrained model, about a uniform guess
    last = float(np.mean([row["train_loss"] for row in result.history[-5:]]))
    assert first > 0.9 * uniform
    assert last < 0.6 * uniform, (first, last)
    assert result.heldout_loss < 0.6 * uniform


def test_killed_and_resumed_run_matches_uninterrupted_bit_exact(corpus, tmp_path, caplog) -> None:
    from transformers import AutoModelForMaskedLM

    reference = settings_for(corpus, tmp_path / "straight")
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        assert main(cli_args(reference)) == 0  # the CLI that torchrun runs (it configures logging)
    finally:
        logging.root.handlers[:], logging.root.level = handlers, level
    killed = settings_for(corpus, tmp_path / "resumed", stop_after_step=5)  # last checkpoint at step 4
    stopped = train(killed)
    assert not stopped.completed and stopped.step == 5
    assert not Path(killed.output_model).exists()
    resumed = train(settings_for(corpus, tmp_path / "resumed", resume=True))
    assert resumed.completed and resumed.step == 6

    straight = AutoModelForMaskedLM.from_pretrained(reference.output_model)
    again = AutoModelForMaskedLM.from_pretrained(killed.output_model)
    assert type(straight).__name__ == "BertForMaskedLM"
    assert _same_weights(straight.state_dict(), again.state_dict())
    assert _same_weights(resumed.model.state_dict(), again.state_dict())
    assert json.loads((Path(reference.output_model) / "token_dictionary.json").read_text())["<mask>"] == 1
    history_a = Path(reference.history).read_text().splitlines()
    history_b = Path(killed.history).read_text().splitlines()
    strip = lambda rows: [r.split("\t")[:4] + r.split("\t")[5:] for r in rows]  # noqa: E731 (all but tokens/s)
    assert strip(history_a) == strip(history_b)
    assert "heldout_mlm_loss" in Path(reference.heldout).read_text()

    # a checkpoint of other settings is not resumed (its run's outputs are being remade): afresh, said why
    with caplog.at_level(logging.WARNING, logger="cellfate.foundation.train"):
        other = train(settings_for(corpus, tmp_path / "resumed", resume=True, lr=1e-3))
    assert other.completed and other.step == 6
    assert "not resuming" in caplog.text and "written with lr=0.003 but this run has lr=0.001" in caplog.text
    fresh = train(settings_for(corpus, tmp_path / "fresh", lr=1e-3))
    assert _same_weights(other.model.state_dict(), fresh.model.state_dict())


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _ddp_worker(rank: int, world: int, ports: list[int], corpus, out: str) -> None:
    """One gloo rank: an uninterrupted run, then a run stopped after step 3 and resumed (checkpoint at 2)."""
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1")
    runs = [("straight", {}), ("resumed", {"stop_after_step": 3}), ("resumed", {"resume": True})]
    for port, (name, extra) in zip(ports, runs):
        os.environ["MASTER_PORT"] = str(port)
        result = train(settings_for(corpus, Path(out) / name, **extra))
    torch.save(result.model.state_dict(), Path(out) / f"resumed-rank{rank}.pt")


def test_two_gloo_ranks_end_identical_and_resume_exactly(corpus, tmp_path) -> None:
    from transformers import AutoModelForMaskedLM, BertForMaskedLM  # noqa: F401 (imported once, inherited by fork)

    # fork, not spawn: the ranks inherit the imported libraries instead of paying ~10 s each to import them;
    # a failing rank raises here with its traceback and the other one is stopped.
    mp.start_processes(
        _ddp_worker, args=(2, _free_ports(3), corpus, str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )

    rank0 = torch.load(tmp_path / "resumed-rank0.pt")
    rank1 = torch.load(tmp_path / "resumed-rank1.pt")
    assert _same_weights(rank0, rank1)  # DDP kept the ranks in lockstep
    straight = AutoModelForMaskedLM.from_pretrained(tmp_path / "straight/model").state_dict()
    assert _same_weights(straight, rank0)  # killed + resumed under 2 ranks == uninterrupted


@pytest.mark.parametrize(
    "problem", ["token beyond vocabulary", "model/dictionary mismatch", "missing shard", "lengths file mismatch"]
)
def test_user_errors_are_one_line(problem: str, tmp_path) -> None:
    corpus = make_corpus(tmp_path / "data", n_cells=(12,), bad_id=99 if problem == "token beyond vocabulary" else None)
    overrides: dict = {"heldout_fraction": 0.0}
    if problem == "model/dictionary mismatch":
        spec = (REPO / "config/models/tiny.yaml").read_text() + "vocab_size: 1000\n"
        (tmp_path / "model.yaml").write_text(spec)
        overrides["model_config"] = str(tmp_path / "model.yaml")
        expected = "vocab_size 1000 but the token dictionary"
    elif problem == "missing shard":
        corpus = (corpus[0], corpus[1] + [str(tmp_path / "data/tokenize/shards/panglaodb/absent")])
        expected = "tokenized shard not found"
    elif problem == "lengths file mismatch":
        np.save(f"{corpus[1][0]}.lengths.npy", np.ones(3, dtype=np.int32))
        expected = "lengths file holds 3 values but its shard has 12 cells"
    else:
        expected = "token id 99 is outside the vocabulary of 42 tokens"
    with pytest.raises(CellfateError, match=expected) as info:
        train(settings_for(corpus, tmp_path / "run", **overrides))
    assert "\n" not in str(info.value)


def test_shipped_model_configs(tmp_path) -> None:
    path = tmp_path / "token_dictionary.json"
    path.write_text(json.dumps({"<pad>": 0, "<mask>": 1} | {f"ENSMUSG{i:011d}": i + 2 for i in range(56_082)}))
    vocab = load_token_dictionary(path)
    base = bert_config(read_model_yaml(REPO / "config/models/base.yaml"), vocab)
    assert (base.num_hidden_layers, base.hidden_size, base.num_attention_heads, base.intermediate_size) == (
        6,
        256,
        4,
        512,
    )
    assert (base.hidden_act, base.hidden_dropout_prob, base.max_position_embeddings) == ("silu", 0.02, 2048)
    assert base.vocab_size == 56_084 and base.pad_token_id == 0
    # YAML -> BertConfig -> YAML keeps every architecture key
    spec = read_model_yaml(REPO / "config/models/large12.yaml")
    large = bert_config(spec, vocab)
    assert {k: v for k, v in model_yaml(large).items() if k != "vocab_size"} == {
        k: spec[k] for k in model_yaml(large) if k != "vocab_size"
    }
    with torch.device("meta"):
        model = build_model(large)
    n = sum(p.numel() for p in model.parameters())
    embedding = model.bert.embeddings.word_embeddings.weight.numel()
    assert 20e6 < n < 23e6 and 0.6 < embedding / n < 0.72  # ~21M, two thirds gene embeddings (tied)
    assert model.config._attn_implementation == "sdpa"
    (tmp_path / "bad.yaml").write_text("num_hidden_layers: 2\nhidden_size: 30\n")
    with pytest.raises(CellfateError, match="lacks"):
        read_model_yaml(tmp_path / "bad.yaml")


def test_launch_commands() -> None:
    assert launch.expand_hostlist("gpu[01-03,07],login1") == ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]
    assert launch.expand_hostlist("r[1-2]-n[8-9]") == ["r1-n8", "r1-n9", "r2-n8", "r2-n9"]
    one = launch.pretrain_command(4, 1, ["--seed", "1"])
    assert one[1:] == [
        "-m",
        "cellfate.foundation.launch",
        "torchrun",
        "--standalone",
        "--nnodes=1",
        "--nproc_per_node=4",
        "-m",
        "cellfate.foundation.train",
        "--seed",
        "1",
    ]
    assert launch.pretrain_command(0, 1, ["--seed", "1"])[1:] == ["-m", "cellfate.foundation.train", "--seed", "1"]
    job = launch.pretrain_command(8, 2, ["--seed", "1"], cpus_per_task=32, port=29600, srun="srun")
    assert job[:7] == [
        "srun",
        "--nodes=2",
        "--ntasks=2",
        "--ntasks-per-node=1",
        "--cpus-per-task=32",
        "--gres=gpu:8",
        "--kill-on-bad-exit=1",
    ]
    assert job[-5:] == ["--nproc-per-node=8", "--rdzv-port=29600", "--", "--seed", "1"]
    env = {"SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_STEP_NUM_NODES": "2", "SLURM_JOB_ID": "4242"}
    node = launch.slurm_torchrun_command(env, 8, ["--seed", "1"], port=29600, python="py")
    assert node == [
        "py",
        "-m",
        "cellfate.foundation.launch",
        "torchrun",
        "--nnodes=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=gpu07:29600",
        "--rdzv-id=4242",
        "--max-restarts=0",
        "--nproc_per_node=8",
        "-m",
        "cellfate.foundation.train",
        "--seed",
        "1",
    ]
    with pytest.raises(CellfateError, match="not inside a Slurm step"):
        launch.slurm_torchrun_command({}, 8, [])
    assert launch.train_arguments(shards=["a", "b"], resume=True, bf16=False, max_steps=None, lr=0.001) == [
        "--shards",
        "a",
        "b",
        "--resume",
        "--no-bf16",
        "--lr",
        "0.001",
    ]
