"""SIB-200 (Adelani et al., EACL 2024): topic classification of FLORES-200 sentences.

Seven topics, the same sentences in 205 languages: `index_id` names a FLORES sentence, so
pair_id = f"sib200:{index_id}" links a sentence to its translations. Read from the hub
(`Davlan/sib200`, one config per FLORES code) or, with data_path, from a folder in the
layout of the SIB-200 repository (`dadelani/sib-200`, `data/annotated/`):
`<data_path>/<flores code>/{train,dev,test}.tsv` with columns index_id, category, text.

Languages may be FLORES codes (`eng_Latn`) or the short codes the other tasks use (`en`);
the manifests keep the code the user gave.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from xlinfluence.data import schema
from xlinfluence.data.select import Pools, check_languages
from xlinfluence.data.source import Source, folders
from xlinfluence.errors import DataError

HUB_NAME = "Davlan/sib200"
CATEGORIES = (
    "science/technology",
    "travel",
    "politics",
    "sports",
    "health",
    "entertainment",
    "geography",
)
#: Short codes -> FLORES-200 codes, for the languages the paper's tasks cover and more.
SHORT_CODES = {
    "ar": "arb_Arab", "bg": "bul_Cyrl", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn",
    "es": "spa_Latn", "fi": "fin_Latn", "fr": "fra_Latn", "hi": "hin_Deva", "id": "ind_Latn",
    "it": "ita_Latn", "ja": "jpn_Jpan", "ko": "kor_Hang", "nl": "nld_Latn", "pl": "pol_Latn",
    "pt": "por_Latn", "ru": "rus_Cyrl", "sw": "swh_Latn", "th": "tha_Thai", "tr": "tur_Latn",
    "uk": "ukr_Cyrl", "ur": "urd_Arab", "vi": "vie_Latn", "zh": "zho_Hans",
}  # fmt: skip
COLUMNS = ("index_id", "category", "text")
SPLITS = {"train": "train", "test": "test"}  # our pool -> SIB-200 split


def flores_code(language: str) -> str:
    return SHORT_CODES.get(language, language)


def _frame(raw: pd.DataFrame, language: str, split: str, where: str) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {missing}; found {list(raw.columns)}. SIB-200 files "
            "have index_id, category and text (the repository's data/annotated layout)."
        )
    unknown = sorted(set(raw["category"]) - set(CATEGORIES))
    if unknown:
        raise DataError(f"{where}: unknown categor(y/ies) {unknown}; SIB-200 has {CATEGORIES}.")
    index_id = raw["index_id"].astype(str)
    frame = pd.DataFrame(
        {
            schema.ID: f"sib200-{language}-{split}-" + index_id,
            schema.LANGUAGE: language,
            schema.LABEL: raw["category"].map({c: i for i, c in enumerate(CATEGORIES)}),
            schema.PAIR_ID: "sib200:" + index_id,
            schema.TEXT: raw["text"],
        }
    )
    return schema.validate(frame, where=where)


def _read_tsv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(
            f"sib200: {path} is missing; data_path must hold one folder per FLORES code with "
            "train.tsv and test.tsv (the SIB-200 repository's data/annotated/)."
        )
    try:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"sib200: cannot read {path} as tab-separated text ({err}).") from err


def _from_folder(root: Path, language: str) -> dict[str, pd.DataFrame]:
    folder = root / flores_code(language)
    return {pool: _read_tsv(folder / f"{split}.tsv") for pool, split in SPLITS.items()}


def _from_hub(language: str) -> dict[str, pd.DataFrame]:
    import datasets  # slow to import: only when the hub is used

    try:
        loaded = datasets.load_dataset(HUB_NAME, flores_code(language))
    except Exception as err:  # network, cache and hub errors all end here
        raise DataError(
            f"sib200: could not load {HUB_NAME!r} config {flores_code(language)!r} "
            f"({type(err).__name__}: {err}). Without hub access, pass a copy of the SIB-200 "
            "repository's data/annotated folder as data_path."
        ) from err
    return {pool: loaded[split].to_pandas() for pool, split in SPLITS.items()}


def load(
    languages: Sequence[str], *, data_path: str = "", column_map: Mapping[str, str] | None = None
) -> Pools:
    """Train and test pools of `languages` (short or FLORES codes)."""
    if column_map:
        raise DataError("sib200 has fixed columns: it takes no column_map.")
    if data_path:
        root = Path(data_path)
        if not root.is_dir():
            raise DataError(
                f"sib200: data_path {data_path!r} is not a folder; give the SIB-200 "
                "repository's data/annotated folder (one sub-folder per FLORES code)."
            )
        flores = [p.name for p in root.iterdir() if p.is_dir()]
        short = [s for s, code in SHORT_CODES.items() if code in flores]
        check_languages(languages, flores + short, where=f"sib200 ({data_path})")
        raw = {lang: _from_folder(root, lang) for lang in languages}
    else:
        raw = {lang: _from_hub(lang) for lang in languages}
    pools = {
        pool: pd.concat(
            [_frame(raw[lang][pool], lang, pool, f"sib200 {lang} {pool}") for lang in languages]
        )
        for pool in SPLITS
    }
    return Pools(pools["train"], pools["test"], list(CATEGORIES))


def _languages(data_path: str) -> set[str] | None:
    """A local copy's FLORES folders and their short codes (the hub's: unknown here)."""
    found = folders(data_path)
    if found is None:
        return None
    return found | {short for short, code in SHORT_CODES.items() if code in found}


SOURCE = Source(
    "sib200",
    load,
    origin=f"https://huggingface.co/datasets/{HUB_NAME}",
    languages=_languages,
    takes_column_map=False,
    why="SIB-200 has fixed columns",
    fix="leave column_map empty",
)
