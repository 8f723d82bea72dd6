"""The MLproject declares exactly the step configs' parameters, defaults and flags."""

import dataclasses
from pathlib import Path

import yaml

from xlinfluence.config.main import STEP_CONFIGS

ROOT = Path(__file__).resolve().parents[1]


def test_every_step_is_an_entry_point_with_matching_parameters():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    assert set(project["entry_points"]) == set(STEP_CONFIGS)
    for step, cls in STEP_CONFIGS.items():
        entry = project["entry_points"][step]
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        declared = entry["parameters"]
        assert set(declared) == set(fields), step
        required = {"train_run_id": "1" * 32, "influence_run_id": "2" * 32}
        required = {k: v for k, v in required.items() if k in fields}
        for name, default in fields.items():
            if name in required:  # no valid default: declared empty, as in the config
                assert declared[name]["default"] == default == "", (step, name)
                continue
            as_declared = cls.canonical({**required, name: declared[name]["default"]})
            assert as_declared == cls.canonical({**required, name: default}), (step, name)
            assert f"--{name.replace('_', '-')} {{{name}}}" in entry["command"], (step, name)
        assert entry["command"].startswith(f"python entrypoints/{step}.py")
        assert (ROOT / "entrypoints" / f"{step}.py").is_file()


def test_shipped_accelerate_configs_parse():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        assert config["distributed_type"] in {"NO", "MULTI_CPU", "MULTI_GPU"}, path
        assert config["num_processes"] >= 1


def test_committed_mlproject_is_the_rendered_one():
    from xlinfluence import render

    assert (ROOT / "MLproject").read_text() == render.mlproject(), (
        "MLproject is out of date: run `python -m xlinfluence.render mlproject > MLproject`"
    )


def test_committed_errors_doc_is_the_rendered_one():
    from xlinfluence import render

    assert (ROOT / "docs" / "errors.md").read_text() == render.errors(), (
        "docs/errors.md is out of date: run `python -m xlinfluence.render errors > docs/errors.md`"
    )


def test_the_command_says_its_version_and_the_package_agrees():
    import xlinfluence

    from .conftest import run_cli

    code, output = run_cli("--version")
    assert code == 0 and output.strip() == f"xlinfluence, version {xlinfluence.__version__}"


def test_entry_points_run_the_source_of_the_project_they_are_in(tmp_path):
    """An entry point imports its own checkout's src/ (entrypoints/_checkout.py), ahead of
    an installed xlinfluence: `mlflow run` with conda.yaml installs the dependencies only,
    and a cached environment must not run another checkout's code."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(ROOT / "entrypoints", tmp_path / "entrypoints")
    shutil.copytree(ROOT / "src" / "xlinfluence", tmp_path / "src" / "xlinfluence",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    probe = "import _checkout, xlinfluence; print(xlinfluence.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path / "entrypoints", capture_output=True,
        text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert out == str(tmp_path / "src" / "xlinfluence" / "__init__.py")
    assert "-e ." not in (ROOT / "conda.yaml").read_text()  # dependencies only
