"""The frontend's coverage table: every torch module, function, tensor method and ATen op in the
handler table (handlers.py), grouped by the handler that lowers it, with the IR ops it lowers
to and where they run (crossbar, SFU, data movement, or folded away at compile time).

The "lowers to" column is not written by hand: each handler is run on the lowering examples
below (each traced with torch.fx and with torch.export) and the ops it emitted are recorded.
`python -m arasc.frontend.coverage` rewrites the table in docs/frontend.md; the tests check
the file is current and that every handler has an example that exercises it.
"""
from __future__ import annotations

import operator
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ir import OPS
from . import handlers
from .lower import Lowerer
from .trace import capture

DOC = Path(__file__).resolve().parents[2] / "docs" / "frontend.md"
BEGIN, END = "<!-- coverage table: python -m arasc.frontend.coverage -->", "<!-- end of coverage table -->"
WHERE = {"mvm": "crossbar", "matmul": "crossbar (two activations)", "sfu": "SFU", "data": "data movement"}


# ---- lowering examples: small modules, each exercising a few handlers ----------------------------
class Example(nn.Module):
    """A module whose forward is `fn(self, x)`, with optional submodules."""

    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for name, module in modules.items():
            setattr(self, name, module)

    def forward(self, x):
        return self.fn(self, x)


class Example2(Example):
    """`fn(self, x, y)`: torch.fx traces fixed arities only."""

    def forward(self, x, y):
        return self.fn(self, x, y)


def _img(channels=4, size=6):
    return torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(channels * size))


def _seq(dim=8, length=5):
    return torch.randn(1, length, dim, generator=torch.Generator().manual_seed(dim + length))


def _ids(length=6, vocab=10):
    ids = torch.randint(2, vocab, (1, length), generator=torch.Generator().manual_seed(length))
    ids[0, -2:] = 1
    return ids


