"""Packed (padding-free) pretraining batches compute what padded ones do: the same masked-LM loss and
gradients, cells that do not see their pack neighbours, bit-exact resumption, and a saved model
that is a plain BERT. Tiny models on CPU (fp32), a few seconds."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cellfate.foundation.collator import MaskingCollator, masking_generator
from cellfate.foundation.config import bert_config, build_model, read_model_yaml
from cellfate.foundation.objective import MaskedLMObjective
from cellfate.foundation import packing
from cellfate.foundation.packing import PACKED, pack, packed_kwargs, use_packed_attention
from cellfate.foundation.train import train
from cellfate.foundation.vocab import TokenDictionary
from test_pretrain import TINY, _same_weights, make_corpus, one_thread, settings_for  # noqa: F401 (fixture)

N_GENES = 80


@pytest.fixture(scope="module")
def world():
    """A tiny BERT without dropout (so both layouts run the same function) and its collator."""
    vocab = TokenDictionary(path="<test>", token_to_id={"<pad>": 0, "<mask>": 1} | {f"G{i}": i + 2 for i in range(N_GENES)})
    spec = read_model_yaml(TINY) | {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    spec["max_position_embeddings"] = 64
    torch.manual_seed(3)
    model = build_model(bert_config(spec, vocab))
    return model, MaskingCollator(vocab, 64, mlm_probability=0.4)


def _cells(lengths, seed):
    rng = np.random.default_rng(seed)
    return [rng.permutation(N_GENES)[:n] + 2 for n in lengths]


def _loss_and_grads(model, batch, packed: bool):
    model = copy.deepcopy(model)
    if packed:
        use_packed_attention(model)
    objective = MaskedLMObjective(model)
    extra = packed_kwargs(batch) if packed else {}
    loss_sum, count = objective(**batch, **extra)
    loss_sum.backward()
    return loss_sum.detach(), int(count), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(params=["per-cell", "re-padded"])
def attention_path(request, monkeypatch):
    """Both CPU paths of the packed attention: one SDPA call per cell, or short cells re-padded."""
    monkeypatch.setattr(packing, "SHORT_CELLS", 0 if request.param == "per-cell" else 10**6)
    return request.param


@pytest.mark.parametrize("multiple_of", [1, 8])
def test_packed_loss_and_gradients_equal_padded(world, multiple_of, attention_path) -> None:
    model, collator = world
    padded = collator.mask(collator.pad(_cells([37, 5, 64, 1, 20, 12], seed=0)), masking_generator(0, 1))
    packed = pack(padded, collator.pad_id, multiple_of)
    assert packed["input_ids"].shape == (1, -(-139 // multiple_of) * multiple_of)
    assert int(packed["attention_mask"].sum()) == 139 and packed["position_ids"].max() == 63
    loss_a, count_a, grads_a = _loss_and_grads(model, padded, packed=False)
    loss_b, count_b, grads_b = _loss_and_grads(model, packed, packed=True)
    assert count_a == count_b > 10
    assert torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-5), (loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and "bert.embeddings.position_embeddings.weight" in grads_a
    for name, grad in grads_a.items():
        assert torch.allclose(grad, grads_b[name], rtol=1e-5, atol=1e-5), name


def _cell_hidden(model, collator, cells, which: int):
    """Hidden states of cell ``which`` when ``cells`` are packed into one row."""
    batch = pack(collator.pad(cells), collator.pad_id)
    with torch.no_grad():
        hidden = model.bert(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            cu_seqlens=batch["cu_seqlens"],
            **packed_kwargs(batch),
        ).last_hidden_state[0]
    start, end = packed_kwargs(batch)["spans"][which]
    return hidden[start:end]


def test_a_cell_does_not_see_its_pack_neighbours(world, attention_path) -> None:
    model, collator = world
    model = copy.deepcopy(model).eval()
    use_packed_attention(model)
    cell, first, second = _cells([30, 17, 44], seed=1)
    with_first = _cell_hidden(model, collator, [first, cell], 1)
    with_second = _cell_hidden(model, collator, [second, cell], 1)
    alone = _cell_hidden(model, collator, [cell], 0)
    assert torch.allclose(with_first, with_second, atol=1e-6) and torch.allclose(with_first, alone, atol=1e-6)
    # padded batches still run (SDPA with its padding mask) on a model switched to the packed attention
    padded = collator.pad([first, cell])
    with torch.no_grad():
        hidden = model.bert(**padded).last_hidden_state[1, :30]
    assert torch.allclose(hidden, alone, atol=1e-5)
    # the check can fail: attention across the whole row mixes the cells
    with torch.no_grad():
        mixed = model.bert(input_ids=pack(padded, 0)["input_ids"]).last_hidden_state[0, 17:]
    assert not torch.allclose(mixed, alone, atol=1e-3)


def test_packed_run_resumes_bit_exact_and_saves_a_plain_bert(tmp_path) -> None:
    from transformers import BertForMaskedLM

    corpus = make_corpus(tmp_path / "data")
    straight = train(settings_for(corpus, tmp_path / "straight", packing=True))
    killed = settings_for(corpus, tmp_path / "resumed", packing=True, stop_after_step=5)
    assert not train(killed).completed
    resumed = train(settings_for(corpus, tmp_path / "resumed", packing=True, resume=True))
    assert resumed.completed and resumed.step == 6
    assert _same_weights(straight.model.state_dict(), resumed.model.state_dict())
    assert all(np.isfinite(row["train_loss"]) for row in straight.history)
    saved = Path(killed.output_model)
    assert PACKED not in (saved / "config.json").read_text()
    assert json.loads((saved / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    loaded = BertForMaskedLM.from_pretrained(saved)
    assert _same_weights(loaded.state_dict(), resumed.model.state_dict())


def _packed_ddp_worker(rank: int, world: int, ports: list[int], corpus, out: str) -> None:
    """One gloo rank of a packed run, straight and stopped + resumed (rank 1 meets an empty batch)."""
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1")
    runs = [("straight", {}), ("resumed", {"stop_after_step": 3}), ("resumed", {"resume": True})]
    for port, (name, extra) in zip(ports, runs):
        os.environ["MASTER_PORT"] = str(port)
        result = train(settings_for(corpus, Path(out) / name, packing=True, **extra))
    torch.save(result.model.state_dict(), Path(out) / f"resumed-rank{rank}.pt")


def test_packed_run_on_two_gloo_ranks(tmp_path) -> None:
    import torch.multiprocessing as mp
    from transformers import BertForMaskedLM

    from test_pretrain import _free_ports

    corpus = make_corpus(tmp_path / "data")  # 65 training cells: rank 1's last batch of an epoch is empty
    mp.start_processes(
        _packed_ddp_worker, args=(2, _free_ports(3), corpus, str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    rank0 = torch.load(tmp_path / "resumed-rank0.pt")
    assert _same_weights(rank0, torch.load(tmp_path / "resumed-rank1.pt"))
    straight = BertForMaskedLM.from_pretrained(tmp_path / "straight/model").state_dict()
    assert _same_weights(straight, rank0)
