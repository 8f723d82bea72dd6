"""experiment=methods: one fine-tuning run under several attributions (cosine TracIn, the
last layer, embeddings only or excluded, representation similarity, EK-FAC, ...) and dot
TracIn's single checkpoints; how far each agrees with dot TracIn over all parameters
(analysis/agreement.py), and what each cost beside a training epoch."""

from __future__ import annotations

import pandas as pd

from xlinfluence import artifacts, tracking
from xlinfluence.analysis import agreement
from xlinfluence.experiments import attributions
from xlinfluence.experiments.base import Experiment, analysis_table, compare_settings
from xlinfluence.steps.upstream import InfluenceRun


def tables(config, by_name, children) -> dict[str, pd.DataFrame]:
    """Agreement of every method (and every single checkpoint of dot TracIn) with dot TracIn
    over all parameters summed over checkpoints."""
    methods = {}
    for name, runs in children.items():
        shares = {t: analysis_table(runs["analyze"], t) for t in ("shares", "self_shares")}
        shares["topk"] = InfluenceRun.fetch(runs["influence"]).topk()
        methods[name] = shares | {"checkpoint": artifacts.TOTAL}
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


EXPERIMENT = Experiment(
    name="methods",
    summary="one fine-tuning under several attributions, and how far they agree",
    values=attributions.VALUES_HELP,
    check=attributions.check_methods,
    run=compare_settings(
        attributions.base_pipelines,
        tables,
        lambda t: agreement.figure(t["comparison"], t["own_shares"]),
    ),
)
