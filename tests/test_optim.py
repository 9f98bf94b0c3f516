import pytest
import torch
from torch import nn

from seqlab.errors import ConfigError
from seqlab.train import optim
from seqlab.train.config import TrainConfig
from seqlab.train.optim import Muon, Schedule, build_optimizer, lr_factor, newton_schulz


def test_step_schedule_equals_the_lectures_steplr():
    cfg = TrainConfig(lr=4.0, schedule="step", gamma=0.9)
    steps_per_epoch = 7
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, cfg)
    sched = Schedule(opt, lr_factor(cfg, steps_per_epoch, 35))
    ref_opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=4.0)
    ref = torch.optim.lr_scheduler.StepLR(ref_opt, 1, gamma=0.9)
    for _epoch in range(5):
        for _ in range(steps_per_epoch):
            assert abs(sched.get_lr() - ref_opt.param_groups[0]["lr"]) < 1e-12
            sched.step()
        ref_opt.step()
        ref.step()


def test_warmup_then_cosine_reaches_min():
    cfg = TrainConfig(lr=1.0, schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    f = lr_factor(cfg, steps_per_epoch=10, total_steps=110)
    assert abs(f(0) - 0.1) < 1e-9 and abs(f(9) - 1.0) < 1e-9
    assert abs(f(110) - 0.1) < 1e-9 and f(60) < f(30)


def test_sparse_embeddings_get_sparse_adam():
    model = nn.Sequential(nn.EmbeddingBag(10, 4, sparse=True), nn.Linear(4, 2))
    opt = build_optimizer(model, TrainConfig(optimizer="adam", lr=0.01))
    kinds = sorted(type(o).__name__ for o in opt.optimizers)
    assert kinds == ["Adam", "SparseAdam"]
    out = model[1](model[0](torch.tensor([1, 2, 3]), torch.tensor([0, 2])))
    out.sum().backward()
    opt.step()  # would raise on a sparse gradient given to Adam


def test_schedule_state_round_trip():
    cfg = TrainConfig(lr=1.0, schedule="linear", warmup_steps=3)
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    s = Schedule(opt, lr_factor(cfg, 5, 50))
    for _ in range(17):
        s.step()
    opt2 = build_optimizer(nn.Linear(2, 2), cfg)
    s2 = Schedule(opt2, lr_factor(cfg, 5, 50))
    s2.load_state_dict(s.state_dict())
    assert s2.get_lr() == s.get_lr()


def test_our_sgd_equals_torch_sgd_dense_sparse_momentum_weight_decay():
    from seqlab.train.optim import SGD

    for sparse, momentum, wd in [(True, 0.0, 0.0), (False, 0.9, 0.01), (False, 0.0, 0.1)]:
        models = []
        for _ in range(2):
            torch.manual_seed(0)
            models.append(nn.ModuleList([nn.EmbeddingBag(20, 4, sparse=sparse), nn.Linear(4, 3)]))
        ours = SGD(list(models[0].parameters()), lr=0.5, momentum=momentum, weight_decay=wd)
        ref = torch.optim.SGD(models[1].parameters(), lr=0.5, momentum=momentum, weight_decay=wd)
        for step in range(4):
            for m, opt in ((models[0], ours), (models[1], ref)):
                opt.zero_grad()
                x = torch.tensor([step, 3, 5, 7, 11 + step])
                out = m[1](m[0](x, torch.tensor([0, 2])))
                torch.nn.functional.cross_entropy(out, torch.tensor([0, 2])).backward()
                opt.step()
        for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-6), (sparse, momentum, wd)


def test_sparse_gradients_with_momentum_are_a_config_error():
    import pytest

    from seqlab.errors import ConfigError

    with pytest.raises(ConfigError, match="sparse"):
        build_optimizer(nn.EmbeddingBag(10, 4, sparse=True), TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9))


def _adagrad_pair(sparse: bool, dim: int, wd: float = 0.0):
    """(ours, torch's) on two equal models of an embedding bag + linear layer, trained 5 steps each."""
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(nn.ModuleList([nn.EmbeddingBag(20, dim, sparse=sparse), nn.Linear(dim, 3)]))
    ours = build_optimizer(models[0], TrainConfig(optimizer="adagrad", lr=0.3, weight_decay=wd))
    theirs = torch.optim.Adagrad(models[1].parameters(), lr=0.3, weight_decay=wd, eps=1e-10)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        text, offsets = torch.randint(0, 20, (12,), generator=g), torch.tensor([0, 3, 7])
        for m, o in zip(models, (ours, theirs), strict=True):
            o.zero_grad()
            m[1](m[0](text, offsets)).pow(2).sum().backward()
            o.step()
    return models


# torch's own sparse Adagrad (the reference) builds its COO tensors without invariant checks and says so
@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")
def test_our_adagrad_equals_torch_adagrad_dense_and_sparse_rows_of_one():
    for sparse, dim, wd in [(False, 4, 0.0), (False, 4, 0.1), (True, 1, 0.0)]:  # row-wise = elementwise at dim 1
        ours, theirs = _adagrad_pair(sparse, dim, wd)
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-6), (sparse, dim, wd)


