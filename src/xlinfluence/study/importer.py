"""`xlinfluence study import`: a bundle's runs into the active experiment of any store.

The bundle is verified whole before the first run is made. The texts it left out are read
again from the data source the base train run names (or `data_path`), and refused where
one's digest differs. Each run is made again with its parameters, tags, metric histories,
times and carried files, its lineage (upstream run IDs in params, tags and manifests)
pointed at the new runs, so `main -P experiment=...` against that store reuses every run
the bundle holds and runs only the missing ones. Importing again skips what is there.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from xlinfluence import artifacts, provenance, tracking
from xlinfluence.config import TrainConfig
from xlinfluence.data import schema, splits_of
from xlinfluence.errors import XlinfluenceError
from xlinfluence.study import bundle
from xlinfluence.study.export import IMPORTED_TAG, remap

PARENT = tracking.PARENT_TAG


@dataclass
class Imported:
    experiment_id: str
    runs: dict[str, str] = field(default_factory=dict)  # original run ID -> run here
    added: int = 0

    def summary(self) -> str:
        return (
            f"{self.added} run(s) imported into experiment {self.experiment_id} "
            f"({len(self.runs) - self.added} already there)"
        )


def import_bundle(root: Path, data_path: str = "", found: bundle.Bundle | None = None) -> Imported:
    """Import the bundle at `root`; data_path: where the study's data is on this machine
    (default: the path its base train run was given); found: the bundle already read and
    verified (its checksums are not read twice)."""
    found = found or bundle.read(Path(root))
    (base,) = found.of_role("train") or [None]
    if base is None:
        raise bundle.BundleError(f"bundle {root} holds no base train run; export it again.")
    train, test = _texts(base.record, found, data_path)
    done = Imported(tracking.active_experiment_id())
    done.runs = dict(tracking.runs_tagged(done.experiment_id, IMPORTED_TAG))
    for role in bundle.ROLES:
        for run in found.of_role(role):
            if run.run_id in done.runs:
                continue
            done.runs[run.run_id] = _create(
                run, done.experiment_id, done.runs, train, test, data_path
            )
            done.added += 1
    for run in found.runs:  # children were made before the main run that holds them
        parent = run.record["tags"].get(PARENT)
        if parent in done.runs:
            tracking.set_run_tag(done.runs[run.run_id], PARENT, done.runs[parent])
    return done


def _texts(record: dict, found: bundle.Bundle, data_path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The base manifests with their texts, re-read from the data and checked."""
    params = tracking.params_as_given(record["params"])
    if data_path:
        params["data_path"] = data_path
    try:
        splits = splits_of(TrainConfig.from_params(params))
    except XlinfluenceError as err:
        raise bundle.BundleError(
            f"the study's data could not be read again ({err}); give --data-path where its "
            "data is on this machine."
        ) from err
    recorded = record["tags"].get(provenance.DATA_TAG)
    if recorded and recorded != provenance.data_digest(splits.train, splits.test):
        raise bundle.BundleError(
            "the data read again is not the study's selection (its digest differs from the "
            f"base run's {recorded}); point --data-path at the study's data, or import with "
            "the xlinfluence version that made it."
        )
    train = bundle.restore_texts(found.train, splits.train, "training")
    test = bundle.restore_texts(found.test, splits.test, "test")
    for mine, selected, what in ((train, splits.train, "training"), (test, splits.test, "test")):
        if mine[schema.ID].tolist() != selected[schema.ID].tolist():
            raise bundle.BundleError(
                f"this version selects the {what} rows in another order than the study did; "
                "import with the xlinfluence version that made it."
            )
    return splits.train, splits.test


def _create(run: bundle.Run, experiment_id: str, mapping: dict[str, str], train, test,
            data_path: str) -> str:  # fmt: skip
    record = remap(run.record, mapping)
    tags = {k: v for k, v in record["tags"].items() if k != PARENT}
    params = dict(record["params"])
    if data_path and "data_path" in params:
        params["data_path"] = data_path
    staged = Path(tempfile.mkdtemp(prefix="xlinfluence-import-"))
    try:
        if run.artifacts.is_dir():
            shutil.copytree(run.artifacts, staged, dirs_exist_ok=True)
        for path in staged.rglob("*.json"):  # manifests name upstream runs
            path.write_text(remap(path.read_text(), mapping))
        if run.role in ("train", "retraining"):
            kept = train
            if run.role == "retraining":
                kept = train[train[schema.ID].isin(set(run.record["kept_ids"]))]
            artifacts.save_manifest(kept.reset_index(drop=True), staged / artifacts.TRAIN_MANIFEST)
            artifacts.save_manifest(test, staged / artifacts.TEST_MANIFEST)
        return tracking.create_finished_run(
            experiment_id,
            record | {"params": params, "tags": tags | {IMPORTED_TAG: run.run_id}},
            staged,
        )
    finally:
        shutil.rmtree(staged, ignore_errors=True)
