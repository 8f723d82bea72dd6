"""The tiny preset's tokenizer and model: XLM-R's conventions, and repeatable."""

from __future__ import annotations

import torch

from xlinfluence import modeling
from xlinfluence.data import cldr


def _texts() -> list[str]:
    return cldr.load(["en", "de", "ru", "zh"]).train["text"].tolist()[:1500]


def test_tokenizer_training_is_repeatable():
    """The Unigram trainer alone orders ids and scores rare characters differently per run."""
    texts = _texts()
    first, second = modeling.train_tokenizer(texts), modeling.train_tokenizer(texts)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


def test_tokenizer_keeps_xlmr_special_ids_and_covers_the_texts():
    texts = _texts()
    tokenizer = modeling.train_tokenizer(texts)
    assert [tokenizer.convert_tokens_to_ids(t) for t in modeling.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    ids = tokenizer(texts[:200])["input_ids"]
    assert all(row[0] == 0 and row[-1] == 2 for row in ids)
    assert not any(tokenizer.unk_token_id in row for row in ids)  # every char was seen


def test_same_seed_builds_the_same_tiny_model():
    texts = _texts()
    a = modeling.build(modeling.TINY, num_labels=5, train_texts=texts, test_texts=[], seed=3)
    b = modeling.build(modeling.TINY, num_labels=5, train_texts=texts, test_texts=[], seed=3)
    assert a.vocab_map is None  # nothing to trim: the tiny tokenizer is made for the data
    pairs = zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True)
    for (name, p), q in pairs:
        assert torch.equal(p, q), name