def _examples() -> dict[str, tuple[nn.Module, tuple]]:
    torch.manual_seed(0)
    conv, lin = nn.Conv2d(4, 4, 3, padding=1), nn.Linear(8, 8)
    bn = nn.BatchNorm2d(4).eval()
    bn.running_mean.uniform_(-0.2, 0.2)
    bn.running_var.uniform_(0.5, 1.5)
    return {
        "crossbar modules": (Example(lambda m, x: m.bn(m.conv(x)) + m.bn(x), conv=conv, bn=bn), (_img(),)),
        "crossbar functions": (Example2(lambda m, x, s: (
            F.batch_norm(F.conv2d(x, m.w4, None, 1, 1), m.bn.running_mean, m.bn.running_var, None, None, False),
            F.batch_norm(x, m.bn.running_mean, m.bn.running_var, None, None, False),
            torch.addmm(m.lin.bias, F.linear(s[0], m.w8), m.w8), torch.matmul(s, m.w8) @ s.transpose(1, 2),
            torch.bmm(s, s.transpose(1, 2))), bn=bn, lin=lin), (_img(), _seq())),
        "linear module": (Example(lambda m, s: m.lin(s), lin=lin), (_seq(),)),
        "activations": (Example(lambda m, x: (
            F.relu(x) + torch.relu(x) + x.relu() + F.gelu(x) + torch.tanh(x) + x.tanh() + torch.sigmoid(x)
            + x.sigmoid() + F.silu(x) + F.hardswish(x) + F.hardsigmoid(x) + F.relu6(x) + F.hardtanh(x, -0.5, 0.5)
            + torch.clamp(x, -1, 1) + x.clamp(min=0) + torch.clamp_min(x, -0.1) + x.clamp_max(0.3)
            + torch.pow(x, 3) + x ** 2)), (_img(),)),
        "activation modules": (Example(lambda m, x: m.a(x) + m.b(x) + m.c(x) + m.d(x) + m.e(x) + m.f(x) + m.g(x)
                                       + m.h(x) + m.i(x), a=nn.ReLU(), b=nn.GELU(), c=nn.Tanh(), d=nn.Sigmoid(),
                                       e=nn.SiLU(), f=nn.Hardswish(), g=nn.Hardsigmoid(), h=nn.ReLU6(),
                                       i=nn.Hardtanh()), (_img(),)),
        "normalisation and softmax": (Example(lambda m, s: (
            m.ln(s), F.layer_norm(s, (8,)), m.sm(s), F.softmax(s, -1) + torch.softmax(s, 1) + s.softmax(-1)),
            ln=nn.LayerNorm(8), sm=nn.Softmax(-1)), (_seq(),)),
        "pooling": (Example(lambda m, x: (
            m.mp(x), m.ap(x), m.aap(x), F.max_pool2d(x, 2), F.avg_pool2d(x, 2), F.adaptive_avg_pool2d(x, 1),
            torch.mean(x, (2, 3)), x.mean(-1)), mp=nn.MaxPool2d(2), ap=nn.AvgPool2d(2),
            aap=nn.AdaptiveAvgPool2d(1)), (_img(),)),
        "arithmetic": (Example(lambda m, x: (
            x + 1, 2 - x, x * x, x / 3, torch.add(x, x), torch.sub(x, 1.5), torch.mul(x, 0.5), torch.div(x, 2),
            x.add(x), x.sub(x), x.mul(2), x.div(4), 1 - x, torch.cat([x, x], 1), torch.concat([x, x], 2))),
            (_img(),)),
        "data movement": (Example(lambda m, x: (
            m.flat(x), x.view(1, -1), x.reshape(4, -1), torch.flatten(x, 2), x.permute(0, 2, 3, 1),
            x.transpose(1, 2), torch.transpose(x, 2, 3), x[0, 1:3, ::2], x[..., None, 0], x.select(1, 2),
            torch.unsqueeze(x, 0), x.squeeze(0), x.unflatten(1, (2, 2)), x.reshape(16, 9).t(), x.contiguous(),
            x.clone(), m.drop(x), F.dropout(x, 0.1, training=False), m.ident(x), x + x.new_ones(x.shape),
            x.view(x.size(0), x.size(1) * x.shape[2], -1), x.reshape(x.dim(), -1)),
            flat=nn.Flatten(), drop=nn.Dropout(0.3), ident=nn.Identity()), (_img(),)),
        "splits and shuffles": (Example(lambda m, x: (
            x.chunk(2, 1)[1], torch.chunk(x, 3, 2)[0], x.split(1, dim=1)[3], torch.split(x, [1, 3], 1)[1],
            x.unbind(1)[2], torch.unbind(x, 0)[0], m.shuffle(x), torch.channel_shuffle(x, 2)),
            shuffle=nn.ChannelShuffle(2)), (_img(),)),
        "embeddings and ids": (Example(lambda m, ids: (
            m.emb(ids) + F.embedding(ids, m.emb.weight),
            (torch.cumsum(ids.ne(1).int(), dim=1) * ids.ne(1)).long() + 1, ids.eq(3) | (ids > 5),
            torch.logical_not(ids < 2) & ids.ge(1) ^ ids.le(4), ~(ids == 2), ids.cumsum(1),
            torch.where(ids > 3, ids, 0), ids.masked_fill(ids == 1, 0), ids.expand(2, -1),
            torch.gather(m.table, 1, ids), ids.to(torch.int32), ids.bool().long(),
            ids[:, torch.tensor([0, 2, 3])]),
            emb=nn.Embedding(10, 8)), (_ids(),)),
        "attention": (Example2(lambda m, s, mask: (
            F.scaled_dot_product_attention(s, s, s, attn_mask=mask.bool()[:, None, :]),
            F.scaled_dot_product_attention(s, s, s, is_causal=True),
            torch.softmax((s @ s.transpose(1, 2)).masked_fill(~mask.bool()[:, None, :], float("-inf")), -1),
            torch.softmax(s @ s.transpose(1, 2) + torch.where(mask.bool(), 0.0, torch.finfo(torch.float32).min)
                          [:, None, :], -1),
            m.mha(s, s, s, need_weights=False)[0]), mha=nn.MultiheadAttention(8, 2, batch_first=True)),
            (_seq(), (_ids(5) != 1).long())),
        "layer norm over channels": (Example(lambda m, x: F.layer_norm(
            x.permute(0, 2, 3, 1), (4,), m.ln.weight, m.ln.bias).permute(0, 3, 1, 2), ln=nn.LayerNorm(4)),
            (_img(),)),
    }


def _torchvision_examples() -> dict[str, tuple[nn.Module, tuple]]:
    """torchvision's stochastic depth, matched by name: exercised when torchvision is installed."""
    from .torchvision_ops import declare_torchvision_ops

    declare_torchvision_ops()
    try:
        from torchvision.ops import StochasticDepth, stochastic_depth
    except ImportError:
        return {}
    return {"torchvision stochastic depth": (Example(lambda m, x: m.sd(x) + stochastic_depth(x, 0.2, "row", False),
                                                     sd=StochasticDepth(0.1, "row")), (_img(),))}


