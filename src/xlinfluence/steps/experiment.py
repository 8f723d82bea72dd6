"""Experiment drivers: one nested `main` run per setting, then a comparison of settings.

zero-shot   a baseline where every language is seen, and one setting per held-out language
imbalance   the first language keeps train_per_language examples, every other one gets
            that divided by each ratio, so the first is over-represented `ratio` times
seeds       the same setting once per seed
methods     the same fine-tuning run under other attributions (cosine TracIn, last layer,
            embeddings only or excluded, representation similarity) and per checkpoint
counterfactual  retraining without TracIn's picks vs random picks (steps/counterfactual.py)
lds         every method's linear datamodeling score over random subsets (steps/lds.py)
leave-language-out  retraining without each language vs every method (steps/leave_language_out.py)
Each setting is an ordinary `main` run (reused when finished with equal parameters), so
every setting can be opened and compared in the MLflow UI; the experiment's own run logs
experiment/comparison.{parquet,csv} and a figure.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from xlinfluence import artifacts, tracking
from xlinfluence.analysis import agreement, compare
from xlinfluence.analysis.bootstrap import pooled_share_intervals
from xlinfluence.config import ATTRIBUTION_METHODS as METHODS
from xlinfluence.config import EXPERIMENTS, ON_REQUEST, MainConfig
from xlinfluence.data.params import parse_languages
from xlinfluence.errors import ConfigError

DEFAULT_RATIOS = "1,2,4"
DEFAULT_SEEDS = "1,2,3"
#: Experiments that retrain on part of the data: experiment -> its driver module.
RETRAINING_DRIVERS = {
    "counterfactual": "xlinfluence.steps.counterfactual",
    "lds": "xlinfluence.steps.lds",
    "leave-language-out": "xlinfluence.steps.leave_language_out",
    "language-datamodel": "xlinfluence.steps.language_datamodel",
}


def settings(config: MainConfig) -> dict[str, MainConfig]:
    """The experiment's settings by name, each a plain (non-experiment) MainConfig."""
    if config.experiment not in EXPERIMENTS:
        raise ConfigError(f"experiment={config.experiment!r}; choose one of {EXPERIMENTS}.")
    base = config.without_experiment()
    if config.experiment == "methods":
        return method_settings(config, chosen_methods(config))
    languages = parse_languages(config.languages)
    values = [v.strip() for v in config.experiment_values.split(",") if v.strip()]
    if config.experiment == "zero-shot":
        heldout = values or languages
        unknown = [lang for lang in heldout if lang not in languages]
        if unknown:
            raise ConfigError(f"experiment_values: {unknown} are not among languages={languages}.")
        return {"all-seen": base} | {
            f"heldout-{lang}": dataclasses.replace(base, heldout_language=lang) for lang in heldout
        }
    if config.experiment == "imbalance":
        try:
            count = int(config.train_per_language)
            ratios = [float(v) for v in (values or DEFAULT_RATIOS.split(","))]
        except ValueError as err:
            raise ConfigError(
                "imbalance needs one number in train_per_language and numeric ratios in "
                f"experiment_values ({err})."
            ) from err
        first, others = languages[0], languages[1:]
        return {
            f"ratio-{ratio:g}": dataclasses.replace(
                base,
                train_per_language=",".join(
                    [f"{first}={count}"]
                    + [f"{lang}={max(1, round(count / ratio))}" for lang in others]
                ),
            )
            for ratio in ratios
        }
    seeds = [int(v) for v in (values or DEFAULT_SEEDS.split(","))]
    return {f"seed-{seed}": dataclasses.replace(base, seed=seed) for seed in seeds}


def chosen_methods(config: MainConfig) -> list[str]:
    """experiment_values as attribution method names (methods, lds, leave-language-out;
    the config has checked them), the reference first. Default: every method but those
    scored on request only (ON_REQUEST: metagradient, about 3 trainings per test example)."""
    values = [v.strip() for v in config.experiment_values.split(",") if v.strip()]
    chosen = values or [m for m in METHODS if m not in ON_REQUEST]
    return [agreement.REFERENCE, *[m for m in chosen if m != agreement.REFERENCE]]


def method_settings(config: MainConfig, names: list[str]) -> dict[str, MainConfig]:
    """The base pipeline under each named attribution method (one shared train run)."""
    base = config.without_experiment()
    return {name: dataclasses.replace(base, **METHODS[name]) for name in names}


