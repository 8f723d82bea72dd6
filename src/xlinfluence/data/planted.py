"""A synthetic dataset with planted cross-lingual structure, to validate the influence analysis.

Real corpora do not say which training examples a prediction *should* rely on; this one
does, by construction. Three made-up languages with logographic scripts: every word is one
character, written without spaces (as in Chinese), and each language draws its characters
from its own Unicode block, so no token can be shared between languages, whatever the
tokenizer learns:

``src`` (source; CJK ideographs)
    Sentences of an article (one of ``n_articles`` words, so that the tokenizer's
    sentence-initial piece is always a frequent language-specific one, never a bare
    ``"▁"`` shared by all languages), then ``min_words``..``max_words`` words: fillers
    drawn uniformly from ``n_fillers`` filler words, with exactly one keyword at a random
    position. The keywords form ``n_labels`` disjoint groups of ``keywords_per_label``;
    the label is the group of the keyword, so a text determines its label.
``tra`` (translation; Hangul syllables)
    Exact word-by-word translations of ``src`` examples through a fixed, seeded bijection
    from the ``src`` vocabulary onto the ``tra`` vocabulary (articles onto articles,
    fillers onto fillers, keywords of group g onto keywords of group g): word order,
    length, keyword position and label are kept. As the bijection keeps every n-gram
    count, a subword tokenizer trained on the training texts segments a translation the
    same way as its original, so the two also agree token by token. Every ``src`` example,
    train and test, has its translation in ``tra`` in the same split with the same
    ``pair_id``; train and test pair_ids are disjoint.
``iso`` (isolated; Yi syllables)
    Its own vocabulary and its own sentences, made by the same rule with its own keyword
    groups and the same label set: it shares no token and no ``pair_id`` (null) with the
    other languages, only the task.

With ``borrowed_keywords=b > 0``, a second plant: the first ``b`` keywords of each group
are loanwords, written by ``tra`` with ``src``'s own characters (the bijection maps them
onto themselves); ``src``'s training set has none of them (its training rows whose keyword
is borrowed are left out, while their translations stay in ``tra``), and every ``src`` test
sentence has one (so has its translation). ``src``'s test set can then be solved only with
what ``tra``'s training rows that carry the loanwords teach, through the only tokens the
two languages share: ``tra`` is ``src``'s planted partner, a known answer for
counterfactual retraining (remove those rows and ``src`` must lose its keywords;
tests/test_planted.py), while ``iso`` still shares nothing. The plain translation plant
cannot be checked so: with no shared token, a from-scratch model has nothing to carry from
``tra`` to ``src`` but the classifier and the positions, and in retraining that is lost in
the noise.

What an influence method should then find, with known answers to the questions of
Choenni et al. (2023): ``iso`` test examples rely on ``iso`` training data (high own
share) and ``iso`` takes little of the other languages' top-k; for a ``src`` test example,
the ``tra`` proponents are translations of its own ``src`` proponents (reinforcing: high
translation share), since a translation carries the same content at the same positions.

Everything is deterministic for a seed: vocabularies, bijection, sentences and row order.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd

from xlinfluence.data import Splits, schema
from xlinfluence.errors import ConfigError

SOURCE = "src"
TRANSLATION = "tra"
ISOLATED = "iso"
LANGUAGES = (SOURCE, TRANSLATION, ISOLATED)

#: Per language, the Unicode block its words (single characters) come from.
_BLOCKS = {
    SOURCE: (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    TRANSLATION: (0xAC00, 0xD7A3),  # Hangul Syllables
    ISOLATED: (0xA000, 0xA48C),  # Yi Syllables
}
#: At most this many words per language (the Yi block's letters, with margin).
MAX_VOCABULARY = 1000
#: The loanword plant the tests and bench/planted_counterfactual.py retrain on: one
#: borrowed keyword per label, 20 fillers, sentences of 3-6 words.
LOANWORD_PLANT = {"borrowed_keywords": 1, "n_fillers": 20, "min_words": 3, "max_words": 6}


def _alphabet(lang: str) -> list[str]:
    """The block's letters that Unicode normalisation (NFKC) leaves as they are."""
    first, last = _BLOCKS[lang]
    letters = (chr(c) for c in range(first, last + 1))
    return [
        c
        for c in letters
        if unicodedata.category(c) == "Lo" and unicodedata.normalize("NFKC", c) == c
    ][:MAX_VOCABULARY]


@dataclass(frozen=True)
class _Sentence:
    """A sentence as indices into a vocabulary, so that a translation writes the same one."""

    article: int
    fillers: tuple[int, ...]
    position: int  # of the keyword among the words after the article
    label: int
    keyword: int  # index within the label's keyword group


