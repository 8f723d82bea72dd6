"""Do cross-lingual shares follow how close the languages are? URIEL distances and scripts.

URIEL (Littell et al. 2017) describes languages by typological, phonological, genetic and
geographic feature vectors; the PyPI package `lang2vec` ships them as NumPy archives. A
distance between two languages is the cosine distance of their vectors, as URIEL's own
precomputed distances are: syntax, phonology and phoneme inventory from the kNN-predicted
(complete) feature sets, genetic from language-family membership, geographic from the
geo-coordinate features. Script sharing comes from the FLORES code or a table.

Each cross-lingual share (training language X -> test language L, X != L) is correlated
(Spearman) with each distance; the p-value is a Mantel-style permutation test: language
labels are permuted jointly over the rows and columns of the distance matrix (every
permutation when there are at most 8 languages), so dependence between cells that share a
language does not inflate significance.
"""

from __future__ import annotations

import functools
import importlib.metadata
import itertools
import json
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from xlinfluence.errors import ConfigError

DISTANCES = {  # name -> (archive, feature prefix)
    "syntactic": ("feature_predictions.npz", "S_"),
    "phonological": ("feature_predictions.npz", "P_"),
    "inventory": ("feature_predictions.npz", "INV_"),
    "genetic": ("family_features.npz", ""),
    "geographic": ("geocoord_features.npz", ""),
}
SCRIPT = "different_script"
#: Scripts of short codes (FLORES codes carry theirs: eng_Latn).
SCRIPTS = {
    "ar": "Arab",
    "bg": "Cyrl",
    "de": "Latn",
    "el": "Grek",
    "en": "Latn",
    "es": "Latn",
    "fi": "Latn",
    "fr": "Latn",
    "he": "Hebr",
    "hi": "Deva",
    "id": "Latn",
    "it": "Latn",
    "ja": "Jpan",
    "ko": "Hang",
    "nl": "Latn",
    "pl": "Latn",
    "pt": "Latn",
    "ru": "Cyrl",
    "sw": "Latn",
    "th": "Thai",
    "tr": "Latn",
    "uk": "Cyrl",
    "ur": "Arab",
    "vi": "Latn",
    "zh": "Hans",
}
#: Short codes lang2vec's letter table lacks or maps elsewhere than FLORES does.
ISO3 = {"ar": "arb", "sw": "swh", "zh": "zho"}


def iso3(language: str) -> str:
    """ISO 639-3 code of a short (en) or FLORES (eng_Latn) code."""
    if "_" in language:
        return language.split("_")[0]
    if language in ISO3:
        return ISO3[language]
    codes = _letter_codes()
    if language not in codes:
        raise ConfigError(f"no ISO 639-3 code known for language {language!r}")
    return codes[language]


def script(language: str) -> str | None:
    return language.split("_")[1] if "_" in language else SCRIPTS.get(language)


def _data(name: str):
    path = importlib.metadata.distribution("lang2vec").locate_file(f"lang2vec/data/{name}")
    return path


@functools.cache
def _letter_codes() -> dict[str, str]:
    return json.loads(_data("letter_codes.json").read_text())


@functools.cache
def _archive(name: str):
    with np.load(_data(name), allow_pickle=False) as archive:  # plain arrays only
        return {key: archive[key] for key in archive.files}


def _vectors(kind: str, codes: list[str]) -> np.ndarray:
    archive, prefix = DISTANCES[kind]
    data = _archive(archive)
    langs = {code: i for i, code in enumerate(data["langs"])}
    missing = [c for c in codes if c not in langs]
    if missing:
        raise ConfigError(f"URIEL has no {kind} features for {missing}")
    columns = np.array([f.startswith(prefix) for f in data["feats"]])
    return data["data"][[langs[c] for c in codes]][:, columns, 0].astype(float)


