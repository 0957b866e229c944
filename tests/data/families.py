"""Small architectures of the same shape as the model families of issue 10, written here so the
tests need neither torchvision nor transformers: each uses the ops its family uses, the way
the reference implementation writes them (torchvision 0.28, transformers 5.x), at small widths,
few blocks and small inputs. Each factory returns (module in eval mode, example inputs)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _bn(channels):
    return nn.BatchNorm2d(channels)


def _randomize_norms(module: nn.Module, gen: torch.Generator) -> None:
    """Running statistics as after training, so batch norms are not identities."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def _finish(module: nn.Module, inputs: tuple, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _randomize_norms(module, gen)
    return module.eval(), inputs


def _image(seed=1, size=32):
    return (torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed)),)


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth's "row" mode: an identity in eval mode."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty([x.shape[0]] + [1] * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


# ---- MobileNet-v2: inverted residuals with ReLU6 and depthwise convolutions -------------------
def conv_bn(cin, cout, kernel, stride=1, groups=1, act=nn.ReLU6):
    layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False), _bn(cout)]
    return nn.Sequential(*layers, act(inplace=True)) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(conv_bn(cin, hidden, 1), conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                  conv_bn(hidden, cout, 1, act=None))

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8, 3, 2), InvertedResidual(8, 8, 1, 1), InvertedResidual(8, 12, 2, 4),
                                      InvertedResidual(12, 12, 1, 4), conv_bn(12, 32, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2():
    return _finish(MobileNetV2(), _image())


# ---- MobileNet-v3: hardswish, squeeze-excitation gated by hardsigmoid -------------------------
class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation: a per-channel gate multiplied onto the input (broadcast)."""

    def __init__(self, channels, squeeze, activation=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
        self.activation, self.scale_activation = activation(), gate()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class V3Block(nn.Module):
    def __init__(self, cin, hidden, cout, kernel, stride, se, act):
        super().__init__()
        layers = [conv_bn(cin, hidden, 1, act=act), conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=act)]
        if se:
            layers.append(SqueezeExcitation(hidden, max(8, hidden // 4)))
        layers.append(conv_bn(hidden, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.use_residual else self.block(x)


class MobileNetV3(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8, 3, 2, act=nn.Hardswish), V3Block(8, 16, 8, 3, 2, True, nn.ReLU),
                                      V3Block(8, 24, 12, 5, 1, True, nn.Hardswish),
                                      V3Block(12, 36, 12, 5, 1, False, nn.Hardswish), conv_bn(12, 48, 1, act=nn.Hardswish))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(48, 64), nn.Hardswish(inplace=True), nn.Dropout(0.2),
                                        nn.Linear(64, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3():
    return _finish(MobileNetV3(), _image(2))


# ---- EfficientNet-B0: MBConv with SiLU, SE (SiLU, sigmoid) and stochastic depth ----------------
class MBConv(nn.Module):
    def __init__(self, cin, cout, expand, kernel, stride, p):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1, act=nn.SiLU)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=nn.SiLU),
                   SqueezeExcitation(hidden, max(1, cin // 4), activation=nn.SiLU, gate=nn.Sigmoid),
                   conv_bn(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(p)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + self.stochastic_depth(y) if self.use_residual else y


class EfficientNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8, 3, 2, act=nn.SiLU), MBConv(8, 8, 1, 3, 1, 0.0),
                                      MBConv(8, 12, 6, 3, 2, 0.05), MBConv(12, 12, 6, 5, 1, 0.1),
                                      conv_bn(12, 48, 1, act=nn.SiLU))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2, inplace=True), nn.Linear(48, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def efficientnet_b0():
    return _finish(EfficientNet(), _image(3))


# ---- ConvNeXt-T: depthwise 7x7, LayerNorm over channels, layer scale, stochastic depth --------
class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt LayerNorm2d: normalise the channels of an NCHW tensor."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    def __init__(self, dim, p, layer_scale=1e-1):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1, self.act, self.pw2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(p)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pw2(self.act(self.pw1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.stochastic_depth(self.layer_scale * y)


class ConvNeXt(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Sequential(nn.Conv2d(3, 16, 4, 4), LayerNorm2d(16, eps=1e-6)),
                                      CNBlock(16, 0.0),
                                      nn.Sequential(LayerNorm2d(16, eps=1e-6), nn.Conv2d(16, 32, 2, 2)),
                                      CNBlock(32, 0.1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(32, eps=1e-6), nn.Flatten(1), nn.Linear(32, classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


def convnext_t():
    module, inputs = _finish(ConvNeXt(), _image(4))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # trained-like affine norms
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return module, inputs


# ---- ShuffleNet-v2: chunk, concat and channel shuffle ------------------------------------------
def channel_shuffle(x, groups: int):
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, -1, height, width)


class ShuffleUnit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin, act=None),
                                         conv_bn(cin, half, 1, act=nn.ReLU))
        self.branch2 = nn.Sequential(conv_bn(cin if stride > 1 else half, half, 1, act=nn.ReLU),
                                     conv_bn(half, half, 3, stride, groups=half, act=None),
                                     conv_bn(half, half, 1, act=nn.ReLU))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = conv_bn(3, 8, 3, 2, act=nn.ReLU)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.stage2 = nn.Sequential(ShuffleUnit(8, 16, 2), ShuffleUnit(16, 16, 1))
        self.stage3 = nn.Sequential(ShuffleUnit(16, 32, 2), ShuffleUnit(32, 32, 1))
        self.conv5 = conv_bn(32, 64, 1, act=nn.ReLU)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.conv5(self.stage3(self.stage2(self.maxpool(self.conv1(x)))))
        return self.fc(x.mean([2, 3]))


def shufflenet_v2():
    return _finish(ShuffleNetV2(), _image(6))


# ---- GoogLeNet: inception blocks; at its init (std 0.01) activations shrink to ~1e-11 -----------
class BasicConv(nn.Module):
    def __init__(self, cin, cout, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool):
        super().__init__()
        self.branch1 = BasicConv(cin, c1, 1)
        self.branch2 = nn.Sequential(BasicConv(cin, c3r, 1), BasicConv(c3r, c3, 3, padding=1))
        self.branch3 = nn.Sequential(BasicConv(cin, c5r, 1), BasicConv(c5r, c5, 3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv(cin, pool, 1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = BasicConv(3, 16, 7, 2, 3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception3a = Inception(16, 8, 8, 12, 4, 4, 4)
        self.inception3b = Inception(28, 12, 8, 16, 4, 8, 8)
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception4a = Inception(44, 16, 8, 16, 4, 8, 8)
        self.inception4b = Inception(48, 16, 8, 16, 4, 8, 8)
        self.inception5a = Inception(48, 16, 8, 16, 4, 8, 8)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(48, classes)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception5a(self.inception4b(self.inception4a(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def googlenet():
    """GoogLeNet's own initialisation (truncated normal, std 0.01; BN as constructed): the
    degenerate case where the last layers see inputs of ~1e-9 and the logits are the fc bias."""
    torch.manual_seed(7)
    module = GoogLeNet()
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.01, a=-2, b=2)
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.bias, -0.05, 0.05)
    return module.eval(), _image(8, 64)


# ---- GPT-2: Conv1D (addmm), split of the fused qkv, causal mask, tanh GELU with pow -----------
class Conv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D: a linear layer with its weight transposed, via addmm."""

    def __init__(self, nf, nx, std=0.1):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * std)
        self.bias = nn.Parameter(torch.randn(nf) * 0.02)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