def test_rowwise_adagrad_keeps_one_accumulator_per_row_and_moves_only_touched_rows():
    from seqlab.train.optim import Adagrad

    emb = nn.Embedding(6, 3, sparse=True)
    before = emb.weight.detach().clone()
    opt = Adagrad([emb.weight], lr=0.5, sparse={id(emb.weight)})
    emb(torch.tensor([1, 1, 4])).sum().backward()  # row 1 twice: gradient 2 per element, row 4: 1
    opt.step()
    acc = opt.sums[0]
    assert acc.shape == (6,) and acc.tolist() == [0, 4, 0, 0, 1, 0]  # mean of the row's squared gradient
    moved = (emb.weight.detach() != before).any(1).tolist()
    assert moved == [False, True, False, False, True, False]
    assert torch.allclose(before[1] - emb.weight.detach()[1], torch.full((3,), 0.5))  # lr * g / sqrt(acc)


def test_adagrad_refuses_weight_decay_on_sparse_rows_and_round_trips_its_state():
    import pytest

    from seqlab.errors import ConfigError

    model = nn.Sequential(nn.EmbeddingBag(10, 4, sparse=True), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="weight_decay"):
        build_optimizer(model, TrainConfig(optimizer="adagrad", lr=0.1, weight_decay=0.01))
    opt = build_optimizer(model, TrainConfig(optimizer="adagrad", lr=0.1))
    model[1](model[0](torch.tensor([1, 2, 3]), torch.tensor([0, 2]))).sum().backward()
    opt.step()
    again = build_optimizer(model, TrainConfig(optimizer="adagrad", lr=0.1))
    again.load_state_dict(opt.state_dict())
    assert all(torch.equal(again.optimizers[0].sums[k], v) for k, v in opt.optimizers[0].sums.items())


def _lm(**kw):
    from seqlab.models.lm import TransformerLM, TransformerLMConfig

    torch.manual_seed(0)
    return TransformerLM(TransformerLMConfig(dim=16, heads=2, layers=2, **kw), vocab_size=11, max_len=8)


def _lm_step(model, opt, schedule=None):
    x = torch.randint(11, (4, 8), generator=torch.Generator().manual_seed(1))
    logits, _ = model(x[:, :-1])
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()
    if schedule is not None:
        schedule.step()
    return loss.item()


