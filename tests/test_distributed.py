"""Data-parallel training: plan sharding, and 2 gloo ranks in spawned processes == 1 process with twice the batch;
resume under DDP."""

import json
import shutil
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

import seqlab
from seqlab.errors import CheckpointError
from seqlab.train.checkpoint import checkpoint_dirs
from seqlab.train.distributed import all_reduce_sums, any_rank, broadcast_object, is_main, shard_plan, world_size
from tests.helpers import tiny_classification

# a dense model (DDP averages dense gradients), no dropout, plain SGD, batches cut from one permutation
DENSE = {"model": "cnn", "model.dim": 8, "model.filters": 4, "model.widths": [2, 3], "model.dropout": 0.0,
         "train.bucket": False, "train.optimizer": "sgd", "train.lr": 0.5, "train.epochs": 2, "threads": 1,
         "train.log_every": 4, "train.keep_checkpoints": 100}


def test_shard_plan_covers_every_batch_once_with_weights_that_make_the_global_mean():
    plan = [np.arange(i * 4, min(i * 4 + 4, 18)) for i in range(5)]  # 18 examples, batch 4: 4 4 4 4 2
    shards = [shard_plan(plan, r, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3  # every rank runs the same number of steps
    real = [item for s in shards for item, w in s if w > 0]
    assert sorted(np.concatenate(real).tolist()) == list(range(18))
    assert [w for _, w in shards[0]] == [1.0, 1.0, 2.0]  # the last step: 2 examples on rank 0 ...
    assert [w for _, w in shards[1]] == [1.0, 1.0, 0.0]  # ... and a filler of weight 0 on rank 1
    # equal batches of unequal size: the weights make sum_r w_r * mean_r / W the mean over the step
    uneven = shard_plan([np.arange(4), np.arange(2)], 0, 2)[0][1], shard_plan([np.arange(4), np.arange(2)], 1, 2)[0][1]
    assert uneven == (2 * 4 / 6, 2 * 2 / 6)
    assert [w for _, w in shard_plan(plan, 0, 1)] == [1.0] * 5  # one process: the plan itself


def test_helpers_are_the_identity_without_a_process_group():
    assert world_size() == 1 and is_main()
    assert all_reduce_sums({"n": 3.0}) == {"n": 3.0}
    assert any_rank(True, False) == [True, False]
    assert broadcast_object({"a": 1}) == {"a": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, overrides: dict, out: str | None, resume: str | None) -> None:
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    if resume is not None:
        run = seqlab.train(resume=resume, quiet=True)
    else:
        run = seqlab.train(None, overrides, out=out, quiet=True)
    # every rank returns once rank 0 has written the run (and all leave the group together)
    assert (run / "summary.json").is_file(), f"rank {rank} returned before the run was written"


def _spawn(world: int, overrides: dict | None = None, out=None, resume=None) -> None:
    mp.spawn(_worker, args=(world, _free_port(), overrides, str(out) if out else None,
                            str(resume) if resume else None), nprocs=world, join=True)


def _last_weights(run):
    return load_file(str(checkpoint_dirs(run)[-1] / "model.safetensors"))


def _records(run, split):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


def test_two_ranks_equal_one_process_with_twice_the_batch_and_resume_under_ddp(tmp_path):
    files = tiny_classification(tmp_path, n_train=60, n_test=20)  # 57 train after the 5% hold-out: uneven tail
    ddp = tmp_path / "ddp"
    _spawn(2, {**files, **DENSE, "train.batch_size": 4, "train.checkpoint_every": 12}, out=ddp)
    one = seqlab.train(None, {**files, **DENSE, "train.batch_size": 8}, out=tmp_path / "one", quiet=True)

    # same weights after the same steps (8 per epoch: 15 batches of 4 on 2 ranks, 8 batches of 8 on one)
    w2, w1 = _last_weights(ddp), _last_weights(one)
    assert checkpoint_dirs(ddp)[-1].name == checkpoint_dirs(one)[-1].name == "step-000000016"
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6)
    # metric sums reduced over the ranks: the epoch's train loss and accuracy are those of one process
    for a, b in zip(_records(ddp, "train_epoch"), _records(one, "train_epoch"), strict=True):
        assert a["accuracy"] == pytest.approx(b["accuracy"]) and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert [r["step"] for r in _records(ddp, "train")] == [4, 8, 12, 16]  # rank 0 alone writes, once per step
    assert _records(ddp, "test")[0]["accuracy"] == pytest.approx(_records(one, "test")[0]["accuracy"])

    # resume mid-epoch 2 (step 12) under DDP: the same weights and epoch metrics as the uninterrupted run
    part = tmp_path / "part"
    part.mkdir()
    for f in ("config.yaml", "vocab.json", "model.safetensors"):
        shutil.copy(ddp / f, part / f)
    mid = next(c for c in checkpoint_dirs(ddp) if c.name == "step-000000012")
    shutil.copytree(mid, part / "checkpoints" / mid.name)
    lines = int(torch.load(mid / "train_state.pt", weights_only=True)["metrics_lines"])
    (part / "metrics.jsonl").write_text("".join((ddp / "metrics.jsonl").read_text().splitlines(True)[:lines]))
    _spawn(2, resume=part)
    wr = _last_weights(part)
    assert all(torch.equal(wr[k], v) for k, v in w2.items())
    assert _records(part, "train_epoch")[-1]["loss"] == pytest.approx(_records(ddp, "train_epoch")[-1]["loss"])

    # a run checkpointed by 2 processes is not resumed by 1 (its steps are a different share of the data)
    with pytest.raises(CheckpointError, match="2 processes"):
        seqlab.train(resume=part, overrides={"train.epochs": 3}, quiet=True)


def test_truncated_bptt_under_ddp_each_rank_carries_its_own_streams_and_equals_one_process(tmp_path):
    """Sequential windows, 2 ranks of 2 streams each == one process over the 4 streams: the same losses and
    weights, and a resume mid-epoch under DDP gives each rank back its own hidden state."""
    from tests.test_task_lm import corpus, small_rnn

    over = small_rnn(corpus(tmp_path, lines=90), **{"train.epochs": 2, "train.batch_size": 2,
                                                    "train.checkpoint_every": 7, "train.log_every": 1,
                                                    "train.keep_checkpoints": 40})
    ddp = tmp_path / "ddp"
    _spawn(2, over, out=ddp)
    one = seqlab.train(None, {**over, "train.batch_size": 4}, out=tmp_path / "one", quiet=True)
    assert [r["step"] for r in _records(ddp, "train")] == [r["step"] for r in _records(one, "train")]
    for a, b in zip(_records(ddp, "train_epoch"), _records(one, "train_epoch"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    w2, w1 = _last_weights(ddp), _last_weights(one)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5)

    part = tmp_path / "part"  # resumed from step 7, mid-epoch 1, where each rank carries its own state
    part.mkdir()
    for f in ("config.yaml", "tokenizer.json", "model.safetensors"):
        shutil.copy(ddp / f, part / f)
    mid = next(c for c in checkpoint_dirs(ddp) if c.name == "step-000000007")
    state = torch.load(mid / "train_state.pt", weights_only=True)
    h0, h1 = (s["hidden"][0] for s in state["task"])
    assert h0.shape == h1.shape and h0.size(1) == 2 and not torch.equal(h0, h1)  # (layers, 2 streams, hidden)
    shutil.copytree(mid, part / "checkpoints" / mid.name)
    lines = int(state["metrics_lines"])
    (part / "metrics.jsonl").write_text("".join((ddp / "metrics.jsonl").read_text().splitlines(True)[:lines]))
    _spawn(2, resume=part)
    wr = _last_weights(part)
    assert all(torch.equal(wr[k], v) for k, v in w2.items())


def test_the_averaged_weights_under_ddp_are_those_of_one_process(tmp_path):
    """train.ema: each rank averages its own (identical) weights; the kept weights and the checkpoint's
    average are one process's with the whole batch, and a resume under DDP goes on with the saved average."""
    from tests.test_task_lm import corpus, small_rnn

    over = small_rnn(corpus(tmp_path, lines=90), **{"train.epochs": 2, "train.batch_size": 2,
                                                    "train.checkpoint_every": 7, "train.keep_checkpoints": 40,
                                                    "train.ema": True, "train.ema_decay": 0.8,
                                                    "train.ema_start": 3})
    ddp = tmp_path / "ddp"
    _spawn(2, over, out=ddp)
    one = seqlab.train(None, {**over, "train.batch_size": 4}, out=tmp_path / "one", quiet=True)
    kept2, kept1 = (load_file(str(run / "model.safetensors")) for run in (ddp, one))
    ema2, ema1 = (torch.load(checkpoint_dirs(run)[-1] / "train_state.pt", weights_only=True)["ema"]
                  for run in (ddp, one))
    for k in kept1:
        torch.testing.assert_close(kept2[k], kept1[k], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ema2[k], ema1[k], rtol=1e-4, atol=1e-5)

    part = tmp_path / "part"  # resumed from step 7 (the average started at step 3)
    part.mkdir()
    for f in ("config.yaml", "tokenizer.json", "model.safetensors"):
        shutil.copy(ddp / f, part / f)
    mid = next(c for c in checkpoint_dirs(ddp) if c.name == "step-000000007")
    state = torch.load(mid / "train_state.pt", weights_only=True)
    assert state["ema"] is not None
    shutil.copytree(mid, part / "checkpoints" / mid.name)
    (part / "metrics.jsonl").write_text("".join((ddp / "metrics.jsonl").read_text().splitlines(True)
                                                [:int(state["metrics_lines"])]))
    _spawn(2, resume=part)
    ema_r = torch.load(checkpoint_dirs(part)[-1] / "train_state.pt", weights_only=True)["ema"]
    assert all(torch.equal(ema_r[k], v) for k, v in ema2.items())
    kept_r = load_file(str(part / "model.safetensors"))
    assert all(torch.equal(kept_r[k], v) for k, v in kept2.items())


# ---------------------------------------------------------------- device and speed options


def test_train_compile_runs_the_steps_through_torch_compile(tmp_path, monkeypatch):
    compiled = []

    def fake_compile(model):  # inductor needs minutes and a C compiler here: record the call, keep eager
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    files = tiny_classification(tmp_path, n_train=40, n_test=10)
    seqlab.train(None, {**files, **DENSE, "train.epochs": 1, "train.compile": True}, out=tmp_path / "c", quiet=True)
    assert len(compiled) == 1 and isinstance(compiled[0], torch.nn.Module)
    seqlab.train(None, {**files, **DENSE, "train.epochs": 1}, out=tmp_path / "e", quiet=True)
    assert len(compiled) == 1  # off by default


def test_device_choices_on_a_cpu_machine():
    from seqlab.errors import ConfigError
    from seqlab.train.device import autocast, grad_scaler, resolve_device

    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")
    cpu = torch.device("cpu")
    assert not grad_scaler(cpu, "fp16").is_enabled()  # the loss scaler is for fp16 on CUDA only
    with autocast(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_uses_the_grad_scaler(tmp_path):
    from seqlab.train.device import grad_scaler

    assert grad_scaler(torch.device("cuda"), "fp16").is_enabled()
    files = tiny_classification(tmp_path, n_train=40, n_test=10)
    seqlab.train(None, {**files, **DENSE, "train.epochs": 1, "device": "cuda", "precision": "fp16"},
                 out=tmp_path / "gpu", quiet=True)
