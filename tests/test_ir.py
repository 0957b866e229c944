"""Layer IR: printer/parser round trip, golden text, parse errors, verifier."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.ir import (
    Graph,
    IRParseError,
    Layer,
    Loc,
    Model,
    TensorType,
    Value,
    VerifyError,
    WeightRef,
    evaluate,
    parse_graph,
    print_graph,
    verify_graph,
    verify_model,
)


def f32(*shape):
    return TensorType("f32", shape)


def tiny_graph():
    conv = Layer("conv1", "conv2d", ("x",), f32(1, 4, 8, 8),
                 {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1},
                 {"weight": WeightRef("conv1.weight", f32(4, 3, 3, 3)), "bias": WeightRef("conv1.bias", f32(4))},
                 Loc("net.py", 12))
    relu = Layer("relu", "relu", ("conv1",), f32(1, 4, 8, 8), loc=Loc("net.py", 13))
    pool = Layer("pool", "adaptive_avgpool2d", ("relu",), f32(1, 4, 1, 1), {"output_size": (1, 1)})
    flat = Layer("flat", "reshape", ("pool",), f32(1, 4), {"shape": (1, 4)})
    scaled = Layer("scaled", "mul", ("flat",), f32(1, 4), {"scalar": 0.5})
    return Graph("tiny", (Value("x", f32(1, 3, 8, 8)),), (conv, relu, pool, flat, scaled), ("scaled",),
                 {"source_params": 112})


GOLDEN = '''graph tiny {source_params=112}
  input %x : f32[1,3,8,8]
  %conv1 = conv2d(%x) {dilation=[1, 1], groups=1, padding=[1, 1], stride=[1, 1]} [bias=@conv1.bias : f32[4], weight=@conv1.weight : f32[4,3,3,3]] : f32[1,4,8,8] loc("net.py":12)
  %relu = relu(%conv1) : f32[1,4,8,8] loc("net.py":13)
  %pool = adaptive_avgpool2d(%relu) {output_size=[1, 1]} : f32[1,4,1,1]
  %flat = reshape(%pool) {shape=[1, 4]} : f32[1,4]
  %scaled = mul(%flat) {scalar=0.5} : f32[1,4]
  output %scaled
end
'''


def test_golden_text_and_round_trip():
    graph = tiny_graph()
    assert print_graph(graph) == GOLDEN
    assert parse_graph(GOLDEN) == graph
    verify_graph(graph)


def test_comments_and_blank_lines_are_ignored():
    text = "# a dump\n\n" + GOLDEN.replace("  %relu", "  # the activation\n  %relu") + "\n"
    assert parse_graph(text) == tiny_graph()


@pytest.mark.parametrize("edit, where, expect", [
    (lambda t: t.replace("relu(%conv1)", "relu(%conv1,,)"), (4, 23), "expected one of: %value"),
    (lambda t: t.replace(": f32[1,4,1,1]", ": q16[1,4,1,1]"), (5, 60), "unknown dtype 'q16'"),
    (lambda t: t.replace("end\n", ""), (8, 17), "unexpected end of input"),
    (lambda t: t.replace("{shape=[1, 4]}", "{shape=[1, 4}"), (6, 38), "syntax error"),
])
def test_parse_errors_point_at_file_line_col(edit, where, expect):
    with pytest.raises(IRParseError) as err:
        parse_graph(edit(GOLDEN), "dump.ir")
    first = str(err.value).splitlines()[0]
    assert first.startswith(f"dump.ir:{where[0]}:{where[1]}:"), first
    assert expect in first
    assert str(err.value).splitlines()[-1].strip() == "^"


def replace_layer(graph, target, **changes):
    layers = []
    for layer in graph.layers:
        if layer.name == target:
            fields = dict(name=layer.name, op=layer.op, inputs=layer.inputs, type=layer.type, attrs=layer.attrs,
                          weights=layer.weights, loc=layer.loc)
            fields.update(changes)
            layer = Layer(**fields)
        layers.append(layer)
    return Graph(graph.name, graph.inputs, tuple(layers), graph.outputs, graph.meta)


@pytest.mark.parametrize("change, message", [
    (dict(inputs=("nowhere",)), "not defined before it"),
    (dict(name="conv1"), "defined twice"),
    (dict(type=f32(1, 4, 7, 7)), "declared type f32[1,4,7,7], but the op produces f32[1,4,8,8]"),
    (dict(op="frobnicate"), "unknown op"),
    (dict(attrs={}), "missing attributes"),
])
def test_verifier_rejects(change, message):
    graph = replace_layer(tiny_graph(), "relu" if "attrs" not in change else "conv1", **change)
    with pytest.raises(VerifyError) as err:
        verify_graph(graph)
    assert message in str(err.value)


def test_verifier_rejects_use_before_definition():
    graph = tiny_graph()
    swapped = (graph.layers[1], graph.layers[0]) + graph.layers[2:]
    with pytest.raises(VerifyError, match="relu.*not defined before it"):
        verify_graph(Graph(graph.name, graph.inputs, swapped, graph.outputs))


def test_verifier_checks_weight_store():
    graph = tiny_graph()
    weights = {"conv1.weight": np.zeros((4, 3, 3, 3), np.float32), "conv1.bias": np.zeros(3, np.float32)}
    with pytest.raises(VerifyError, match="conv1.bias"):
        verify_model(Model(graph, weights))


def test_evaluate_matches_torch():
    import torch
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 3, 3, 3), np.float32), rng.standard_normal(4, dtype=np.float32)
    x = rng.standard_normal((1, 3, 8, 8), dtype=np.float32)
    (out,) = evaluate(Model(tiny_graph(), {"conv1.weight": w, "conv1.bias": b}), [x])
    expected = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                                     padding=1)).mean((2, 3)) * 0.5
    assert torch.allclose(out, expected, atol=1e-6)


names = st.from_regex(r"[a-z][a-z0-9_.]{0,8}", fullmatch=True)
attr_values = st.recursive(
    st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6)


@settings(max_examples=150, deadline=None)
@given(attrs=st.dictionaries(names, attr_values, max_size=4), scalar=st.floats(allow_nan=False),
       line=st.integers(1, 10**6), file=st.text(min_size=1, max_size=12))
def test_round_trip_any_attributes(attrs, scalar, line, file):
    graph = tiny_graph()
    odd = Layer("odd", "mul", ("scaled",), f32(1, 4), {"scalar": scalar, **attrs}, loc=Loc(file, line))
    graph = Graph("g", graph.inputs, graph.layers + (odd,), ("odd", "scaled"), attrs)
    assert parse_graph(print_graph(graph)) == graph


def test_nan_and_inf_print_and_parse():
    for value in (math.inf, -math.inf):
        layer = Layer("s", "mul", ("x",), f32(2), {"scalar": value})
        graph = Graph("g", (Value("x", f32(2)),), (layer,), ("s",))
        assert parse_graph(print_graph(graph)) == graph
    layer = Layer("s", "mul", ("x",), f32(2), {"scalar": math.nan})
    parsed = parse_graph(print_graph(Graph("g", (Value("x", f32(2)),), (layer,), ("s",))))
    assert math.isnan(parsed.layers[0].attr("scalar"))


def test_every_op_is_documented():
    from pathlib import Path

    from arasc.ir import OPS

    docs = "".join(p.read_text() for p in (Path(__file__).parent.parent / "docs").glob("*.md"))
    missing = [name for name in OPS if f"| `{name}` |" not in docs]
    assert not missing, f"ops without a row in docs/: {missing}"


def test_evaluate_frees_each_value_after_its_last_reader():
    """`on_value` sees the graph input and every layer's output as made; a value that no later
    layer reads (and that is not an output) is freed before the next layer runs, unless a view of
    it (a reshape's output) still holds it."""
    import weakref

    import torch
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 3, 3, 3), np.float32), rng.standard_normal(4, dtype=np.float32)
    x = rng.standard_normal((1, 3, 8, 8), dtype=np.float32)
    model = Model(tiny_graph(), {"conv1.weight": w, "conv1.bias": b})
    graph = model.graph
    last_read = {name: i for i, layer in enumerate(graph.layers) for name in layer.inputs}
    viewed = {name for layer in graph.layers if layer.op == "reshape" for name in layer.inputs}
    seen, alive_too_long = {}, []

    def on_value(name, value):
        index = next((i for i, layer in enumerate(graph.layers) if layer.name == name), -1)
        alive_too_long.extend(n for n, ref in seen.items()
                              if ref() is not None and last_read.get(n, -1) < index and n not in {*graph.outputs, *viewed})
        seen[name] = weakref.ref(value)

    (out,) = evaluate(model, [x], on_value)
    assert list(seen) == [v.name for v in graph.inputs] + [layer.name for layer in graph.layers]
    assert len(graph.layers) >= 3 and not alive_too_long, alive_too_long
    assert torch.equal(out, evaluate(model, [x])[0])
