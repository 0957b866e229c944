"""BERT encoder: Devlin, Chang, Lee & Toutanova, "BERT: Pre-training of Deep
Bidirectional Transformers for Language Understanding", NAACL 2019.

Embeddings (token + learned position + segment, LayerNorm), a stack of
post-LayerNorm transformer encoder layers (multi-head self-attention, then a
GELU feed-forward of width 4h, each wrapped in residual + LayerNorm), and a
pooler (Linear + tanh) on the first token. Parameter names and shapes follow
the usual PyTorch BertModel layout, so BERT-Base has 109,482,240 parameters
and BERT-Large 335,141,888.

The forward pass takes only ``input_ids``: every sequence is one segment and
every token is valid, so there is no attention mask. Attention is a single
``scaled_dot_product_attention`` call, which the arasc frontend decomposes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .weights import materialise

# The original implementation's LayerNorm epsilon.
LAYER_NORM_EPS = 1e-12


@dataclass(frozen=True)
class BertConfig:
    """Encoder size; the defaults are BERT-Base."""

    vocab_size: int = 30522
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    max_positions: int = 512
    segments: int = 2

    @property
    def intermediate(self) -> int:
        return 4 * self.hidden


BERT_BASE = BertConfig()
BERT_LARGE = BertConfig(hidden=1024, layers=24, heads=16)
# Reduced copies for fast tests. Like the full pair, the two share the head
# width (16 here, 64 there) and differ in hidden size and head count.
BERT_BASE_SMALL = BertConfig(vocab_size=1000, hidden=64, layers=2, heads=4, max_positions=64)
BERT_LARGE_SMALL = BertConfig(vocab_size=1000, hidden=128, layers=2, heads=8, max_positions=64)


class Embeddings(nn.Module):
    """Sum of token, position and segment embeddings, then LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden)
        self.position_embeddings = nn.Embedding(config.max_positions, config.hidden)
        self.token_type_embeddings = nn.Embedding(config.segments, config.hidden)
        self.LayerNorm = nn.LayerNorm(config.hidden, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(0.1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq_len = input_ids.size(1)
        # Computed here rather than kept as a buffer so that the model holds
        # nothing but parameters, all of which weights.materialise fills.
        positions = torch.arange(seq_len).unsqueeze(0)
        segments = torch.zeros_like(input_ids)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(segments)
        )
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention over all tokens (no mask)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        if config.hidden % config.heads:
            raise ValueError(f"hidden size {config.hidden} is not a multiple of {config.heads} heads")
        self.heads = config.heads
        self.head_dim = config.hidden // config.heads
        self.query = nn.Linear(config.hidden, config.hidden)
        self.key = nn.Linear(config.hidden, config.hidden)
        self.value = nn.Linear(config.hidden, config.hidden)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # [batch, seq, hidden] -> [batch, heads, seq, head_dim]
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._split_heads(self.query(x))
        k = self._split_heads(self.key(x))
        v = self._split_heads(self.value(x))
        context = F.scaled_dot_product_attention(q, k, v)
        return context.transpose(1, 2).flatten(2)


class ResidualOutput(nn.Module):
    """Projection, dropout, then LayerNorm of the sum with the sub-layer's input."""

    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, hidden)
        self.dropout = nn.Dropout(0.1)
        self.LayerNorm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    """Self-attention, then its output projection with residual and LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = SelfAttention(config)
        self.output = ResidualOutput(config.hidden, config.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x), x)


class Intermediate(nn.Module):
    """First half of the feed-forward block: widen to 4h and apply GELU."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden, config.intermediate)
        # BERT uses the exact (erf) GELU, not the tanh approximation.
        self.intermediate_act_fn = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x))


class Layer(nn.Module):
    """One encoder layer: attention block, then feed-forward block."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = ResidualOutput(config.intermediate, config.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(x)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    """The stack of encoder layers."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x)
        return x


class Pooler(nn.Module):
    """Linear + tanh on the first ([CLS]) token, the sentence-level output."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden, config.hidden)
        self.activation = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x[:, 0]))


class BertModel(nn.Module):
    """``input_ids`` [batch, seq] int64 -> (sequence output [batch, seq, h], pooled output [batch, h])."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sequence = self.encoder(self.embeddings(input_ids))
        return sequence, self.pooler(sequence)


def build_bert(config: BertConfig, seq_len: int) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Seeded BERT with a random batch-of-one sequence of ``seq_len`` token ids.

    Weights follow the original recipe: N(0, 0.02) truncated at two standard
    deviations for every linear and embedding matrix.
    """
    model = materialise(lambda: BertModel(config), seed=0, linear_std=0.02)
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, config.vocab_size, (1, seq_len), generator=gen)
    return model, (input_ids,)
