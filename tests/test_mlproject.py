"""The MLproject declares exactly the step configs' parameters, defaults and flags."""

import dataclasses
from pathlib import Path

import yaml

from xlinfluence.config import STEP_CONFIGS

ROOT = Path(__file__).resolve().parents[1]


def test_every_step_is_an_entry_point_with_matching_parameters():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    assert set(project["entry_points"]) == set(STEP_CONFIGS)
    for step, cls in STEP_CONFIGS.items():
        entry = project["entry_points"][step]
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        declared = entry["parameters"]
        assert set(declared) == set(fields), step
        for name, default in fields.items():
            assert cls.canonical({name: declared[name]["default"]}) == cls.canonical(
                {name: default}
            ), (step, name)
            assert f"--{name.replace('_', '-')} {{{name}}}" in entry["command"], (step, name)
        assert entry["command"].startswith(f"python entrypoints/{step}.py")
        assert (ROOT / "entrypoints" / f"{step}.py").is_file()


def test_shipped_accelerate_configs_parse():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        assert config["distributed_type"] in {"NO", "MULTI_CPU", "MULTI_GPU"}, path
        assert config["num_processes"] >= 1


def test_committed_mlproject_is_the_rendered_one():
    from xlinfluence.mlproject import render

    assert (ROOT / "MLproject").read_text() == render(), (
        "MLproject is out of date: run `python -m xlinfluence.mlproject > MLproject`"
    )