@dataclass(frozen=True)
class _Language:
    """A vocabulary: articles, fillers, and keyword groups (keywords[label])."""

    articles: list[str]
    fillers: list[str]
    keywords: list[list[str]]

    def translated(self, mapping: dict[str, str]) -> _Language:
        return _Language(
            [mapping[w] for w in self.articles],
            [mapping[w] for w in self.fillers],
            [[mapping[w] for w in group] for group in self.keywords],
        )

    def borrowing(self, source: _Language, count: int) -> _Language:
        """This language with the first `count` keywords of each group taken from `source`."""
        return dataclasses.replace(
            self,
            keywords=[
                theirs[:count] + mine[count:]
                for mine, theirs in zip(self.keywords, source.keywords, strict=True)
            ],
        )

    def write(self, sentence: _Sentence) -> str:
        words = [self.fillers[i] for i in sentence.fillers]
        words.insert(sentence.position, self.keywords[sentence.label][sentence.keyword])
        return self.articles[sentence.article] + "".join(words)


@dataclass(frozen=True)
class _Sizes:
    articles: int
    fillers: int
    labels: int
    keywords_per_label: int
    min_words: int
    max_words: int

    @property
    def vocabulary(self) -> int:
        return self.articles + self.fillers + self.labels * self.keywords_per_label


def _vocabulary(lang: str, sizes: _Sizes, rng: np.random.Generator) -> _Language:
    """Seeded distinct words of `lang`'s script, split into articles, fillers, keywords."""
    alphabet = _alphabet(lang)
    words = [alphabet[i] for i in rng.permutation(len(alphabet))[: sizes.vocabulary]]
    fillers_end = sizes.articles + sizes.fillers
    keywords, per = words[fillers_end:], sizes.keywords_per_label
    return _Language(
        words[: sizes.articles],
        words[sizes.articles : fillers_end],
        [keywords[g * per : (g + 1) * per] for g in range(sizes.labels)],
    )


def _bijection(source: _Language, target: _Language, rng: np.random.Generator) -> dict:
    """A seeded word mapping source -> target, within each word class and keyword group."""
    mapping: dict[str, str] = {}
    for mine, theirs in (
        (source.articles, target.articles),
        (source.fillers, target.fillers),
        *zip(source.keywords, target.keywords, strict=True),
    ):
        mapping.update(zip(mine, (theirs[i] for i in rng.permutation(len(theirs))), strict=True))
    return mapping


def _sentences(
    language: _Language,
    count: int,
    sizes: _Sizes,
    rng: np.random.Generator,
    taken: set[str],
    keywords: int | None = None,
) -> list[_Sentence]:
    """`count` random sentences whose texts are not in `taken`; their texts are added to it.
    Keywords are drawn from the first `keywords` of each group (all, when None)."""
    out: list[_Sentence] = []
    tries = 0
    while len(out) < count:
        tries += 1
        if tries > 100 * count + 1000:
            raise ConfigError(
                f"planted: cannot make {count} distinct sentences from so small a vocabulary; "
                "raise n_fillers or max_words, or ask for fewer examples."
            )
        n_words = int(rng.integers(sizes.min_words, sizes.max_words + 1))
        label = int(rng.integers(sizes.labels))
        sentence = _Sentence(
            article=int(rng.integers(sizes.articles)),
            fillers=tuple(rng.integers(sizes.fillers, size=n_words - 1).tolist()),
            position=int(rng.integers(n_words)),
            label=label,
            keyword=int(rng.integers(keywords or sizes.keywords_per_label)),
        )
        text = language.write(sentence)
        if text not in taken:
            taken.add(text)
            out.append(sentence)
    return out


def _frame(
    language: _Language,
    lang: str,
    split: str,
    sentences: list[_Sentence],
    *,
    paired: bool,
    label_offset: int = 0,
    skip_keywords_below: int = 0,
) -> pd.DataFrame:
    """The sentences as rows; those whose keyword index is below `skip_keywords_below`
    (borrowed ones, in src's training set) are left out, the others keep their number."""
    n = len(sentences)
    frame = pd.DataFrame(
        {
            schema.ID: [f"planted-{lang}-{split}-{i:05d}" for i in range(n)],
            schema.LANGUAGE: lang,
            schema.LABEL: [label_offset + s.label for s in sentences],
            schema.PAIR_ID: [f"{split}-{i:05d}" if paired else None for i in range(n)],
            schema.TEXT: [language.write(s) for s in sentences],
        }
    )
    kept = [s.keyword >= skip_keywords_below for s in sentences]
    return frame[kept].reset_index(drop=True)


