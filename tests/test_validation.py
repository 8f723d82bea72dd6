"""Every parameter of every step, given invalid values, is refused up front.

The config dataclasses are the one list of parameters, and each field declares its check;
for each check type a hypothesis strategy draws values that check must refuse. Through the
CLI (as `mlflow run` calls it) each must end in one line, `Error: <name>=...`, with no
traceback, before any step runs and with no run left in the tracking store.
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from xlinfluence import checks, cli
from xlinfluence.config import TrainConfig, check_of
from xlinfluence.config.main import STEP_CONFIGS, MainConfig

NO_RUN = "0123456789abcdef0123456789abcdef"  # a well-formed ID no store holds


def _below(minimum: int):
    return st.integers(min_value=-(10**6), max_value=minimum - 1).map(str)


def _real(check: checks.Real):
    outside = st.floats(max_value=check.low, exclude_max=not check.strict_low) | (
        st.floats(min_value=check.high) if check.high < math.inf else st.nothing()
    )
    return outside.map(repr) | st.sampled_from(["nan", "inf", "-inf", "ten"])


def _not_matching(regex: str):
    return st.text(min_size=1, max_size=12).filter(lambda v: not re.fullmatch(regex, v))


STRATEGIES = {
    checks.AtLeast: lambda c: _below(c.minimum) | st.sampled_from(["abc", "1.5", ""]),
    checks.Real: _real,
    checks.OneOf: lambda c: st.text(min_size=1, max_size=12).filter(lambda v: v not in c.choices),
    checks.Flag: lambda c: st.sampled_from(["maybe", "2", "yes please", ""]),
    checks.Languages: lambda c: (
        st.sampled_from(["en,en", "en;de", "english!", "1en", "e n"])
        | (st.sampled_from(["", " , "]) if not c.single else st.nothing())
    ),
    checks.Counts: lambda c: st.sampled_from(["0", "-3", "en=0", "en=x", "many", "en=4,en=5", ""]),
    checks.KeyValues: lambda c: st.sampled_from(["text", "txt=a", "text=", "=a", "label:x"]),
    checks.Pattern: lambda c: _not_matching(c.regex),
    checks.Regex: lambda c: st.sampled_from(["(", "[a-", "*x", " ", "a{2,1}"]),
    checks.PathRef: lambda c: (
        st.sampled_from(["/no/such/xlinfluence/path", "/no/such.yaml"])
        | (st.just("/") if c.kind == "file" else st.nothing())
    ),
    checks.RunRef: lambda c: (
        st.sampled_from(["abc", NO_RUN, "x" * 32])
        | (st.just("") if not c.optional else st.nothing())
    ),
    checks.ModelRef: lambda c: st.sampled_from(["./no-such-model", "bad name!", "/no/such/model"]),
}

FIELDS = [(step, f.name) for step, cls in STEP_CONFIGS.items() for f in dataclasses.fields(cls)]


def test_every_field_has_a_check_and_every_check_a_strategy():
    for cls in STEP_CONFIGS.values():
        for f in dataclasses.fields(cls):
            assert isinstance(check_of(f), checks.Check), (cls.step, f.name)
            assert type(check_of(f)) in STRATEGIES, type(check_of(f))


def test_defaults_are_valid():
    for cls in (TrainConfig, MainConfig):
        cls()  # the defaults pass every check and rule


@pytest.fixture(scope="module")
def required(main_runs):
    """Valid values for the parameters a step cannot run without."""
    return {
        "influence": ["--train-run-id", main_runs["train"]],
        "analyze": ["--influence-run-id", main_runs["influence"]],
    }


@pytest.fixture
def no_step_runs(monkeypatch):
    def refuse_to_run(step):
        def run(config):
            raise AssertionError(f"step {step} would have run with {config}")

        return run

    monkeypatch.setattr(cli, "_runner", refuse_to_run)


def _run_count() -> int:
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(experiments, max_results=50_000))


@pytest.mark.parametrize(("step", "name"), FIELDS)
def test_invalid_values_are_refused_in_one_line(step, name, required, no_step_runs):
    cls = STEP_CONFIGS[step]
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    strategy = STRATEGIES[type(check_of(field))](check_of(field))
    before = _run_count()

    @settings(
        max_examples=6, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
    )  # fmt: skip
    @given(value=strategy)
    def refused(value):
        args = [*required.get(step, []), f"--{name.replace('_', '-')}", value]
        result = CliRunner().invoke(cli.cli, [step, *args])
        output = result.output.strip()
        assert result.exit_code != 0, (args, output)
        assert (
            "Traceback" not in output
            and result.exception is None
            or isinstance(result.exception, SystemExit)
        ), (args, output)
        assert len(output.splitlines()) == 1, (args, output)
        assert output.startswith("Error: ") and name in output, (args, output)

    refused()
    assert _run_count() == before, "a refused invocation left a run in the tracking store"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "epochs=0: must be at least 1"),
        (["--learning-rate", "-1"], "learning_rate=-1.0: out of range"),
        (["--heldout-language", "sw", "--languages", "en,de"], "add it to languages"),
        (["--top-k", "900", "--train-per-language", "100", "--languages", "en,de"], "top_k=900"),
        (["--experiment", "zero-shot", "--experiment-values", "sw"], "experiment_values='sw'"),
        (["--experiment-values", "1,2"], "set without an experiment"),
        (["--dataset", "local"], "data_path='': dataset=local reads your files"),
        (["--dataset", "xnli", "--languages", "en,xx"], "xnli has no ['xx']"),
    ],
)
def test_rules_between_parameters(args, message, no_step_runs):
    result = CliRunner().invoke(cli.cli, ["main", *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_jsonl_file_that_is_not_json_names_file_and_line(tmp_path, no_step_runs):
    from xlinfluence.data import load_splits
    from xlinfluence.errors import DataError

    path = tmp_path / "mine.jsonl"
    path.write_text('{"text": "a", "label": 0, "language": "en"}\n{"text": "b", label: 1}\n')
    with pytest.raises(DataError, match=r"mine\.jsonl line 2 is not JSON"):
        load_splits(dataset="local", data_path=str(path), languages=["en"],
                    train_counts={"en": 1}, test_per_language=1)  # fmt: skip
