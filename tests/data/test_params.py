"""CLI strings -> typed load_splits arguments."""

import pytest

from xlinfluence.data.params import parse_column_map, parse_counts, parse_languages
from xlinfluence.errors import ConfigError


def test_parse_column_map():
    assert parse_column_map("text=premise, text_pair=hypothesis") == {
        "text": "premise",
        "text_pair": "hypothesis",
    }
    assert parse_column_map("") == {}
    with pytest.raises(ConfigError, match="key=value"):
        parse_column_map("text")
    with pytest.raises(ConfigError, match=r"\['txt'\] are not schema columns"):
        parse_column_map("txt=premise")
    with pytest.raises(ConfigError, match="given twice"):
        parse_column_map("text=a,text=b")


def test_parse_counts():
    assert parse_counts("200", ["en", "de"]) == {"en": 200, "de": 200}
    assert parse_counts("de=100, en=400", ["en", "de"]) == {"en": 400, "de": 100}
    with pytest.raises(ConfigError, match=r"no count for \['fr'\]"):
        parse_counts("en=400,de=100", ["en", "de", "fr"])
    with pytest.raises(ConfigError, match=r"\['sw'\] not among the languages"):
        parse_counts("en=1,sw=2", ["en"])
    with pytest.raises(ConfigError, match="positive whole number"):
        parse_counts("en=0", ["en"])
    with pytest.raises(ConfigError, match="positive whole number"):
        parse_counts("many", ["en"])


def test_parse_languages():
    assert parse_languages("en, de,fr") == ["en", "de", "fr"]
    with pytest.raises(ConfigError, match="twice"):
        parse_languages("en,en")
