"""The type rules (arasc/ir/type_rules.py) against the second implementation they stand in for:
each op's own definition run on meta tensors (verify.meta_type). A rule may decline (None);
where it answers, it must give the meta type, and it must never answer where the op fails."""
from __future__ import annotations

import functools
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import arasc.ir.qops  # noqa: F401  (registers the quantized ops)
from arasc.ir import TensorType, verify
from arasc.ir.ops import OPS
from arasc.ir.type_rules import RULES


def meta_or_error(op: str, attrs: dict, inputs: list[TensorType], weights: dict[str, TensorType]):
    try:
        return verify.meta_type(op, tuple(attrs.items()), tuple(inputs), tuple(weights.items()))
    except Exception:  # noqa: BLE001  (any failure of the op is a rejection)
        return "rejected"


def check(op: str, attrs: dict, inputs: list[TensorType], weights: dict[str, TensorType] | None = None):
    """The rule's answer, after checking it against the meta inference; None if it declined."""
    weights = weights or {}
    typed = RULES[op](tuple(inputs), {**OPS[op].defaults, **attrs}, weights)
    if typed is not None:
        assert typed == meta_or_error(op, attrs, inputs, weights), (op, attrs, inputs, weights)
    return typed


@functools.cache
def zoo_signatures() -> list[tuple]:
    """Every signature the lowering and the verifier infer while compiling small zoo models."""
    from arasc.compile import compile_source
    from arasc.isa.hardware import default_hardware
    from arasc.loader import load_source

    seen = []
    original = verify._infer

    def record(op, attrs, inputs, weights):
        seen.append((op, attrs, inputs, weights))
        return original.__wrapped__(op, attrs, inputs, weights)

    verify._infer = functools.lru_cache(maxsize=None)(record)
    try:
        for name in ("resnet50-small", "densenet161-small", "bert-base-small"):
            compile_source(load_source(name), default_hardware(), "x.arasw")
    finally:
        verify._infer = original
    return seen


def test_rules_give_the_meta_type_on_the_zoo():
    answered = set()
    for op, attrs, inputs, weights in zoo_signatures():
        if op in RULES and check(op, dict(attrs), list(inputs), dict(weights)) is not None:
            answered.add(op)
    # the rules must carry the zoo, or compiles fall back to meta and pay torch's imports
    assert {op for op, *_ in zoo_signatures() if op in RULES} == answered


def test_a_cnn_compile_imports_neither_dynamo_nor_sympy():
    code = ("import sys; from arasc.compile import compile_source; from arasc.loader import load_source; "
            "from arasc.isa.hardware import default_hardware; "
            "compile_source(load_source('resnet50-small'), default_hardware(), 'x.arasw'); "
            "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


pairs = st.tuples(st.integers(0, 4), st.integers(0, 4))


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 6), h=st.integers(1, 12), w=st.integers(1, 12),
       out=st.integers(1, 6), groups=st.integers(1, 3), k=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       stride=pairs, padding=pairs, dilation=pairs, bias=st.booleans(), quantized=st.booleans())
def test_convolution_rules(n, c, h, w, out, groups, k, stride, padding, dilation, bias, quantized):
    per_group = max(c // groups, 1)
    dtype, bias_dtype = ("u8", "i32") if quantized else ("f32", "f32")
    weights = {"weight": TensorType(dtype, (out, per_group, *k))}
    if bias:
        weights["bias"] = TensorType(bias_dtype, (out,))
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    if quantized:
        attrs.update(x_zp=3, w_zp=128, multiplier=1 << 20, shift=24, out_zp=7)
    check("qconv2d" if quantized else "conv2d", attrs, [TensorType(dtype, (n, c, h, w))], weights)


@settings(max_examples=300, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=3, max_size=4), k=pairs, stride=pairs, padding=pairs,
       dilation=pairs, ceil_mode=st.booleans(), count_include_pad=st.booleans(), op=st.sampled_from(
           ["maxpool2d", "avgpool2d", "qavgpool2d"]))
@example(shape=[1, 1, 5, 5], k=(2, 2), stride=(2, 2), padding=(1, 1), dilation=(1, 1), ceil_mode=True,
         count_include_pad=True, op="maxpool2d")   # ceil_mode's last window would start in the right padding
def test_pooling_rules(shape, k, stride, padding, dilation, ceil_mode, count_include_pad, op):
    attrs = {"kernel": k, "stride": stride, "padding": padding, "ceil_mode": ceil_mode}
    if op == "maxpool2d":
        attrs["dilation"] = dilation
    else:
        attrs["count_include_pad"] = count_include_pad
    if op == "qavgpool2d":
        attrs["zp"] = 5
    check(op, attrs, [TensorType("u8" if op == "qavgpool2d" else "f32", tuple(shape))])


shapes = st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple)


