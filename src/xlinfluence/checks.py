"""What each parameter may hold: one small check per field, declared next to it in config/.

A step config refuses a bad value when it is built (so before any data is read or any run
is created) with one ConfigError line naming the parameter, the value and the fix. Checks
that need the outside world (do files and runs exist?) are in steps/preflight.py. Each
check also says in words what it accepts: docs/errors.md is rendered from them
(`python -m xlinfluence.checks`), and tests/test_validation.py draws invalid values for
every field from them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from xlinfluence.errors import ConfigError

# A language code: ISO 639 (en, fil), FLORES-200 (eng_Latn), a CLDR locale (pt_PT), or a
# name of the user's own (Swahili); letters first, then letters, digits, '_' or '-'.
LANGUAGE = re.compile(r"[A-Za-z]{2,12}([_-][A-Za-z0-9]{1,8})*")
# A hub model id ("xlm-roberta-base", "intfloat/multilingual-e5-small").
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def items(text: str) -> tuple[str, ...]:
    """A comma-separated setting's items, stripped, blanks dropped, order kept: the one place
    a list setting is split (configs hold the result as typed properties)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def pairs(text: str) -> dict[str, str]:
    """'key=value,...' as a dict, keys and values stripped, order kept (a checked setting:
    its check has refused entries without '=' and repeated keys)."""
    entries = (entry.partition("=") for entry in items(text))
    return {key.strip(): value.strip() for key, _, value in entries}


def refuse(name: str, value: Any, problem: str, fix: str) -> ConfigError:
    """The one error shape: parameter, value, what is wrong, what to do."""
    return ConfigError(f"{name}={value!r}: {problem}; {fix}")


class Check:
    """Base: `check(name, value)` raises `refuse(...)`; `accepts` says what is allowed."""

    accepts: str = ""

    def __call__(self, name: str, value: Any) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class AtLeast(Check):
    """A whole number >= minimum."""

    minimum: int

    @property
    def accepts(self) -> str:
        return f"a whole number >= {self.minimum}"

    def __call__(self, name, value):
        if value < self.minimum:
            raise refuse(name, value, f"must be at least {self.minimum}", f"give {self.accepts}")


@dataclass(frozen=True)
class Real(Check):
    """A finite number in [low, high) (or (low, high) with strict_low)."""

    low: float
    high: float = math.inf
    strict_low: bool = False

    @property
    def accepts(self) -> str:
        low = f"> {self.low}" if self.strict_low else f">= {self.low}"
        return f"a finite number {low}" + (f" and < {self.high}" if self.high < math.inf else "")

    def __call__(self, name, value):
        too_low = value <= self.low if self.strict_low else value < self.low
        if not math.isfinite(value) or too_low or value >= self.high:
            raise refuse(name, value, "out of range", f"give {self.accepts}")


