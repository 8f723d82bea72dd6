"""CLI strings -> the typed arguments of load_splits.

MLflow passes every parameter as a string; these parsers are the one place that turns
"en,de,fr", "en=400,de=100" and "text=premise,text_pair=hypothesis" into Python values,
with messages that say how to write them.
"""

from __future__ import annotations

from collections.abc import Sequence

from xlinfluence.data import schema
from xlinfluence.errors import ConfigError


def _items(text: str, what: str, example: str) -> list[tuple[str, str]]:
    items = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not key or not value:
            raise ConfigError(
                f"{what}: cannot read {part!r}; write key=value pairs, e.g. {example!r}."
            )
        if key in dict(items):
            raise ConfigError(f"{what}: {key!r} is given twice in {text!r}.")
        items.append((key, value))
    return items


def parse_languages(text: str) -> list[str]:
    """ "en,de,fr" -> ["en", "de", "fr"] (order kept: it is the row order of the data)."""
    langs = [p.strip() for p in text.split(",") if p.strip()]
    if len(set(langs)) != len(langs):
        raise ConfigError(f"languages: {text!r} names a language twice.")
    return langs


def parse_column_map(text: str) -> dict[str, str]:
    """ "text=premise,text_pair=hypothesis" -> {"text": "premise", "text_pair": "hypothesis"}.

    Keys are schema column names; values are the source's column names. "" -> {}.
    """
    mapping = dict(_items(text, "column_map", "text=premise,text_pair=hypothesis"))
    unknown = sorted(set(mapping) - set(schema.COLUMNS))
    if unknown:
        raise ConfigError(
            f"column_map: {unknown} are not schema columns; keys must be among "
            f"{list(schema.COLUMNS)} (schema name=your column)."
        )
    return mapping


def parse_counts(text: str, languages: Sequence[str]) -> dict[str, int]:
    """ "200" -> 200 for every language; "en=400,de=100,fr=100" -> per language."""

    def count(value: str, where: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = -1
        if n < 1:
            raise ConfigError(f"{where}: {value!r} is not a positive whole number of examples.")
        return n

    text = text.strip()
    if "=" not in text:
        n = count(text, "train counts")
        return {lang: n for lang in languages}
    counts = {
        lang: count(v, f"train count for {lang!r}")
        for lang, v in _items(text, "train counts", "en=400,de=100,fr=100")
    }
    missing = [lang for lang in languages if lang not in counts]
    extra = [lang for lang in counts if lang not in languages]
    if missing or extra:
        raise ConfigError(
            f"train counts {text!r}: "
            + (f"no count for {missing}; " if missing else "")
            + (f"{extra} not among the languages {list(languages)}; " if extra else "")
            + "give one count per language, or a single number for all."
        )
    return {lang: counts[lang] for lang in languages}