@settings(max_examples=300, deadline=None)
@given(a=shapes, b=shapes, op=st.sampled_from(["add", "mul", "qadd", "qmul", "compare", "logical", "matmul",
                                               "qmatmul", "masked_softmax", "where"]))
def test_broadcasting_rules(a, b, op):
    f32, u8 = (TensorType("f32", s) for s in (a, b)), (TensorType("u8", s) for s in (a, b))
    cases = {
        "add": ({}, list(f32)), "mul": ({}, [TensorType("f32", a), TensorType("f32", b)]),
        "qadd": ({"zps": (1, 2), "multipliers": (3, -4), "shift": 5, "out_zp": 6, "wide": len(a) % 2 == 1}, list(u8)),
        "qmul": ({"zps": (1, 2), "multiplier": 3, "shift": 5, "out_zp": 6},
                 [TensorType("u8", a), TensorType("u8", b)]),
        "compare": ({"cmp": "lt"}, [TensorType("f32", a), TensorType("f32", b)]),
        "logical": ({"fn": "xor"}, [TensorType("bool", a), TensorType("bool", b)]),
        "matmul": ({}, [TensorType("f32", a), TensorType("f32", b)]),
        "qmatmul": ({"a_zp": 1, "b_zp": 2, "out_zp": 3, "multiplier": 4, "shift": 5},
                    [TensorType("u8", a), TensorType("u8", b)]),
        "masked_softmax": ({"dim": -1}, [TensorType("f32", a), TensorType("bool", b)]),
        "where": ({}, [TensorType("bool", a), TensorType("i64", b), TensorType("i64", a)]),
    }
    attrs, inputs = cases[op]
    check(op, attrs, inputs)


@settings(max_examples=200, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple), other=st.integers(1, 5),
       dim=st.integers(-5, 4), dims=st.lists(st.integers(-5, 4), min_size=1, max_size=3).map(tuple),
       keepdim=st.booleans(), size=st.tuples(st.one_of(st.none(), st.integers(1, 4)),
                                             st.one_of(st.none(), st.integers(1, 4))))
def test_shape_changing_rules(shape, other, dim, dims, keepdim, size):
    x = TensorType("f32", shape)
    if -len(shape) <= dim < len(shape):
        grown = list(shape)
        grown[dim] = other
        check("concat", {"dim": dim}, [x, TensorType("f32", tuple(grown))])
        check("qconcat", {"dim": dim, "zps": (1, 2), "multipliers": (3, 4), "shift": 5, "out_zp": 6},
              [TensorType("u8", shape), TensorType("u8", tuple(grown))])
    check("concat", {"dim": dim}, [x, x])
    check("mean", {"dims": dims, "keepdim": keepdim}, [x])
    check("qmean", {"dims": dims, "keepdim": keepdim}, [TensorType("u8", shape)])
    check("adaptive_avgpool2d", {"output_size": size}, [x])
    check("qadaptive_avgpool2d", {"output_size": size}, [TensorType("u8", shape)])
    check("softmax", {"dim": dim}, [x])
    check("cumsum", {"dim": dim}, [TensorType("i64", shape)])
    check("qrequant", {"x_zp": 0, "dim": dim, "multiplier": 3, "shift": 4, "out_zp": 5, "levels": 4095},
          [TensorType("i16", shape)])


@pytest.mark.parametrize("op", ["relu", "gelu", "tanh", "sigmoid", "silu", "hardswish", "hardsigmoid"])
def test_unary_rules(op):
    x = TensorType("f32", (2, 3, 5))
    assert check(op, {}, [x]) == x
    assert check(op, {}, [TensorType("i64", (2, 3))]) is None   # not vouched for: the op decides


def test_rules_decline_what_the_op_rejects():
    x = TensorType("f32", (2, 8))
    assert check("gelu", {"approximate": "cubic"}, [x]) is None
    assert check("clamp", {"min": None, "max": None}, [x]) is None
    assert check("linear", {}, [x], {"weight": TensorType("f32", (4, 7))}) is None
    assert check("layernorm", {"ndim": 1, "eps": 1e-5}, [x], {"weight": TensorType("f32", (7,))}) is None
    assert check("qlinear", {"x_zp": 0, "w_zp": 128, "multiplier": 1, "shift": 1},   # out_zp missing
                 [TensorType("u8", (2, 8))], {"weight": TensorType("u8", (4, 8))}) is None
    assert check("qlinear", {"x_zp": 0, "w_zp": 128, "multiplier": 1, "shift": 1, "out_zp": 0},
                 [TensorType("u8", (2, 8))], {"weight": TensorType("u8", (4, 8)),
                                              "shift": TensorType("i32", (3,))}) is None
    assert check("qlinear", {"x_zp": 0, "w_zp": 128, "multiplier": 1, "shift": 1, "out_zp": 0, "wide": True},
                 [TensorType("u8", (2, 8))], {"weight": TensorType("u8", (4, 8))}) == TensorType("i16", (2, 4))