@dataclass(frozen=True)
class OneOf(Check):
    choices: tuple[str, ...]

    @property
    def accepts(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def __call__(self, name, value):
        if value not in self.choices:
            raise refuse(name, value, "unknown value", f"choose {self.accepts}")


@dataclass(frozen=True)
class Flag(Check):
    accepts: str = "true or false"

    def __call__(self, name, value):
        if not isinstance(value, bool):
            raise refuse(name, value, "not a flag", f"give {self.accepts}")


@dataclass(frozen=True)
class Languages(Check):
    """Comma-separated language codes, each once; `single`: one code, or empty."""

    single: bool = False

    @property
    def accepts(self) -> str:
        if self.single:
            return "empty, or one language code (en, de or eng_Latn)"
        return "comma-separated language codes (en, de or eng_Latn), each once"

    def __call__(self, name, value):
        codes = [c.strip() for c in value.split(",")] if value.strip() else []  # blanks refused
        if not codes:
            if self.single:
                return
            raise refuse(name, value, "no language given", f"give {self.accepts}")
        if self.single and len(codes) > 1:
            raise refuse(name, value, "more than one language", f"give {self.accepts}")
        bad = [c for c in codes if not LANGUAGE.fullmatch(c)]
        if bad:
            raise refuse(name, value, f"{bad} are not language codes", f"give {self.accepts}")
        twice = sorted({c for c in codes if codes.count(c) > 1})
        if twice:
            raise refuse(name, value, f"{twice} named twice", "name each language once")


@dataclass(frozen=True)
class Counts(Check):
    """One positive count, or language=count pairs."""

    accepts: str = "a whole number >= 1, or language=count pairs such as 'en=400,de=100'"

    def __call__(self, name, value):
        text = value.strip()
        entries = [p.strip() for p in text.split(",")] if "=" in text else [f"*={text}"]
        seen = set()
        for entry in entries:
            lang, _, count = (s.strip() for s in entry.partition("="))
            if (
                not count.isdigit()
                or int(count) < 1
                or (lang != "*" and not LANGUAGE.fullmatch(lang))
            ):
                raise refuse(name, value, f"cannot read {entry!r}", f"give {self.accepts}")
            if lang in seen:
                raise refuse(name, value, f"{lang!r} counted twice", "give one count per language")
            seen.add(lang)


@dataclass(frozen=True)
class KeyValues(Check):
    """Comma-separated key=value pairs whose keys come from `keys` (empty allowed)."""

    keys: tuple[str, ...]

    @property
    def accepts(self) -> str:
        return f"empty, or key=value pairs with keys among {', '.join(self.keys)}"

    def __call__(self, name, value):
        seen = set()
        for entry in items(value):
            key, sep, column = (s.strip() for s in entry.partition("="))
            if not sep or not column or key not in self.keys:
                raise refuse(name, value, f"cannot read {entry!r}", f"give {self.accepts}")
            if key in seen:
                raise refuse(name, value, f"{key!r} given twice", "give each key once")
            seen.add(key)


@dataclass(frozen=True)
class Pattern(Check):
    """A string matching a regular expression (what `accepts` describes)."""

    regex: str
    accepts: str

    def __call__(self, name, value):
        if not re.fullmatch(self.regex, value):
            raise refuse(name, value, "not in the expected form", f"give {self.accepts}")


@dataclass(frozen=True)
class Regex(Check):
    """'all', 'last-layer', or a valid regular expression on parameter names."""

    accepts: str = "'all', 'last-layer', or a regular expression on parameter names"

    def __call__(self, name, value):
        if not value.strip():
            raise refuse(name, value, "empty", f"give {self.accepts}")
        try:
            re.compile(value)
        except re.error as err:
            raise refuse(name, value, f"not a valid regex ({err})", f"give {self.accepts}") from err


@dataclass(frozen=True)
class PathRef(Check):
    """A local file or folder (or empty when optional); that it exists is checked in
    preflight, before the step starts."""

    kind: str  # "file", "folder" or "file or folder"
    optional: bool = True

    @property
    def accepts(self) -> str:
        return ("empty, or " if self.optional else "") + f"the path of an existing {self.kind}"

    def __call__(self, name, value):
        if not value and not self.optional:
            raise refuse(name, value, "no path given", f"give {self.accepts}")
        if "\n" in value or "\0" in value:
            raise refuse(name, value, "not a path", f"give {self.accepts}")


RUN_ID = re.compile(r"[0-9a-f]{32}")
# A counterfactual removal (analysis/counterfactual.py): what a train run leaves out.
REMOVAL = (
    r"(?P<kind>tracin|random):(?P<run>[0-9a-f]{32}):(?P<test>[\w-]+):(?P<train>[\w-]+)"
    r":(?P<k>\d+)(:(?P<draw>\d+))?"
)
# A ground-truth selection (data/subsets.py): a random subset, a language removal, or
# a cut of some languages to a fraction (the language datamodel's compositions).
SELECTION = (
    r"subset:(?P<alpha>\d*\.\d+):(?P<subset_draw>\d+)(?P<by>:pairs|:labels)?"
    r"|language:(?P<language>[\w-]+)"
    r"|fraction:(?P<fraction>\d*\.\d+):(?P<cut>[\w-]+(\+[\w-]+)*):(?P<cut_draw>\d+)"
)


@dataclass(frozen=True)
class RunRef(Check):
    """An MLflow run ID of the given step; preflight checks that it exists, is of that step
    and (when `finished`) FINISHED."""

    step: str
    optional: bool = False
    finished: bool = True

    @property
    def accepts(self) -> str:
        state = "a FINISHED" if self.finished else "an existing (possibly interrupted)"
        return ("empty, or " if self.optional else "") + f"the ID of {state} '{self.step}' run"

    def __call__(self, name, value):
        if not value and self.optional:
            return
        if not RUN_ID.fullmatch(value):
            fix = f"give {self.accepts} (32 hex digits, as the MLflow UI shows)"
            raise refuse(name, value, "not an MLflow run ID", fix)


@dataclass(frozen=True)
class ModelRef(Check):
    """A preset, a local folder saved with save_pretrained, or a hub model ID."""

    presets: tuple[str, ...]

    @property
    def accepts(self) -> str:
        presets = ", ".join(repr(p) for p in self.presets)
        return f"{presets}, an existing local model folder, or a hub ID such as xlm-roberta-base"

    def __call__(self, name, value):
        from pathlib import Path

        if value in self.presets or Path(value).is_dir():
            return
        if value.startswith((".", "/", "~")) or not HUB_ID.fullmatch(value):
            raise refuse(name, value, "no such preset, folder or hub ID", f"give {self.accepts}")