def run(config: MainConfig, project: Path, parent: tracking.StepRun) -> dict[str, str]:
    """Run or reuse every setting under the open experiment run; log the comparison."""
    if config.experiment in RETRAINING_DRIVERS:
        import importlib

        module = importlib.import_module(RETRAINING_DRIVERS[config.experiment])
        return module.run(config, project, parent)
    by_name = settings(config)
    main_runs = {name: tracking.run_or_reuse(setting, project) for name, setting in by_name.items()}
    parent.set_tags({f"xlinfluence.setting.{name}": run_id for name, run_id in main_runs.items()})
    children = {name: child_runs(run_id) for name, run_id in main_runs.items()}
    tables = _comparison_tables(config, by_name, children)
    parent.log_frames(tables, "experiment")
    figure = (
        agreement.figure(tables["comparison"], tables["own_shares"])
        if config.experiment == "methods"
        else compare.comparison_figure(tables["comparison"], config.experiment)
    )
    parent.log_figure(figure, "experiment/comparison.png")
    return main_runs


def _comparison_tables(config, by_name, children) -> dict[str, pd.DataFrame]:
    """`comparison` (the experiment's question, see compare.py) and, for seeds, every
    language x language share pooled over seeds with hierarchical intervals."""
    analyze_runs = {name: runs["analyze"] for name, runs in children.items()}
    if config.experiment == "methods":
        return _methods_tables(config, children)
    if config.experiment == "zero-shot":
        shares = {n: _table(r, "shares") for n, r in analyze_runs.items()}
        accuracy = {n: final_accuracy(runs["train"]) for n, runs in children.items()}
        heldout = {n: s.heldout_language for n, s in by_name.items()}
        return {"comparison": compare.zero_shot(shares, heldout, accuracy)}
    if config.experiment == "imbalance":
        shares = {n: _table(r, "shares") for n, r in analyze_runs.items()}
        ratios = {n: float(n.removeprefix("ratio-")) for n in by_name}
        mass = {n: _table(r, "influence_mass") for n, r in analyze_runs.items()}
        first = parse_languages(config.languages)[0]
        return {"comparison": compare.imbalance(shares, ratios, first, mass)}
    per_example = [_table(r, "example_shares") for r in analyze_runs.values()]
    return {
        "comparison": compare.seeds(dict(zip(analyze_runs, per_example, strict=True))),
        "pooled_shares": pooled_share_intervals(per_example),
    }


def _methods_tables(config: MainConfig, children) -> dict[str, pd.DataFrame]:
    """Agreement of every method (and every single checkpoint of dot TracIn) with dot TracIn
    over all parameters summed over checkpoints."""
    methods = {}
    for name, runs in children.items():
        tables = {t: _table(runs["analyze"], t) for t in ("shares", "self_shares")}
        tables["topk"] = pd.read_parquet(tracking.download(runs["influence"], artifacts.TOPK))
        methods[name] = tables | {"checkpoint": artifacts.TOTAL}
    reference = methods[agreement.REFERENCE]
    checkpoints = [c for c in pd.unique(reference["shares"]["checkpoint"]) if c != artifacts.TOTAL]
    for checkpoint in checkpoints:
        methods[f"{agreement.REFERENCE}@{checkpoint}"] = reference | {"checkpoint": checkpoint}
    table, own = agreement.compare(methods, config.top_k)
    return {"comparison": table, "own_shares": own, "cost": method_costs(children)}


def method_costs(children: dict[str, dict[str, str]]) -> pd.DataFrame:
    """Seconds per method (its influence run, wall clock) next to one training epoch of the
    shared fine-tuning (its train run's mean `epoch_seconds`; NaN for runs logged before it
    was)."""
    epoch_seconds = {}  # per train run (the methods share one): read once
    for train in {runs["train"] for runs in children.values()}:
        epochs = tracking.epoch_metrics(train, up_to=10**6).values()
        seconds = [m["epoch_seconds"] for m in epochs if "epoch_seconds" in m]
        epoch_seconds[train] = sum(seconds) / len(seconds) if seconds else float("nan")
    rows = []
    for name, runs in children.items():
        info = tracking.fetch_run(runs["influence"], step="influence").info
        seconds = (info.end_time - info.start_time) / 1000
        epoch = epoch_seconds[runs["train"]]
        rows.append({"method": name, "influence_seconds": seconds, "epoch_seconds": epoch,
                     "epochs_of_cost": seconds / epoch})  # fmt: skip
    return pd.DataFrame(rows)


def child_runs(main_run_id: str) -> dict[str, str]:
    """Step -> run ID of a setting's train, influence and analyze runs (its main's tags)."""
    tags = tracking.fetch_run(main_run_id, step="main").data.tags
    return {s: tags[f"xlinfluence.{s}_run_id"] for s in ("train", "influence", "analyze")}


def final_accuracy(train_run_id: str) -> dict[str, float]:
    """Final test accuracy per language of a train run (its accuracy.<lang> metrics)."""
    metrics = tracking.fetch_run(train_run_id, step="train").data.metrics
    return {k.removeprefix("accuracy."): v for k, v in metrics.items() if k.startswith("accuracy.")}


def _table(analyze_run_id: str, name: str) -> pd.DataFrame:
    return pd.read_parquet(
        tracking.download(analyze_run_id, f"{artifacts.ANALYSIS}/{name}.parquet")
    )