@pytest.mark.parametrize("tied", [True, False])
def test_muon_takes_the_hidden_matrices_and_adamw_the_rest(tied):
    model = _lm(tie_embeddings=tied)
    opt = build_optimizer(model, TrainConfig(optimizer="muon", lr=0.01, muon_lr=0.05, weight_decay=0.1))
    muon, adamw = opt.optimizers
    assert isinstance(muon, Muon) and isinstance(adamw, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    matrices = sorted(names[id(p)] for g in muon.param_groups for p in g["params"])
    assert matrices == sorted(n for n, p in model.named_parameters() if n.startswith("decoder.layers") and p.dim() == 2)
    rest = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    assert "embedding.weight" in rest and ("head.weight" in rest) is not tied
    assert len(rest) + len(matrices) == len(names)
    assert muon.param_groups[0]["lr"] == 0.05 and adamw.param_groups[0]["lr"] == 0.01
    schedule = Schedule(opt, lambda s: 0.5)  # a schedule scales both optimisers' rates
    assert muon.param_groups[0]["lr"] == 0.025 and adamw.param_groups[0]["lr"] == 0.005
    losses = [_lm_step(model, opt) for _ in range(30)]
    assert losses[-1] < losses[0] - 0.5  # it learns
    again = _lm(tie_embeddings=tied)
    opt2 = build_optimizer(again, TrainConfig(optimizer="muon", lr=0.01, muon_lr=0.05, weight_decay=0.1))
    Schedule(opt2, lambda s: 0.5)
    again.load_state_dict(model.state_dict())
    opt2.load_state_dict(opt.state_dict())  # resumes: the next steps are equal
    assert _lm_step(model, opt, schedule) == _lm_step(again, opt2)


def test_muon_refuses_sparse_embeddings():
    model = nn.EmbeddingBag(10, 4, sparse=True)
    with pytest.raises(ConfigError, match="muon"):
        build_optimizer(model, TrainConfig(optimizer="muon"))


def test_an_optimizer_state_of_separate_qkv_projections_is_stacked():
    """seqlab 0.2.0 trained W^Q, W^K, W^V as three modules: the AdamW state saved then (moments per matrix, in
    the old parameter order) is the state of today's stacked in_proj, so a resumed run continues exactly."""
    from seqlab.train.optim import stack_optimizer_state

    model = _lm(tie_embeddings=False)
    cfg = TrainConfig(optimizer="adamw", lr=0.01)
    opt = build_optimizer(model, cfg)
    for _ in range(3):
        _lm_step(model, opt)
    today = opt.state_dict()
    names = [n for n, _ in model.named_parameters()]
    old = []  # (old name, today's name, its third of in_proj), in the old model's order: module by module
    for n in names:
        head, _, kind = n.rpartition(".")
        if head.endswith(".in_proj") and kind == "weight":
            prefix = head.removesuffix(".in_proj")
            old += [(f"{prefix}.{m}.{k}", f"{head}.{k}", i) for i, m in enumerate(("q_proj", "k_proj", "v_proj"))
                    for k in ("weight", "bias")]
        elif not head.endswith(".in_proj"):
            old.append((n, n, None))
    D = 16
    state = {}
    for k, (_, new, third) in enumerate(old):
        saved = today[0]["state"][names.index(new)]
        state[k] = {key: v[third * D:(third + 1) * D] if third is not None and torch.is_tensor(v) and v.dim() else v
                    for key, v in saved.items()}
    old_state = [{"state": state, "param_groups": [{**today[0]["param_groups"][0], "params": list(range(len(old)))}]}]
    fresh = build_optimizer(model, cfg)
    stacked = stack_optimizer_state(fresh, model, old_state)
    for i, s in today[0]["state"].items():
        for key, v in s.items():
            torch.testing.assert_close(stacked[0]["state"][i][key], v)
    assert stack_optimizer_state(fresh, model, today) == today  # today's state is left as it is


def test_muon_orthogonalises_matrices_of_one_shape_together_as_it_would_each_alone(monkeypatch):
    monkeypatch.setattr(optim, "newton_schulz_dtype", lambda device: torch.float32)
    torch.manual_seed(0)
    w = [nn.Parameter(torch.randn(6, 4) * s) for s in (1.0, 0.01, 30.0)] + [nn.Parameter(torch.randn(4, 6))]
    together = [nn.Parameter(p.detach().clone()) for p in w]
    alone = [[nn.Parameter(p.detach().clone())] for p in w]
    opt = Muon(together, lr=0.05, weight_decay=0.1, nesterov=True)
    opts = [Muon(ps, lr=0.05, weight_decay=0.1, nesterov=True) for ps in alone]
    for _ in range(3):
        grads = [torch.randn_like(p) * s for p, s in zip(w, (1.0, 1e-3, 50.0, 1.0), strict=True)]
        for p, q, g in zip(together, alone, grads, strict=True):
            p.grad, q[0].grad = g.clone(), g.clone()
        opt.step()
        for o in opts:
            o.step()
    for p, (q,), first in zip(together, alone, w, strict=True):  # each matrix normalised on its own, in the stack
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        assert not torch.equal(p, first)
    g = torch.randn(3, 8, 5)
    torch.testing.assert_close(newton_schulz(g, (3.4445, -4.775, 2.0315), 5, 1e-7),
                               torch.stack([newton_schulz(m, (3.4445, -4.775, 2.0315), 5, 1e-7) for m in g]))


@pytest.mark.parametrize("ns_dtype", [torch.float32, torch.bfloat16])
def test_our_muon_is_torchs_muon_with_the_newton_schulz_dtype_of_the_machine(monkeypatch, ns_dtype):
    monkeypatch.setattr(optim, "newton_schulz_dtype", lambda device: ns_dtype)
    torch.manual_seed(0)
    w = [nn.Parameter(torch.randn(6, 4)), nn.Parameter(torch.randn(3, 5))]
    ours, theirs = [nn.Parameter(p.detach().clone()) for p in w], [nn.Parameter(p.detach().clone()) for p in w]
    a, b = Muon(ours, lr=0.05, weight_decay=0.1), torch.optim.Muon(theirs, lr=0.05, weight_decay=0.1)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in w]
        for params, opt in ((ours, a), (theirs, b)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for x, y in zip(ours, theirs, strict=True):
        if ns_dtype == torch.bfloat16:  # torch's orthogonalises in bfloat16 too
            torch.testing.assert_close(x, y, atol=1e-3, rtol=1e-3)
        else:  # ours in float32: equal to bfloat16's precision, not equal
            torch.testing.assert_close(x, y, atol=2e-2, rtol=2e-2)
            assert not torch.equal(x, y)
    g = torch.randn(8, 5)
    s = torch.linalg.svdvals(newton_schulz(g, (3.4445, -4.775, 2.0315), 5, 1e-7))
    assert s.min() > 0.5 and s.max() < 1.5  # about orthogonal (Muon's iteration: singular values in ~[0.7, 1.2])


def test_newton_schulz_runs_in_bfloat16_only_where_matrix_units_make_it_fast(monkeypatch):
    for avx512_bf16, amx, expected in ((False, False, torch.float32), (True, False, torch.bfloat16),
                                       (False, True, torch.bfloat16)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert optim.newton_schulz_dtype(torch.device("cpu")) == expected
    assert optim.newton_schulz_dtype(torch.device("cuda")) == torch.bfloat16
    assert optim.newton_schulz_dtype(torch.device("mps")) == torch.float32
