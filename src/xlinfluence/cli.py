"""The `xlinfluence` command: one subcommand per step, options built from the step configs.

With `--accelerate-config FILE`, a step re-runs itself under `accelerate launch`; every
launched process attaches to the same MLflow run and only the main one logs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import yaml

from xlinfluence import checks, stopping, tracking
from xlinfluence.config import StepConfig, TrainConfig, check_of
from xlinfluence.config.main import STEP_CONFIGS
from xlinfluence.errors import ConfigError, XlinfluenceError
from xlinfluence.server import commands as server_commands

LAUNCHED_ENV = "XLINFLUENCE_LAUNCHED"


def _runner(step: str) -> Callable[[StepConfig], object]:
    """The step's `run` function (steps/runners.py), imported late so `--help` stays fast."""
    from xlinfluence.steps.runners import RUNNERS

    return RUNNERS[step]


def execute(config: StepConfig) -> object:
    """Run a step here, or under `accelerate launch` when the config names an Accelerate file.

    The files and runs the config names are checked first, before any run is created."""
    from xlinfluence.steps import preflight

    preflight.check(config)
    if not os.environ.get(LAUNCHED_ENV):
        fresh_accelerate_state()
    accelerate_config = getattr(config, "accelerate_config", "")
    if config.step == "main" or not accelerate_config or os.environ.get(LAUNCHED_ENV):
        result = _runner(config.step)(config)
    else:
        result = launch(config, Path(accelerate_config))
    if isinstance(config, TrainConfig) and result and not os.environ.get(LAUNCHED_ENV):
        tracking.log_final_model(str(result))  # once, by the process that started the step
    return result


def fresh_accelerate_state() -> None:
    """Forget the Accelerate state an earlier step of this process set up. It is one per
    process, and an Accelerator asking for another mixed_precision (train_precision) than
    the first one's is refused; steps run in-process one after another (`study verify`,
    the tests) each start from none. Never under `accelerate launch`, whose state it is."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def launch(config: StepConfig, accelerate_config: Path) -> str:
    if not accelerate_config.is_file():
        raise ConfigError(
            f"accelerate_config={str(accelerate_config)!r} is not a file; use one of "
            "configs/*.yaml or write one with `accelerate config --config_file FILE`."
        )
    with tracking.step_run(config) as run:
        command = [
            sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(accelerate_config),
            "-m", "xlinfluence.cli", config.step,
            *(f"--{k.replace('_', '-')}={v}" for k, v in config.to_params().items()),
        ]  # fmt: skip
        env = os.environ | {
            "MLFLOW_RUN_ID": run.run_id,
            "MLFLOW_TRACKING_URI": tracking.setup(),
            LAUNCHED_ENV: "1",
        }
        if _wants_cpu(accelerate_config):  # torchrun-launched CPU processes need it to join
            env["ACCELERATE_USE_CPU"] = "true"
        result = subprocess.run(command, env=env, check=False)
        if result.returncode != 0:
            raise XlinfluenceError(
                f"`accelerate launch` of step '{config.step}' exited with {result.returncode}; "
                "see the processes' output above."
            )
        return run.run_id


def _wants_cpu(accelerate_config: Path) -> bool:
    try:
        values = yaml.safe_load(accelerate_config.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(
            f"accelerate_config {accelerate_config} is not valid YAML ({err})."
        ) from err
    return bool(values.get("use_cpu"))


def _make_command(config_cls: type[StepConfig]) -> click.Command:
    # Options are read as text and parsed by the config, so every bad value meets the same
    # one-line error that names the parameter (click's own type errors print a usage block).
    options = [
        click.Option(
            [f"--{f.name.replace('_', '-')}", f.name],
            type=str,
            default=config_cls.to_text(f.default),
            show_default=True,
            help=f"{f.metadata['help']} [accepts {check_of(f).accepts}]",
        )
        for f in dataclasses.fields(config_cls)
    ]

    def callback(**values):
        try:
            with stopping.stop_signals():
                result = execute(config_cls.from_params(values))
        except stopping.Stopped as stop:
            click.echo(f"Error: {stopping.said(stop)}", err=True)
            sys.exit(stop.exit_code)
        except XlinfluenceError as err:
            raise click.ClickException(" ".join(str(err).split())) from err
        except Exception as err:  # a tracking server's refusal the step did not explain
            if (refused := tracking.refused(err)) is None:
                raise
            raise click.ClickException(" ".join(str(refused).split())) from err
        if result and not os.environ.get(LAUNCHED_ENV):  # the launcher prints it once
            click.echo(json.dumps(result) if isinstance(result, dict) else result)

    return click.Command(
        config_cls.step, callback=callback, params=options, help=config_cls.__doc__
    )


@click.group()
@click.version_option(package_name="xlinfluence", prog_name="xlinfluence")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Which languages' training data does a multilingual model learn from?"""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for _config_cls in STEP_CONFIGS.values():
    cli.add_command(_make_command(_config_cls))


cli.add_command(server_commands.server)


