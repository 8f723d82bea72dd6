"""The experiments `main -P experiment=NAME` runs: one module each, registered below.

A new experiment is one module that declares `EXPERIMENT = Experiment(...)` (base.py: its
name, a one-line summary, what experiment_values means for it, a check that refuses a
config it cannot run, and its driver; `compare_settings` builds the driver of one that
compares ordinary pipelines) plus one entry here. The parameters' help, their checks, the
main step and study bundles all read this registry.
"""

from __future__ import annotations

from xlinfluence.experiments import (
    counterfactual,
    imbalance,
    language_datamodel,
    lds,
    leave_language_out,
    methods,
    seeds,
    train_content,
    zero_shot,
)
from xlinfluence.experiments.base import Experiment

#: name -> experiment, in the order the help lists them.
EXPERIMENTS: dict[str, Experiment] = {
    module.EXPERIMENT.name: module.EXPERIMENT
    for module in (
        zero_shot,
        imbalance,
        seeds,
        train_content,
        counterfactual,
        methods,
        lds,
        leave_language_out,
        language_datamodel,
    )
}
