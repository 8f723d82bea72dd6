"""Vocabulary trimming is exact on the data it was trimmed for: logits, gradients, TracIn."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

from xlinfluence import modeling
from xlinfluence.data.batching import PadCollator
from xlinfluence.errors import ConfigError
from xlinfluence.modeling.vocab import VocabMap, trim
from xlinfluence.tracin import checkpoint_scores

TRAIN = [
    "Turkey is encircled by seas on three sides.",
    "Die Türkei ist auf drei Seiten von Meeren umgeben.",
    "Турция с трёх сторон окружена морями.",
    "土耳其三面环海。",
    "The submarines went under water to avoid being seen.",
    "Les sous-marins plongeaient pour ne pas être vus.",
]
TEST = [
    "La Turquie est entourée de mers.",
    "潜艇潜入水下以免被发现。",
    "Подводные лодки ушли под воду.",
]
LABELS = [0, 1, 2, 0, 1, 2]
TOL = 1e-5


def _batch(tokenizer, texts, labels):
    items = [
        {"input_ids": ids, "label": label, "index": i}
        for i, (ids, label) in enumerate(zip(tokenizer(texts)["input_ids"], labels, strict=True))
    ]
    return PadCollator(tokenizer.pad_token_id)(items)


def _rel(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def pair():
    """e5-small untrimmed and trimmed, built with the same seed."""
    kwargs = dict(num_labels=3, train_texts=TRAIN, test_texts=TEST, seed=7)
    full = modeling.build(modeling.E5_SMALL, trim_vocab=False, **kwargs)
    trimmed = modeling.build(modeling.E5_SMALL, **kwargs)
    return full, trimmed


def test_trimming_keeps_only_used_rows(pair):
    full, trimmed = pair
    kept = trimmed.vocab_map.kept_ids
    assert trimmed.vocab_map.original_size == 250_037
    assert kept[:4] == [0, 1, 2, 3] and kept == sorted(kept)
    assert trimmed.model.get_input_embeddings().num_embeddings == len(kept) < 1000
    assert len(trimmed.tokenizer) == len(kept)
    for text in TRAIN + TEST:
        old, new = full.tokenizer(text)["input_ids"], trimmed.tokenizer(text)["input_ids"]
        assert [kept[i] for i in new] == old


def test_logits_and_gradients_equal_the_untrimmed_model(pair):
    full, trimmed = pair
    kept = torch.tensor(trimmed.vocab_map.kept_ids)
    outputs = []
    for built in pair:
        built.model.eval()
        built.model.zero_grad()
        batch = _batch(built.tokenizer, TRAIN, LABELS)
        logits = built.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
        torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum").backward()
        outputs.append((logits.detach(), dict(built.model.named_parameters())))
    (full_logits, full_params), (trim_logits, trim_params) = outputs
    assert _rel(trim_logits, full_logits) <= TOL
    word = "bert.embeddings.word_embeddings.weight"
    full_word_grad = full_params[word].grad
    assert _rel(trim_params[word].grad, full_word_grad[kept]) <= TOL
    unused = torch.ones(len(full_word_grad), dtype=torch.bool)
    unused[kept] = False
    assert full_word_grad[unused].abs().max() == 0  # what trimming drops had no gradient
    for name, param in full_params.items():
        if name != word:
            assert _rel(trim_params[name].grad, param.grad) <= TOL, name


def test_tracin_scores_equal_the_untrimmed_model(pair):
    scores = []
    for built in pair:
        train = [_batch(built.tokenizer, TRAIN, LABELS)]
        test = [_batch(built.tokenizer, TEST, [0, 1, 2])]
        scores.append(checkpoint_scores(built.model, train, test, n_train=6, n_test=3))
    assert scores[1].abs().max() > 0
    assert _rel(scores[1], scores[0]) <= TOL


def test_checkpoints_carry_the_map(pair, tmp_path):
    _, trimmed = pair
    modeling.save_checkpoint(trimmed.model, trimmed.tokenizer, tmp_path, trimmed.vocab_map)
    assert VocabMap.load(tmp_path) == trimmed.vocab_map
    model, tokenizer = modeling.load_checkpoint(tmp_path)
    assert model.config.vocab_size == len(trimmed.vocab_map.kept_ids)
    assert tokenizer(TRAIN[0])["input_ids"] == trimmed.tokenizer(TRAIN[0])["input_ids"]


def test_a_corrupt_map_is_refused(tmp_path):
    (tmp_path / "vocab_map.json").write_text("{not json")
    with pytest.raises(Exception, match="vocabulary map .* is corrupt"):
        VocabMap.load(tmp_path)


def _trained_tokenizer(texts, kind: str) -> PreTrainedTokenizerFast:
    model, trainer = {
        "wordpiece": (models.WordPiece(unk_token="[UNK]"), trainers.WordPieceTrainer),
        "bpe": (models.BPE(unk_token="[UNK]"), trainers.BpeTrainer),
    }[kind]
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(
        texts, trainer=trainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]"])
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")


def _bert(vocab_size):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=3, pad_token_id=0,
    )  # fmt: skip
    return BertForSequenceClassification(config).eval()


def test_wordpiece_tokenizers_trim_exactly():
    corpus = TRAIN * 3 + ["completely different words here for the vocabulary"]
    tokenizer = _trained_tokenizer(corpus, "wordpiece")
    model = _bert(len(tokenizer))
    before = model(**tokenizer(TRAIN, padding=True, return_tensors="pt")).logits
    model, trimmed, vocab_map = trim(model, tokenizer, TRAIN, source="wordpiece")
    assert len(vocab_map.kept_ids) < len(tokenizer)
    after = model(**trimmed(TRAIN, padding=True, return_tensors="pt")).logits
    assert _rel(after, before) <= TOL


def test_bpe_tokenizers_are_refused_with_the_way_out():
    tokenizer = _trained_tokenizer(TRAIN * 3, "bpe")
    with pytest.raises(ConfigError, match="trim_vocab=false"):
        trim(_bert(len(tokenizer)), tokenizer, TRAIN, source="bpe")
