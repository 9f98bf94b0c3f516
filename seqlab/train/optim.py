"""Optimisers and learning-rate schedules.

Sparse embedding gradients (EmbeddingBag/Embedding with `sparse=True`) need an optimiser that takes
them: SGD and Adagrad do; for Adam/AdamW the sparse parameters go to `torch.optim.SparseAdam` and the rest
to the chosen optimiser, behind one object with the usual `step`/`zero_grad`/`state_dict` interface.
SGD and Adagrad are written out here (`SGD` equal to `torch.optim.SGD`, `Adagrad` to `torch.optim.Adagrad`
on dense parameters, tested): constructing any torch optimiser (or a subclass of `torch.optim.Optimizer`)
imports `torch._dynamo`, 0.7-1.7 s of start-up, which is much of a bag-of-n-grams run's budget.
Every schedule is a function of the optimiser step (epoch-based ones convert with steps_per_epoch),
so resuming at any step restores the learning rate exactly.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from seqlab.errors import ConfigError
from seqlab.nn.attention import STACKED
from seqlab.train.config import TrainConfig


def sparse_parameters(model: nn.Module) -> set[int]:
    """ids of the parameters that receive sparse gradients."""
    ids = set()
    for m in model.modules():
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse:
            ids.add(id(m.weight))
    return ids


class SGD:
    """Stochastic gradient descent: d = g + wd * p; with momentum μ, v = μ v + d (v = d at the first
    step) and d = v; then p = p - lr * d. Sparse gradients are applied as they are (only the rows a
    batch touched move), which needs momentum = weight decay = 0."""

    def __init__(self, params: list[nn.Parameter], lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.param_groups = [{"params": list(params), "lr": lr, "momentum": momentum, "weight_decay": weight_decay}]
        self.momentum_buffers: dict[int, torch.Tensor] = {}  # parameter index -> velocity

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        for i, p in enumerate(group["params"]):
            d = p.grad
            if d is None:
                continue
            if wd:
                d = d.add(p, alpha=wd)
            if mu:
                buf = self.momentum_buffers.get(i)
                if buf is None:
                    buf = self.momentum_buffers[i] = d.detach().clone()
                else:
                    buf.mul_(mu).add_(d)
                d = buf
            p.add_(d, alpha=-lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            p.grad = None

    def state_dict(self) -> dict:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"momentum_buffers": dict(self.momentum_buffers), "group": group}

    def load_state_dict(self, state: dict) -> None:
        self.momentum_buffers = {int(k): v for k, v in state["momentum_buffers"].items()}
        self.param_groups[0].update(state["group"])


class Adagrad:
    """Adagrad: on a dense parameter torch's (s += g², p -= lr g / (√s + eps)); on a sparse embedding the
    row-wise variant of recommendation models (FBGEMM's rowwise Adagrad): one accumulator per row, the
    mean of the row's squared gradient, so the state is (rows,) instead of (rows, dim) and a step touches
    only the rows of the batch. Weight decay (added to the gradient) is for dense parameters only."""

    def __init__(self, params: list[nn.Parameter], lr: float, weight_decay: float = 0.0, eps: float = 1e-10,
                 sparse: set[int] = frozenset()):
        self.param_groups = [{"params": list(params), "lr": lr, "weight_decay": weight_decay, "eps": eps}]
        self.sparse = [id(p) in sparse for p in self.param_groups[0]["params"]]
        self.sums: dict[int, torch.Tensor] = {}  # parameter index -> accumulated squared gradients

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        for i, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            if self.sparse[i]:
                self._row_step(i, p, g, lr, eps)
                continue
            if wd:
                g = g.add(p, alpha=wd)
            s = self.sums.get(i)
            if s is None:
                s = self.sums[i] = torch.zeros_like(p)
            s.addcmul_(g, g)
            p.addcdiv_(g, s.sqrt().add_(eps), value=-lr)

    def _row_step(self, i: int, p: torch.Tensor, grad: torch.Tensor, lr: float, eps: float) -> None:
        s = self.sums.get(i)
        if s is None:
            s = self.sums[i] = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
        rows, inverse = torch.unique(grad._indices()[0], return_inverse=True)  # (U,), (nnz,)
        g = torch.zeros(len(rows), *p.shape[1:], dtype=p.dtype, device=p.device)
        g.index_add_(0, inverse, grad._values())  # (U, dim): the rows' summed gradients
        acc = s.index_select(0, rows).add_(g.pow(2).flatten(1).mean(1))  # (U,)
        s.index_copy_(0, rows, acc)
        p.index_add_(0, rows, g.div_(acc.sqrt_().add_(eps).view(-1, *[1] * (p.dim() - 1))), alpha=-lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            p.grad = None

    def state_dict(self) -> dict:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"sums": dict(self.sums), "group": group}

    def load_state_dict(self, state: dict) -> None:
        self.sums = {int(k): v for k, v in state["sums"].items()}
        self.param_groups[0].update(state["group"])


def _unfused(names: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Today's parameter names -> (the names the model had before `STACKED` modules were fused, in its order:
    module by module, q_proj.weight, q_proj.bias, k_proj.weight, ...; {today's name: the old names stacked
    into it})."""
    order: list[str] = []
    sources: dict[str, list[str]] = {}
    i = 0
    while i < len(names):
        head = names[i].rpartition(".")[0]
        prefix, _, module = head.rpartition(".")
        j = i + 1
        if module not in STACKED:
            order.append(names[i])
            sources[names[i]] = [names[i]]
            i = j
            continue
        while j < len(names) and names[j].rpartition(".")[0] == head:
            j += 1
        kinds = [n.rpartition(".")[2] for n in names[i:j]]
        olds = [f"{prefix}.{o}" if prefix else o for o in STACKED[module]]
        order += [f"{o}.{k}" for o in olds for k in kinds]
        sources.update({n: [f"{o}.{k}" for o in olds] for n, k in zip(names[i:j], kinds, strict=True)})
        i = j
    return order, sources


def stack_optimizer_state(optimizers: Optimizers, model: nn.Module, states: list[dict]) -> list[dict]:
    """The saved states of optimisers built before `STACKED` modules were fused (seqlab 0.2.0: q_proj, k_proj,
    v_proj; today one in_proj), renumbered for today's parameters, their per-parameter tensors stacked as the
    weights are. A state that already fits (or holds another number of parameters) is returned as it is."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = []
    for opt, state in zip(optimizers.optimizers, states, strict=True):
        new_names = [names[id(p)] for g in opt.param_groups for p in g["params"]]
        order, sources = _unfused(new_names)
        key = next((k for k in ("state", "momentum_buffers", "sums") if k in state), None)  # torch's, SGD, Adagrad
        saved = state.get("param_groups")
        if (len(order) == len(new_names) or key is None
                or (saved is not None and sum(len(g["params"]) for g in saved) != len(order))):
            out.append(state)
            continue
        where = {n: k for k, n in enumerate(order)}
        moved: dict[int, object] = {}
        for i, name in enumerate(new_names):
            parts = [state[key][where[o]] for o in sources[name] if where[o] in state[key]]
            if not parts:
                continue
            moved[i] = ({k: torch.cat([q[k] for q in parts]) if torch.is_tensor(v) and v.dim() else v
                         for k, v in parts[0].items()} if isinstance(parts[0], dict) else torch.cat(parts))
        state = {**state, key: moved}
        if saved is not None:  # renumber the groups: today's parameters, in order
            sizes = [len(g["params"]) for g in opt.param_groups]
            state["param_groups"] = [{**g, "params": list(range(sum(sizes[:k]), sum(sizes[:k + 1])))}
                                     for k, g in enumerate(saved)]
        out.append(state)
    return out


class Optimizers:
    """One or two torch optimisers (dense, sparse) driven as one."""

    def __init__(self, optimizers: list[torch.optim.Optimizer | SGD]):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)

    def step(self, scaler: torch.amp.GradScaler | None = None) -> None:
        for o in self.optimizers:
            if scaler is not None and scaler.is_enabled():
                scaler.step(o)
            else:
                o.step()

    def state_dict(self) -> list[dict]:
        return [o.state_dict() for o in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for o, s in zip(self.optimizers, states, strict=True):
            o.load_state_dict(s)


_LAYER = re.compile(r"_l(\d+)(?:_reverse)?$|\.layers\.(\d+)\.")
_INPUT = ("embedding.", "positions.", "chars.", "cls")


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """The model's parameters in layer groups from the input up (ULMFiT's discriminative fine-tuning and gradual
    unfreezing): the token embedding (with positions and character features), then each stacked layer in order
    (an RNN's `_l0`, `_l1`, ...; a Transformer's `layers.N`; an encoder's other parameters go with its first),
    then everything else (pooling, the head)."""
    keyed: dict[tuple[int, int], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        m = _LAYER.search(name)
        if name.startswith(_INPUT):
            key = (0, 0)
        elif m:
            key = (1, int(m.group(1) or m.group(2)))
        elif name.startswith("encoder."):
            key = (1, -1)
        else:
            key = (2, 0)
        keyed.setdefault(key, []).append(p)
    groups = [keyed[k] for k in sorted(keyed)]
    if (1, -1) in keyed and len([k for k in keyed if k[0] == 1]) > 1:  # with the first layer, not on its own
        i = sorted(keyed).index((1, -1))
        groups[i + 1] = groups[i] + groups[i + 1]
        del groups[i]
    return groups


class Muon(torch.optim.Muon):
    """torch's Muon (Jordan et al., 2024: momentum, orthogonalised by Newton-Schulz, decoupled weight decay),
    step for step, but with the Newton-Schulz matmuls in bfloat16 only where that is fast (`newton_schulz_dtype`)
    and in float32 elsewhere: torch's casts to bfloat16 always, which a CPU without bf16 units emulates (the Tiny
    Shakespeare preset trained at 1,200 tokens/s with it on an AMD EPYC, against 15,000 with AdamW). Equal to
    torch's where both compute in bfloat16 (tested). The matrices of one shape (a Transformer's layers) are
    orthogonalised together in one batched iteration (fewer, larger matmuls)."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd, mu = float(group["lr"]), group["weight_decay"], group["momentum"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
            bufs = [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_lerp_(bufs, grads, 1 - mu)
            updates = torch._foreach_lerp(grads, bufs, mu) if group["nesterov"] else bufs
            torch._foreach_mul_(params, 1 - lr * wd)
            same: dict[tuple, list[int]] = {}
            for i, u in enumerate(updates):
                same.setdefault((u.shape, u.device, u.dtype), []).append(i)
            for (shape, device, dtype), index in same.items():
                stacked = torch.stack([updates[i] for i in index]).to(newton_schulz_dtype(device))
                ortho = newton_schulz(stacked, group["ns_coefficients"], group["ns_steps"], group["eps"])
                torch._foreach_add_([params[i] for i in index], list(ortho.to(dtype).unbind(0)),
                                    alpha=-lr * math.sqrt(max(1.0, shape[0] / shape[1])))


def newton_schulz_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where matrix units make it fast: CUDA, and CPUs with AVX512-BF16 or AMX (Muon's iteration on the
    Tiny Shakespeare preset's 16 matrices: 8 ms in bfloat16 against 16 in float32 on an AMD EPYC with
    AVX512-BF16); float32 elsewhere, where bfloat16 matmuls are emulated."""
    if device.type == "cuda":
        return torch.bfloat16
    native = any(getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported",
                                                                         "_is_amx_tile_supported"))
    return torch.bfloat16 if device.type == "cpu" and native else torch.float32


def newton_schulz(g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float) -> torch.Tensor:
    """The quintic Newton-Schulz iteration of Muon: g (A, B), or a batch (N, A, B) of matrices each on its own,
    -> about U V^T of its SVD (singular values near 1), in g's dtype."""
    a, b, c = coefficients
    x = g if g.dim() == 3 else g.unsqueeze(0)
    tall = x.size(1) > x.size(2)
    if tall:
        x = x.mT
    x = x / torch.linalg.matrix_norm(x, keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    if tall:
        x = x.mT
    return x if g.dim() == 3 else x.squeeze(0)


def muon_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What Muon trains (Jordan et al., 2024): the 2-D weight matrices of the hidden layers. The embeddings,
    positions, the output layer (tied or not), biases and norm gains go to AdamW, as in modded-nanogpt."""
    groups = layer_groups(model)
    outer = {id(p) for g in (groups[0], groups[-1]) for p in g}
    return [p for p in model.parameters() if p.requires_grad and p.dim() == 2 and id(p) not in outer]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> Optimizers:
    sparse_ids = sparse_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]
    dense = [p for p in params if id(p) not in sparse_ids]
    sparse = [p for p in params if id(p) in sparse_ids]
    betas = tuple(cfg.betas) if cfg.betas else (0.9, 0.999)
    if cfg.optimizer == "sgd":
        if sparse and (cfg.momentum or cfg.weight_decay):
            raise ConfigError("sparse embedding gradients take plain SGD: set train.momentum=0 and "
                              "train.weight_decay=0, or model.sparse=false")
        return Optimizers([SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)])
    if cfg.optimizer == "adagrad":
        if sparse and cfg.weight_decay:
            raise ConfigError("sparse embedding gradients take Adagrad without weight decay: set "
                              "train.weight_decay=0, or model.sparse=false")
        return Optimizers([Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay, sparse=sparse_ids)])
    opts = []
    if cfg.optimizer == "muon":
        if sparse:
            raise ConfigError("train.optimizer=muon takes dense embeddings: set model.sparse=false")
        matrices = {id(p) for p in muon_parameters(model)}
        opts.append(Muon([p for p in dense if id(p) in matrices], lr=cfg.muon_lr, momentum=cfg.muon_momentum,
                         weight_decay=cfg.weight_decay))
        dense = [p for p in dense if id(p) not in matrices]
    if dense:
        cls = torch.optim.AdamW if cfg.optimizer in ("adamw", "muon") else torch.optim.Adam
        # torch's fused kernel (one pass over all tensors) on CPU and CUDA: 6% of a step of the 4 x 128 decoder
        # here (bench/bench_nanogpt.py); elsewhere the default implementation
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in dense)
        groups: list = dense
        if cfg.layer_lr_decay != 1.0:  # the top group at lr, each one below at layer_lr_decay times the next
            mine = {id(p) for p in dense}
            layers = [[p for p in g if id(p) in mine] for g in layer_groups(model)]
            groups = [{"params": g, "lr": cfg.lr * cfg.layer_lr_decay ** (len(layers) - 1 - i)}
                      for i, g in enumerate(layers) if g]
        opts.append(cls(groups, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay, fused=fused or None))
    if sparse:
        opts.append(torch.optim.SparseAdam(sparse, lr=cfg.lr, betas=betas))
    return Optimizers(opts)


def lr_factor(cfg: TrainConfig, steps_per_epoch: int, total_steps: int):
    """The multiplier of the base learning rate at optimiser step `s` (0-based)."""

    def factor(s: int) -> float:
        warm = min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.schedule == "constant":
            f = 1.0
        elif cfg.schedule == "step":
            f = cfg.gamma ** ((s // steps_per_epoch) // cfg.step_size)
        elif cfg.schedule == "exponential":
            f = cfg.gamma ** (s / steps_per_epoch)
        else:
            span = max(1, total_steps - cfg.warmup_steps)
            p = min(1.0, max(0.0, (s - cfg.warmup_steps) / span))
            shape = 0.5 * (1 + math.cos(math.pi * p)) if cfg.schedule == "cosine" else 1.0 - p
            f = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape
        return warm * f

    return factor


class Schedule:
    """Sets every param group's lr to base_lr * factor(step); its state is just the step."""

    def __init__(self, optimizers: Optimizers, factor):
        self.optimizers = optimizers
        self.factor = factor
        self.base = [g["lr"] for g in optimizers.param_groups]
        self.step_count = 0
        self._apply()

    def _apply(self) -> None:
        f = self.factor(self.step_count)
        for g, base in zip(self.optimizers.param_groups, self.base, strict=True):
            g["lr"] = base * f

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def replan(self, factor) -> None:
        """Follow `factor` from the current step on (train.budget_seconds changed the number of steps)."""
        self.factor = factor
        self._apply()

    def get_lr(self) -> float:
        """The learning rate of now: the top layer group's under `train.layer_lr_decay`."""
        return max(g["lr"] for g in self.optimizers.param_groups)

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "base": self.base}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.base = list(state["base"])
        self._apply()
