"""The built-in offline corpus: names from the Unicode CLDR locale data that Babel ships.

Task: topic classification of a name (is "Allemagne" a territory, a language, a currency,
a script or a unit?). Real text in hundreds of languages, parallel by CLDR code, with no
download: pair_id = f"{category}:{code}" links the names of one entity across languages.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence

import babel
import babel.localedata
import pandas as pd

from xlinfluence.data import schema
from xlinfluence.data.select import Pools
from xlinfluence.data.source import Source
from xlinfluence.errors import DataError

#: Label index -> category; a label is the category of the name.
CATEGORIES = ("territory", "language", "currency", "script", "unit")


def available_languages() -> list[str]:
    """Base language codes Babel has locale data for (regional variants also work)."""
    return sorted(i for i in babel.localedata.locale_identifiers() if "_" not in i)


def _locale(lang: str) -> babel.Locale:
    ident = lang.replace("-", "_")
    if not babel.localedata.exists(ident):
        raise DataError(
            f"cldr: unknown language {lang!r}. Available: {', '.join(available_languages())}. "
            "Choose languages from that list (regional variants such as 'pt_PT' work too)."
        )
    return babel.Locale.parse(ident)


@functools.lru_cache(maxsize=1)
def _root_unit_names() -> frozenset[str]:
    root = babel.Locale.parse("root")
    return frozenset(n for names in root.unit_display_names.values() for n in names.values())


def _unit_name(names) -> str | None:
    # CLDR's long display name ("kilometers"); a locale without one inherits the short one.
    return names.get("long") or names.get("short")


@functools.cache
def names(lang: str) -> tuple[tuple[str, str, str], ...]:
    """(category, code, name) for one language, cleaned.

    Dropped: empty names, names equal to their code, unit names that are CLDR root's
    untranslated abbreviations, and any name that occurs twice in the language ("Arabic"
    is a language and a script): a text must determine its label.
    """
    loc = _locale(lang)
    root_units = _root_unit_names()
    entries = []
    for category, table in (
        ("territory", loc.territories),
        ("language", loc.languages),
        ("currency", loc.currencies),
        ("script", loc.scripts),
    ):
        entries += [(category, code, name) for code, name in table.items()]
    for code, unit_names in loc.unit_display_names.items():
        name = _unit_name(unit_names)
        if name not in root_units:
            entries.append(("unit", code, name))
    entries = [
        (cat, code, name.strip())
        for cat, code, name in entries
        if isinstance(name, str) and name.strip() and name.strip().lower() != code.lower()
    ]
    seen = Counter(name for _, _, name in entries)
    return tuple(e for e in entries if seen[e[2]] == 1)


def load(languages: Sequence[str], *, data_path: str = "", column_map=None) -> Pools:
    """One pool: every entity named in all requested languages, in each of them (built in:
    its SOURCE refuses a data_path or column_map before this is called)."""
    tables = {lang: {(cat, code): name for cat, code, name in names(lang)} for lang in languages}
    shared = set.intersection(*(set(t) for t in tables.values())) if tables else set()
    rows = [
        (f"cldr-{lang}-{cat}-{code}", lang, CATEGORIES.index(cat), f"{cat}:{code}", name)
        for lang, table in tables.items()
        for (cat, code), name in table.items()
        if (cat, code) in shared
    ]
    frame = pd.DataFrame(
        rows, columns=[schema.ID, schema.LANGUAGE, schema.LABEL, schema.PAIR_ID, schema.TEXT]
    )
    return Pools(schema.validate(frame, where="cldr"), None, list(CATEGORIES))


SOURCE = Source(
    "cldr",
    load,
    origin="https://cldr.unicode.org",
    languages=lambda data_path: set(babel.localedata.locale_identifiers()),
    takes_data_path=False,
    takes_column_map=False,
    why="cldr is built in and takes none",
    fix="leave it empty, or use dataset=local for your own files",
)
