"""The MLproject declares exactly the step configs' parameters, defaults and flags."""

import dataclasses
from pathlib import Path

import pytest
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


def test_an_entry_point_refuses_to_run_another_copy_already_imported(tmp_path):
    """Where some other xlinfluence was imported before the entry point could put its
    checkout first, it stops with one line rather than run code that is not the project's."""
    import subprocess
    import sys

    other = tmp_path / "other" / "xlinfluence"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    probe = (f"import sys; sys.path.insert(0, {str(other.parent)!r}); import xlinfluence; "
             f"sys.path.insert(0, {str(ROOT / 'entrypoints')!r}); import _checkout")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 1
    assert f"belongs to the checkout {ROOT}, but Python imported xlinfluence from {other}" in (
        done.stderr
    )


def test_main_runs_only_an_xlinfluence_project(tmp_path, monkeypatch):
    """An installed copy looks for the project from the working directory up; a folder
    holding another MLflow project is never taken for it."""
    from xlinfluence.errors import ConfigError
    from xlinfluence.steps import main

    monkeypatch.setattr(main, "__file__", str(tmp_path / "site" / "x" / "steps" / "main.py"))
    foreign = tmp_path / "theirs"
    (foreign / "sub").mkdir(parents=True)
    (foreign / "MLproject").write_text("name: someone-elses\nentry_points: {}\n")
    monkeypatch.chdir(foreign / "sub")
    with pytest.raises(ConfigError, match=f"{foreign} hold other projects"):
        main.find_project()
    ours = tmp_path / "checkout"
    (ours / "notebooks").mkdir(parents=True)
    (ours / "MLproject").write_text((ROOT / "MLproject").read_text())
    monkeypatch.chdir(ours / "notebooks")
    assert main.find_project() == ours
