"""Vocabulary trimming: keep only the embedding rows that the selected data uses.

A pretrained multilingual encoder carries a 250k-row word-embedding table (96M of
e5-small's 118M parameters); a fine-tuning set uses a few thousand of those rows. Every
AdamW step and every TracIn embedding contraction would sweep the rest for nothing. Rows
no example uses get exactly zero gradient, so dropping them changes no logit, gradient or
TracIn score on that data: trimming is exact there (tests/modeling/test_vocab.py).

The tokenizer is trimmed with the model: the same pieces keep their relative id order,
specials included, so `<s>`, `<pad>`, `</s>`, `<unk>` keep ids 0-3. Segmentation cannot
change on the data: the pieces its best segmentation uses are all kept (and for Unigram
the lowest-scoring piece too, which sets the unknown-piece penalty). `trim` checks that by
re-tokenising every text, and refuses otherwise. The map from new ids to the original
ones travels with every checkpoint (`vocab_map.json`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from xlinfluence.errors import ArtifactError, ConfigError

FILE = "vocab_map.json"


@dataclass(frozen=True)
class VocabMap:
    """kept_ids[new_id] = original id, in increasing order."""

    kept_ids: list[int]
    original_size: int
    source: str  # the model the rows were taken from

    def save(self, directory: Path) -> None:
        payload = {"source": self.source, "original_size": self.original_size}
        payload["kept_ids"] = self.kept_ids
        (directory / FILE).write_text(json.dumps(payload) + "\n")

    @classmethod
    def load(cls, directory: Path) -> VocabMap | None:
        path = directory / FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            return cls([int(i) for i in raw["kept_ids"]], int(raw["original_size"]), raw["source"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ArtifactError(
                f"vocabulary map {path} is corrupt ({err}); re-run the train step."
            ) from err


def _encode(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return tokenizer(list(texts))["input_ids"]


def used_ids(tokenizer, texts: Sequence[str]) -> set[int]:
    """Every id the tokenizer produces for these texts, plus every special token's id.

    A pair is encoded as its two texts one after the other with specials between them, so
    the ids of a pair task's examples are those of its texts taken one by one.
    """
    ids = {i for row in _encode(tokenizer, texts) for i in row}
    return ids | set(tokenizer.all_special_ids)


def trim(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    *,
    source: str,
) -> tuple[torch.nn.Module, PreTrainedTokenizerFast, VocabMap]:
    """The model and tokenizer restricted to the ids `texts` use (every text field)."""
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ConfigError(
            f"vocabulary trimming needs a fast (tokenizers) tokenizer, {source!r} has a "
            f"{type(tokenizer).__name__}; set trim_vocab=false."
        )
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    kept = used_ids(tokenizer, texts) | _floor_pieces(state["model"])
    kept_ids = sorted(kept)
    new_id = {old: new for new, old in enumerate(kept_ids)}
    _remap_model(state["model"], new_id, source)
    _remap_specials(state, new_id)
    trimmed = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)),
        model_input_names=list(tokenizer.model_input_names),
        **{k: str(v) for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)},
    )
    trimmed.model_max_length = tokenizer.model_max_length
    before, after = _encode(tokenizer, texts), _encode(trimmed, texts)
    if any([new_id.get(i, -1) for i in a] != b for a, b in zip(before, after, strict=True)):
        raise ConfigError(
            f"trimming the vocabulary of {source!r} would change how the data is tokenised "
            "(its tokenizer is not a Unigram or WordPiece model that keeps segmentations); "
            "set trim_vocab=false."
        )
    embeddings = model.get_input_embeddings()
    vocab_map = VocabMap(kept_ids, embeddings.num_embeddings, source)
    _trim_embeddings(model, vocab_map)
    return model, trimmed, vocab_map


def _floor_pieces(model_state: dict) -> set[int]:
    """Unigram: the lowest-scoring piece, which fixes the unknown-character penalty."""
    if model_state["type"] != "Unigram":
        return set()
    vocab = model_state["vocab"]
    return {min(range(len(vocab)), key=lambda i: vocab[i][1])}


def _remap_model(model_state: dict, new_id: dict[int, int], source: str) -> None:
    kind = model_state["type"]
    if kind == "Unigram":
        vocab = model_state["vocab"]
        model_state["vocab"] = [vocab[old] for old in sorted(new_id)]
        if model_state.get("unk_id") is not None:
            model_state["unk_id"] = new_id[model_state["unk_id"]]
    elif kind == "WordPiece":
        model_state["vocab"] = {
            piece: new_id[i] for piece, i in model_state["vocab"].items() if i in new_id
        }
    else:
        raise ConfigError(
            f"vocabulary trimming supports Unigram and WordPiece tokenizers; {source!r} has a "
            f"{kind} model. Set trim_vocab=false."
        )


def _remap_specials(state: dict, new_id: dict[int, int]) -> None:
    """Added tokens and the post-processor's template ids follow the new numbering."""
    state["added_tokens"] = [
        t | {"id": new_id[t["id"]]} for t in state.get("added_tokens", []) if t["id"] in new_id
    ]
    processor = state.get("post_processor")
    for proc in (processor or {}).get("processors", [processor] if processor else []):
        for key in ("sep", "cls"):  # RobertaProcessing, BertProcessing: [token, id]
            if key in proc:
                proc[key] = [proc[key][0], new_id[proc[key][1]]]
        for special in (proc.get("special_tokens") or {}).values():  # TemplateProcessing
            special["ids"] = [new_id[i] for i in special["ids"]]


def _trim_embeddings(model: torch.nn.Module, vocab_map: VocabMap) -> None:
    old = model.get_input_embeddings()
    rows = torch.tensor(vocab_map.kept_ids)
    padding = old.padding_idx
    new_padding = vocab_map.kept_ids.index(padding) if padding is not None else None
    embeddings = getattr(model.base_model, "embeddings", None)
    if getattr(embeddings, "padding_idx", new_padding) != new_padding:
        # RoBERTa-style models derive position ids from the pad id: it must not move.
        raise ConfigError(
            f"trimming would move the pad token from id {padding} to {new_padding}, which "
            f"this model's position ids depend on; set trim_vocab=false."
        )
    new = torch.nn.Embedding(
        len(rows), old.embedding_dim, padding_idx=new_padding, dtype=old.weight.dtype
    )
    with torch.no_grad():
        new.weight.copy_(old.weight[rows])
    model.set_input_embeddings(new)
    model.config.vocab_size = len(rows)
    if padding is not None:
        model.config.pad_token_id = new_padding