def _check(name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ConfigError(f"planted: {name}={value!r}; give a whole number >= {least}.")


def planted_splits(
    n_train_per_language: int,
    n_test_per_language: int,
    seed: int = 0,
    *,
    n_labels: int = 3,
    n_fillers: int = 60,
    keywords_per_label: int = 4,
    n_articles: int = 4,
    min_words: int = 4,
    max_words: int = 8,
    isolated_labels: bool = True,
    borrowed_keywords: int = 0,
) -> Splits:
    """Train and test sets of the planted languages ``src``, ``tra`` and ``iso`` (module doc).

    Each language gets ``n_train_per_language`` training and ``n_test_per_language`` test
    examples. ``tra`` rows are the translations of the ``src`` rows, in the same order and
    with the same ``pair_id`` (``train-00000``..., ``test-00000``...); ``iso`` rows have no
    pair_id. Rows are ordered by language (src, tra, iso), then example; ids are
    ``planted-<language>-<split>-<n>``. Labels index keyword groups named ``group-<g>``.
    Texts are distinct within a language, across train and test. Sentence length (words
    after the article) is uniform in ``min_words..max_words``. With ``borrowed_keywords``
    (module doc), ``src``'s training rows with a borrowed keyword are left out, so ``src``
    trains on about ``n_train_per_language * (1 - borrowed_keywords / keywords_per_label)``
    rows; ids keep the numbers of the sentences they write, with gaps.
    """
    for name, value, least in (
        ("n_train_per_language", n_train_per_language, 1),
        ("n_test_per_language", n_test_per_language, 1),
        ("n_labels", n_labels, 2),
        ("n_fillers", n_fillers, 1),
        ("keywords_per_label", keywords_per_label, 1),
        ("n_articles", n_articles, 1),
        ("min_words", min_words, 1),
        ("max_words", max_words, min_words),
    ):
        _check(name, value, least)
    _check("borrowed_keywords", borrowed_keywords, 0)
    if borrowed_keywords >= keywords_per_label:
        raise ConfigError(
            f"planted: borrowed_keywords={borrowed_keywords} leaves src no keyword of its own "
            f"(keywords_per_label={keywords_per_label}); give fewer than keywords_per_label."
        )
    sizes = _Sizes(n_articles, n_fillers, n_labels, keywords_per_label, min_words, max_words)
    if sizes.vocabulary > MAX_VOCABULARY:
        raise ConfigError(
            f"planted: a vocabulary of {sizes.vocabulary} words per language exceeds "
            f"{MAX_VOCABULARY}; lower n_fillers, n_labels or keywords_per_label."
        )
    rng = np.random.default_rng(seed)
    source = _vocabulary(SOURCE, sizes, rng)
    translation = source.translated(_bijection(source, _vocabulary(TRANSLATION, sizes, rng), rng))
    translation = translation.borrowing(source, borrowed_keywords)
    isolated = _vocabulary(ISOLATED, sizes, rng)

    offset = n_labels if isolated_labels else 0
    counts = {"train": n_train_per_language, "test": n_test_per_language}
    taken: dict[str, set[str]] = {SOURCE: set(), ISOLATED: set()}
    frames = {}
    for split, count in counts.items():
        # with loanwords, every src test sentence has one (and so does its translation)
        borrowed_only = borrowed_keywords if split == "test" else None
        skipped = borrowed_keywords if split == "train" else 0  # src never trains on them
        src = _sentences(source, count, sizes, rng, taken[SOURCE], borrowed_only)
        iso = _sentences(isolated, count, sizes, rng, taken[ISOLATED])
        frames[split] = schema.validate(
            pd.concat(
                [
                    _frame(source, SOURCE, split, src, paired=True, skip_keywords_below=skipped),
                    _frame(translation, TRANSLATION, split, src, paired=True),
                    _frame(isolated, ISOLATED, split, iso, paired=False, label_offset=offset),
                ]
            ),
            where=f"planted ({split})",
        )
    return Splits(
        train=frames["train"],
        test=frames["test"],
        label_names=[f"group-{g}" for g in range(n_labels)]
        + ([f"{ISOLATED}-group-{g}" for g in range(n_labels)] if isolated_labels else []),
    )


__all__ = [
    "ISOLATED",
    "LANGUAGES",
    "LOANWORD_PLANT",
    "MAX_VOCABULARY",
    "SOURCE",
    "TRANSLATION",
    "carriers",
    "planted_splits",
]


def carriers(train: pd.DataFrame) -> np.ndarray:
    """Which training rows carry a loanword: tra's rows with a character of another script
    (src's keyword). src's loanword test sentences can learn it from these rows only."""
    own = set(_alphabet(TRANSLATION)) | {" "}
    foreign = train[schema.TEXT].map(lambda text: not set(text) <= own)
    return ((train[schema.LANGUAGE] == TRANSLATION) & foreign).to_numpy()