@cli.command("ui")
@click.option("--port", type=int, default=None, help="UI port (default: a free one).")
@click.option("--experiment", default=None, help="Experiment name (default: the newest run's).")
@click.option("--open/--no-open", "open_browser", default=True, show_default=True,
              help="Open the link in a browser where one is available.")  # fmt: skip
def ui(port: int | None, experiment: str | None, open_browser: bool) -> None:
    """The MLflow UI on MLFLOW_TRACKING_URI (else ./mlflow.db), linked to the runs table."""
    from xlinfluence import ui as runs_ui

    try:
        with stopping.stop_signals():  # SIGTERM and SIGHUP stop the UI as Ctrl-C does
            runs_ui.serve(runs_ui.store_uri(), port, experiment, open_browser)
    except XlinfluenceError as err:
        raise click.ClickException(str(err)) from err


@cli.group()
def study() -> None:
    """Carry a retraining study between stores and machines (docs/cluster.md)."""


@study.command("export")
@click.option(
    "--run",
    "run_id",
    required=True,
    help="The experiment's run (main with experiment=lds|leave-language-out|...).",
)
@click.option(
    "--to",
    "to",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The bundle folder; an existing bundle of the same study gains the new runs.",
)
def study_export(run_id: str, to: Path) -> None:
    """Write the study's finished runs (scores, outputs, manifests without texts) as a bundle."""
    from xlinfluence.study.export import export

    tracking.setup()
    click.echo(_or_one_line(lambda: export(run_id, to)).summary())


@study.command("import")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--data-path",
    default="",
    help="Where the study's data is on this machine (default: its base run's path).",
)
def study_import(directory: Path, data_path: str) -> None:
    """Make the bundle's runs in the active experiment (MLFLOW_EXPERIMENT_NAME) of
    MLFLOW_TRACKING_URI; the same `-P experiment=...` command then reuses them."""
    from xlinfluence.study.importer import import_bundle

    click.echo(_or_one_line(lambda: import_bundle(directory, data_path)).summary())


@study.command("verify")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--data-path", default="", help="Where the study's data is on this machine.")
@click.option("--retrainings", default=2, show_default=True, help="Retrainings to re-run.")
@click.option(
    "--steps",
    default="train,influence,analyze",
    show_default=True,
    help="Which steps' runs to re-run: analyze takes seconds, influence the longest.",
)
@click.option(
    "--record/--no-record",
    "record",
    default=False,
    help="List the bundle's code as equivalent (numbers_equivalent.json) if it holds.",
)
def study_verify(
    directory: Path, data_path: str, retrainings: int, steps: str, record: bool
) -> None:
    """Re-run the bundle's base runs and some retrainings with this checkout; compare bit
    for bit (what carries studies across a refactor)."""
    from xlinfluence.study import verify

    chosen = checks.items(steps)
    verdict = _or_one_line(lambda: verify.verify(directory, data_path, retrainings, chosen))
    click.echo(verdict.summary())
    if record:
        added = _or_one_line(lambda: verify.record(directory, verdict))
        click.echo(f"listed as equivalent for: {', '.join(sorted(set(added))) or 'nothing new'}")
    elif not verdict.holds:
        raise SystemExit(1)


@cli.command("explain")
@click.option(
    "--run",
    "run_id",
    required=True,
    help="An influence or analyze run (or a main run: its influence child).",
)
@click.option("--test-id", default=None, help="The test example to explain.")
@click.option(
    "--language",
    default=None,
    help="Instead: this test language's strongest cases (largest summed top proponent score).",
)
@click.option(
    "--checkpoint",
    default="total",
    show_default=True,
    help="Which scores: a checkpoint name (epoch-2) or total, the lr-weighted sum.",
)
@click.option("--top", default="10", show_default=True, help="Proponents and opponents shown.")
@click.option("--cases", default=None, help="With --language: how many test examples [--top].")
@click.option(
    "--format",
    "output_format",
    default="table",
    show_default=True,
    help="table (terminal), json, or csv (one row per proponent/opponent).",
)
def explain_command(
    run_id: str,
    test_id: str | None,
    language: str | None,
    checkpoint: str,
    top: str,
    cases: str | None,
    output_format: str,
) -> None:
    """A test example's top proponents and opponents: text, language, label, score, and
    which own-language proponent each cross-lingual one translates (docs/guide.md)."""
    from xlinfluence import explain

    # options are read as text and checked here, so a bad value ends in one line
    _or_one_line(lambda: explain.check_format(output_format))
    influence, explanations = _or_one_line(
        lambda: explain.explain(
            run_id,
            test_id=test_id,
            language=language,
            checkpoint=checkpoint,
            top=top,
            cases=cases,
        )  # fmt: skip
    )
    if output_format == "json":
        click.echo(explain.to_json(explanations, one=test_id is not None))
    elif output_format == "csv":
        click.echo(explain.to_csv(explanations), nl=False)
    else:
        from rich.console import Console

        explain.render(influence, explanations, checkpoint, Console(highlight=False))


def _or_one_line(action: Callable[[], object]):
    try:
        return action()
    except XlinfluenceError as err:
        raise click.ClickException(" ".join(str(err).split())) from err


if __name__ == "__main__":
    cli()
