#!/usr/bin/env python
"""The README main command's influence step against its train step, over several runs.

For each `main` run, influence seconds per checkpoint over the seconds of the epoch that
made the checkpoint, each run's geometric mean over its epochs, and a t interval over runs
(the runs are the unit: epochs of one run share its machine state).

    python bench/main_ratio.py --run sqlite:////abs/mlflow.db MAIN_RUN_ID [--run URI ID ...]
"""

from __future__ import annotations

import argparse

import numpy as np
from mlflow.tracking import MlflowClient
from scipy import stats
from tracin_report import geometric_interval


def child(client: MlflowClient, main_run_id: str, entry_point: str):
    experiment = client.get_run(main_run_id).info.experiment_id
    found = client.search_runs(
        [experiment],
        filter_string=f"tags.mlflow.parentRunId = '{main_run_id}' "
        f"and tags.mlflow.project.entryPoint = '{entry_point}'",
    )
    if len(found) != 1:
        raise SystemExit(f"main run {main_run_id} has {len(found)} {entry_point} children, not 1")
    return found[0].info.run_id


def history(client: MlflowClient, run_id: str, key: str) -> np.ndarray:
    return np.array([m.value for m in sorted(client.get_metric_history(run_id, key),
                                             key=lambda m: m.step)])  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", nargs=2, action="append", required=True, metavar=("URI", "RUN_ID"))
    p.add_argument("--confidence", type=float, default=0.95)
    args = p.parse_args()
    means = []
    for uri, run_id in args.run:
        client = MlflowClient(tracking_uri=uri)
        epochs = history(client, child(client, run_id, "train"), "epoch_seconds")
        checkpoints = history(client, child(client, run_id, "influence"), "seconds_per_checkpoint")
        if len(epochs) != len(checkpoints):
            raise SystemExit(f"run {run_id}: {len(epochs)} epochs but {len(checkpoints)} "
                             "checkpoints scored; score every epoch's checkpoint")  # fmt: skip
        ratios = checkpoints / epochs
        means.append(float(stats.gmean(ratios)))
        print(f"{run_id}  epochs {np.round(epochs, 1).tolist()} s, influence "
              f"{np.round(checkpoints, 1).tolist()} s, ratios {np.round(ratios, 3).tolist()}, "
              f"geometric mean {means[-1]:.3f}")  # fmt: skip
    if len(means) < 2:
        raise SystemExit("give at least two --run for an interval")
    mean, low, high = geometric_interval(means, args.confidence)
    print(
        f"{len(means)} runs: influence / epoch = {mean:.3f}, "
        f"{100 * args.confidence:.0f}% interval [{low:.3f}, {high:.3f}]"
    )


if __name__ == "__main__":
    main()