def new_gelu(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2Block(nn.Module):
    """`additive`: the mask added to the scores (transformers 5 eager attention), else the scores
    replaced by the dtype's minimum where masked (GPT-2's original `torch.where`)."""

    def __init__(self, dim, heads, positions, additive):
        super().__init__()
        self.heads, self.dim, self.additive = heads, dim, additive
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.c_attn, self.c_proj = Conv1D(3 * dim, dim, std=0.4), Conv1D(dim, dim)  # peaked attention
        self.c_fc, self.mlp_proj = Conv1D(4 * dim, dim), Conv1D(dim, 4 * dim)
        self.register_buffer("bias", torch.tril(torch.ones(positions, positions, dtype=torch.bool)).view(
            1, 1, positions, positions), persistent=False)

    def heads_of(self, x):
        return x.view(x.size()[:-1] + (self.heads, self.dim // self.heads)).permute(0, 2, 1, 3)

    def forward(self, x):
        q, k, v = self.c_attn(self.ln_1(x)).split(self.dim, dim=2)
        q, k, v = self.heads_of(q), self.heads_of(k), self.heads_of(v)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(v.size(-1))
        length = q.size(-2)
        causal = self.bias[:, :, :length, :length]
        lowest = torch.finfo(scores.dtype).min
        if self.additive:
            scores = scores + torch.where(causal, 0.0, lowest)
        else:
            scores = torch.where(causal, scores, torch.tensor(lowest))
        attended = torch.matmul(F.softmax(scores, dim=-1), v).permute(0, 2, 1, 3)
        x = x + self.c_proj(attended.reshape(attended.size()[:-2] + (self.dim,)))
        return x + self.mlp_proj(new_gelu(self.c_fc(self.ln_2(x))))


class GPT2(nn.Module):
    def __init__(self, vocab=64, dim=32, heads=2, layers=2, positions=16):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(positions, dim)
        self.h = nn.ModuleList(GPT2Block(dim, heads, positions, additive=i % 2 == 1) for i in range(layers))
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, input_ids):
        positions = torch.arange(input_ids.size(-1)).unsqueeze(0)
        x = self.wte(input_ids) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # tied language-model head


def gpt2():
    torch.manual_seed(9)
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(10))
    return GPT2().eval(), (ids,)


# ---- RoBERTa: position ids from the input ids (ne, cumsum), attention_mask, qkv.chunk ----------
class RobertaLike(nn.Module):
    def __init__(self, vocab=64, dim=32, heads=2, pad=1, classes=4):
        super().__init__()
        self.pad, self.heads = pad, heads
        self.word, self.position = nn.Embedding(vocab, dim, padding_idx=pad), nn.Embedding(40, dim, padding_idx=pad)
        self.ln_emb, self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, classes))

    def position_ids(self, input_ids):
        """transformers' create_position_ids_from_input_ids."""
        mask = input_ids.ne(self.pad).int()
        incremental = torch.cumsum(mask, dim=1).type_as(mask) * mask
        return incremental.long() + self.pad

    def forward(self, input_ids, attention_mask):
        x = self.ln_emb(self.word(input_ids) + self.position(self.position_ids(input_ids)))
        n, length, dim = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, self.heads, dim // self.heads).transpose(1, 2) for t in (q, k, v))
        keep = attention_mask.bool()[:, None, None, :]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        x = self.ln_1(x + self.out(attended.transpose(1, 2).reshape(n, length, dim)))
        x = self.ln_2(x + self.ffn(x))
        return self.head(x[:, 0])


def roberta():
    torch.manual_seed(11)
    ids = torch.randint(2, 64, (1, 12), generator=torch.Generator().manual_seed(12))
    ids[0, 9:] = 1  # padding
    mask = (ids != 1).long()
    return RobertaLike().eval(), (ids, mask)


FAMILIES = {"mobilenet_v2": mobilenet_v2, "mobilenet_v3": mobilenet_v3, "efficientnet_b0": efficientnet_b0,
            "convnext_t": convnext_t, "shufflenet_v2": shufflenet_v2, "googlenet": googlenet, "gpt2": gpt2,
            "roberta": roberta}
CLASSIFIERS = {"mobilenet_v2", "mobilenet_v3", "efficientnet_b0", "convnext_t", "shufflenet_v2", "googlenet",
               "roberta"}
