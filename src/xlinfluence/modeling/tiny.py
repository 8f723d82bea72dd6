"""The offline `tiny` preset: an XLM-R-shaped model with random weights, for fast tests.

The tiny preset is an `XLMRobertaForSequenceClassification` built from a small config with
random weights and a SentencePiece-style Unigram tokenizer trained on the training texts,
so the whole pipeline runs with no model hub. Its special-token ids match XLM-R's
(<s>=0, <pad>=1, </s>=2, <unk>=3), which XLM-R's position-id logic relies on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (
    PreTrainedTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

TINY = "tiny"
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids 0..4

#: The tiny preset: XLM-R's shape at a size a 2-core CPU fine-tunes in seconds.
TINY_CONFIG = dict(
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=512,
    max_position_embeddings=514,
    type_vocab_size=1,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)
TINY_VOCAB_SIZE = 4000


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = TINY_VOCAB_SIZE
) -> PreTrainedTokenizerFast:
    """A Unigram tokenizer with Metaspace pre-tokenisation, as XLM-R's SentencePiece model."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="<unk>"
    )
    texts = list(texts)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.model = _canonical_unigram(tokenizer, texts)
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


def _canonical_unigram(tokenizer: Tokenizer, texts: list[str]) -> models.Unigram:
    """The trained pieces with scores re-estimated from their counts, ids in a fixed order.

    The Unigram trainer is not deterministic: two runs on the same texts give the same
    pieces, but in another id order and with some single characters' scores apart by up to
    ~2e-3, so one seed trained different models. A re-estimation removes that noise:
    segment the texts with the trained model (scores rounded to 0.01) and set each score to
    log((count + 1) / total); ids follow (score, piece), special tokens first. The few
    scores still apart after rounding are too small to change how the texts segment in
    practice, so the counts, and the tokenizer, come out the same; tests/test_modeling.py
    checks that on the built-in corpus, which is evidence, not a proof.
    """
    trained = json.loads(tokenizer.to_str())["model"]["vocab"]
    pieces = [(t, round(score, 2)) for t, score in trained if t not in SPECIAL_TOKENS]
    rounded = models.Unigram(
        [(t, 0.0) for t in SPECIAL_TOKENS] + pieces, unk_id=SPECIAL_TOKENS.index("<unk>")
    )
    tokenizer.model = rounded
    counts = dict.fromkeys((t for t, _ in pieces), 1)  # add-one: every piece stays reachable
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        for token in encoding.tokens:
            if token in counts:
                counts[token] += 1
    total = sum(counts.values())
    scored = sorted(
        ((t, round(math.log(c / total), 6)) for t, c in counts.items()),
        key=lambda item: (-item[1], item[0]),
    )
    vocab = [(t, 0.0) for t in SPECIAL_TOKENS] + scored
    return models.Unigram(vocab, unk_id=SPECIAL_TOKENS.index("<unk>"), byte_fallback=False)


def build_tiny(num_labels: int, train_texts: Iterable[str]):
    """The tiny preset: a fresh XLM-R-shaped classifier and a tokenizer trained on the texts."""
    tokenizer = train_tokenizer(train_texts)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **TINY_CONFIG,
    )
    return XLMRobertaForSequenceClassification(config), tokenizer
