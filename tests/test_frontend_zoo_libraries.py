"""The real architectures of issue 10 from torchvision 0.28 and transformers 5.x, at small
configurations (random init), compiled and run on the interpreter-simulator against PyTorch
float. Optional: these libraries come with `pip install -e '.[zoo]'` (scripts/setup.sh installs
it); without them the tests skip."""
import numpy as np
import pytest
import torch
import zoo_libraries  # noqa: F401  (declares torchvision's op schemas before torchvision imports)
from helpers import compile_and_run, cosine

tvm = pytest.importorskip("torchvision.models")
transformers = pytest.importorskip("transformers")


def _torchvision(name):
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf
    from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf
    from torchvision.models.shufflenetv2 import ShuffleNetV2

    torch.manual_seed(0)
    if name == "mobilenet_v2":
        return tvm.mobilenet_v2(width_mult=0.25, num_classes=10)
    if name == "mobilenet_v3":
        return MobileNetV3(*_mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25), num_classes=10)
    if name == "efficientnet_b0":
        blocks, last = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.34)
        return EfficientNet(blocks, 0.2, last_channel=last, num_classes=10)
    if name == "convnext_t":
        stages = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)]
        return ConvNeXt(stages, stochastic_depth_prob=0.1, num_classes=10)
    if name == "shufflenet_v2":
        return ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128], num_classes=10)
    if name == "googlenet":
        return tvm.googlenet(aux_logits=False, init_weights=True, num_classes=10)
    raise KeyError(name)


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3", "efficientnet_b0", "convnext_t", "shufflenet_v2",
                                  "googlenet"])
def test_torchvision_architecture(name):
    module = _torchvision(name).eval()
    size = 32 if name == "googlenet" else 64  # GoogLeNet keeps its full widths: a small image
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    got, expected, _ = compile_and_run(module, (x,), name)
    print(f"{name}: cosine {cosine(got, expected):.5f}")
    assert cosine(got, expected) >= 0.99
    assert np.argmax(got) == np.argmax(expected)


class Outputs(torch.nn.Module):
    """A Hugging Face model called with keyword inputs, returning one tensor of its output."""

    def __init__(self, model, key):
        super().__init__()
        self.model, self.key = model, key

    def forward(self, input_ids, attention_mask=None):
        return getattr(self.model(input_ids=input_ids, attention_mask=attention_mask), self.key)


def _ids(vocab=100, length=12, pad_from=None):
    ids = torch.randint(3, vocab, (1, length), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(1, length, dtype=torch.int64)
    if pad_from is not None:
        ids[0, pad_from:], mask[0, pad_from:] = 1, 0
    return ids, mask


def test_gpt2():
    config = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                     attn_implementation="eager")
    torch.manual_seed(0)
    module = Outputs(transformers.GPT2LMHeadModel(config).eval(), "logits")
    ids, _ = _ids()
    got, expected, _ = compile_and_run(module, (ids,), "gpt2")
    print(f"gpt2: cosine {cosine(got, expected):.5f}")
    assert cosine(got, expected) >= 0.99
    assert (got[0].argmax(-1) == expected[0].argmax(-1)).mean() > 0.9


@pytest.mark.parametrize("family", ["roberta", "bert"])
def test_encoder_with_attention_mask(family):
    """RoBERTa's position ids come from its input ids; both are called with input_ids and a
    padding attention_mask (BERT's mask went through aten._assert_tensor_metadata)."""
    config_class = transformers.RobertaConfig if family == "roberta" else transformers.BertConfig
    model_class = transformers.RobertaModel if family == "roberta" else transformers.BertModel
    config = config_class(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=40, attn_implementation="eager")
    torch.manual_seed(0)
    module = Outputs(model_class(config, add_pooling_layer=False).eval(), "last_hidden_state")
    ids, mask = _ids(pad_from=9)
    got, expected, model = compile_and_run(module, (ids, mask), family)
    assert any(layer.op == "qmasked_softmax" for layer in model.graph.layers)
    kept = mask[0].bool().numpy()  # padded positions' states are not used by anything downstream
    print(f"{family}: cosine {cosine(got[0, kept], expected[0, kept]):.5f}")
    assert cosine(got[0, kept], expected[0, kept]) >= 0.99