def _attach_constants(examples):
    """Parameters the lambdas read (registered here so both capture paths see them)."""
    module, _ = examples["crossbar functions"]
    module.register_buffer("w4", torch.randn(4, 4, 3, 3, generator=torch.Generator().manual_seed(3)) * 0.2)
    module.register_buffer("w8", torch.randn(8, 8, generator=torch.Generator().manual_seed(4)) * 0.2)
    module, _ = examples["embeddings and ids"]
    module.register_buffer("table", torch.arange(60).reshape(6, 10) % 7)
    return examples


def examples() -> dict[str, tuple[nn.Module, tuple]]:
    found = {**_attach_constants(_examples()), **_torchvision_examples()}
    return {name: (module.eval(), inputs) for name, (module, inputs) in found.items()}


# ---- the table ----------------------------------------------------------------------------------
def display_name(target) -> str:
    """How a user writes the target: nn.X, F.x, torch.x, Tensor.x, operator.x, aten.x."""
    if isinstance(target, str):
        return f"Tensor.{target}()"
    if isinstance(target, type):
        return f"nn.{target.__name__}" if target.__module__.startswith("torch.nn") else \
            f"{target.__module__}.{target.__qualname__}"
    if isinstance(target, torch._ops.OpOverloadPacket):
        return f"aten.{target.__name__}"
    name = getattr(target, "__name__", repr(target))
    for prefix, namespace in (("F", F), ("torch", torch), ("operator", operator)):
        if getattr(namespace, name, None) is target:
            return f"{prefix}.{name}"
    if getattr(torch.Tensor, name, None) is target:
        return f"Tensor.{name}"
    return f"{getattr(target, '__module__', '')}.{name}".lstrip(".")


def handler_groups() -> dict[object, list[str]]:
    """handler -> the sorted display names of everything it lowers."""
    groups: dict[object, list[str]] = defaultdict(list)
    for table in (handlers.MODULES, handlers.FUNCTIONS, handlers.METHODS, handlers.NAMED_FUNCTIONS):
        for target, handler in table.items():
            name = target if table is handlers.NAMED_FUNCTIONS else display_name(target)
            groups[handler].append(name)
    return {handler: sorted(set(names), key=_order) for handler, names in groups.items()}


def _order(name: str):
    return (name.startswith("aten."), name.startswith("Tensor."), name.lower())


def observed_lowerings() -> dict[object, set[str]]:
    """handler -> the IR ops it emitted on the examples (empty: folded or a pass-through)."""
    seen: dict[object, set[str]] = defaultdict(set)
    for name, (module, inputs) in examples().items():
        for frontend in ("fx", "export"):
            lowerer = Lowerer(capture(module, inputs, frontend), name.replace(" ", "_"))
            with torch.no_grad():
                lowerer.run()
            for handler, ops in lowerer.handled:
                seen[handler].update(ops)
    return seen


def _describe(ops: set[str]) -> tuple[str, str]:
    if not ops:
        return "nothing (identity, or folded at compile time)", "-"
    ops = {op for op in ops if op != "const"} or ops
    where = sorted({WHERE.get(OPS[op].kind, OPS[op].kind) for op in ops if op != "const"}) or ["data movement"]
    return ", ".join(f"`{op}`" for op in sorted(ops)), ", ".join(where)


def table() -> str:
    seen = observed_lowerings()
    missing = [names for handler, names in handler_groups().items() if handler not in seen]
    if missing:
        raise RuntimeError(f"no lowering example in arasc/frontend/coverage.py exercises the handler of: "
                           f"{'; '.join(', '.join(names) for names in missing)}")
    rows = []
    for handler, names in handler_groups().items():
        ops, where = _describe(seen[handler])
        rows.append((names, ops, where))
    rows.sort(key=lambda row: _order(row[0][0]))
    lines = ["| torch modules, functions, methods, ATen ops | lowers to | runs on |", "|---|---|---|"]
    lines += [f"| {', '.join(f'`{n}`' for n in names)} | {ops} | {where} |" for names, ops, where in rows]
    return "\n".join(lines) + "\n"


def write_doc(path: Path = DOC) -> bool:
    """Rewrite the table between the markers; True when the file changed."""
    text = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise RuntimeError(f"{path}: no coverage-table markers ({BEGIN} ... {END})")
    new = pattern.sub(lambda _: f"{BEGIN}\n{table()}{END}", text)
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    changed = write_doc()
    print(f"{DOC}: coverage table {'updated' if changed else 'already current'}", file=sys.stderr)