def distance_matrices(languages: list[str]) -> dict[str, pd.DataFrame]:
    """Per distance kind, a languages x languages frame of cosine distances (and 0/1
    different script)."""
    codes = [iso3(lang) for lang in languages]
    out = {}
    for kind in DISTANCES:
        vectors = _vectors(kind, codes)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        cosine = (vectors @ vectors.T) / np.clip(norms * norms.T, 1e-12, None)
        out[kind] = pd.DataFrame(1.0 - cosine, index=languages, columns=languages)
    scripts = [script(lang) for lang in languages]
    out[SCRIPT] = pd.DataFrame(
        [[float(a != b) if a and b else np.nan for b in scripts] for a in scripts],
        index=languages,
        columns=languages,
    )
    return out


def _offdiagonal(matrix: pd.DataFrame, pairs) -> np.ndarray:
    return np.array([matrix.loc[test, train] for test, train in pairs], dtype=float)


def correlations(share_matrix: pd.DataFrame, *, max_permutations: int = 5040) -> pd.DataFrame:
    """Spearman correlation of cross-lingual shares with each distance, and its Mantel p.

    share_matrix: test language (rows) x training language (columns), the share of the
    test language's top-k from each training language. Only languages on both axes count.
    """
    languages = [lang for lang in share_matrix.index if lang in share_matrix.columns]
    if len(languages) < 3:
        return pd.DataFrame()
    pairs = [(t, s) for t in languages for s in languages if t != s]
    shares = _offdiagonal(share_matrix, pairs)
    distances = distance_matrices(languages)
    permutations = list(itertools.permutations(range(len(languages))))
    if len(permutations) > max_permutations:
        rng = np.random.default_rng(0)
        permutations = [tuple(rng.permutation(len(languages))) for _ in range(max_permutations)]
    rows = []
    for kind, matrix in distances.items():
        values = _offdiagonal(matrix, pairs)
        if np.isnan(values).any() or np.ptp(values) == 0:
            continue
        rho = spearmanr(shares, values).statistic
        null = []
        for order in permutations:
            renamed = dict(zip(languages, [languages[i] for i in order], strict=True))
            permuted = matrix.rename(index=renamed, columns=renamed)
            null.append(spearmanr(shares, _offdiagonal(permuted, pairs)).statistic)
        null = np.abs(np.nan_to_num(np.array(null)))
        rows.append(
            {
                "distance": kind,
                "spearman_rho": float(rho),
                "mantel_p": float((1 + (null >= abs(rho) - 1e-12).sum()) / (1 + len(null))),
                "n_pairs": len(pairs),
                "n_permutations": len(null),
            }
        )
    return pd.DataFrame(rows)


def pairs_table(share_matrix: pd.DataFrame) -> pd.DataFrame:
    """One row per (test, training) language pair: its share and every distance."""
    languages = [lang for lang in share_matrix.index if lang in share_matrix.columns]
    distances = distance_matrices(languages)
    rows = [
        {"test_language": t, "train_language": s, "share": share_matrix.loc[t, s]}
        | {kind: matrix.loc[t, s] for kind, matrix in distances.items()}
        for t in languages
        for s in languages
        if t != s
    ]
    return pd.DataFrame(rows)


def scatter(pairs: pd.DataFrame, table: pd.DataFrame) -> Figure:
    """Cross-lingual share against each distance, one panel per kind, rho and p in titles."""
    kinds = [k for k in [*DISTANCES, SCRIPT] if k in pairs and pairs[k].notna().all()]
    columns = min(3, len(kinds))
    fig = Figure(figsize=(4.0 * columns, 3.3 * math.ceil(len(kinds) / columns)))
    axes = fig.subplots(math.ceil(len(kinds) / columns), columns, squeeze=False).ravel()
    stats = table.set_index("distance") if len(table) else None
    for ax, kind in zip(axes, kinds, strict=False):
        ax.scatter(pairs[kind], pairs["share"], s=18, color="tab:blue")
        for row in pairs.itertuples():
            ax.annotate(
                f"{row.train_language}→{row.test_language}",
                (getattr(row, kind), row.share),
                fontsize=6,
                alpha=0.7,
            )
        title = kind
        if stats is not None and kind in stats.index:
            title += (
                f"  ρ={stats.loc[kind, 'spearman_rho']:.2f}, p={stats.loc[kind, 'mantel_p']:.2f}"
            )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("distance" if kind != SCRIPT else "different script (0/1)")
        ax.set_ylabel("share of top-k")
    for ax in axes[len(kinds) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
