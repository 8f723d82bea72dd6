"""The dataset registry is the one place a dataset is declared: the `dataset` parameter's
choices, the data_path and column_map rules and the provenance URL come from it, and
nothing dispatches on a dataset's name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xlinfluence.config import DATASETS as CHOICES
from xlinfluence.config import TrainConfig
from xlinfluence.data import DATASETS, source_of
from xlinfluence.errors import ConfigError

SRC = Path(__file__).resolve().parents[2] / "src" / "xlinfluence"


def test_every_registered_dataset_is_a_choice_with_its_own_rules():
    assert CHOICES == tuple(DATASETS)
    for name, source in DATASETS.items():
        assert source.name == name
        path = "/somewhere" if source.needs_data_path else ""
        TrainConfig(dataset=name, data_path=path)  # what it needs, it accepts
        if not source.takes_data_path:
            with pytest.raises(ConfigError, match=f"data_path='x': {source.why}"):
                TrainConfig(dataset=name, data_path="x")
        if not source.takes_column_map:
            with pytest.raises(ConfigError, match=f"column_map='text=t': {source.why}"):
                TrainConfig(dataset=name, column_map="text=t")
        assert source_of(name, path) == (str(Path(path).resolve()) if path else source.origin)


def test_nothing_dispatches_on_a_dataset_name():
    compared = re.compile(r"dataset\s*(==|!=|in)\s*[\"'(]")
    hits = [
        f"{path.relative_to(SRC)}: {line.strip()}"
        for path in SRC.rglob("*.py")
        for line in path.read_text().splitlines()
        if compared.search(line)
    ]
    assert not hits, hits
