"""`xlinfluence study export`: a retraining study's finished runs into a bundle.

The runs are found from the experiment run's parameters, the way the experiment itself
finds what it can reuse, so a study that was killed at any point exports what it
finished. Runs are named in the bundle by their original run ID: a study imported
elsewhere, continued and exported again into the same folder adds only its new runs.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

import xlinfluence
from xlinfluence import artifacts, tracking
from xlinfluence.config.main import MainConfig
from xlinfluence.data import schema
from xlinfluence.experiments import EXPERIMENTS
from xlinfluence.experiments.attributions import reference_method
from xlinfluence.experiments.base import Study, child_runs
from xlinfluence.steps.upstream import train_manifests
from xlinfluence.study import bundle

IMPORTED_TAG = "xlinfluence.imported_from"  # on an imported run: its original run ID
EXPERIMENT_RECORDS = "experiments"  # experiments/<original run id>.json: an experiment's params
_RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")
#: role -> artifact folders or files of a run that a bundle carries (manifests apart).
CARRIED = {
    "train": ("data", "checkpoints/index.json", artifacts.EVALUATION),
    "retraining": ("data", "checkpoints/index.json", artifacts.EVALUATION),
    "influence": (artifacts.SCORES, artifacts.SELF_INFLUENCE, artifacts.INFLUENCE_MANIFEST),
    "analyze": (artifacts.ANALYSIS,),
    "main": (),
}
_LEFT_OUT = (artifacts.TRAIN_MANIFEST, artifacts.TEST_MANIFEST)  # texts: digests instead
_ANALYSIS_KINDS = (".parquet",)  # tables; CSV copies, figures and the report are remade


@dataclass
class Exported:
    root: Path
    added: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # settings not finished yet

    def summary(self) -> str:
        size = bundle.size_bytes(self.root) / 2**20
        text = (
            f"bundle {self.root}: {len(self.added)} run(s) added, {len(self.present)} already "
            f"there, {size:.1f} MiB"
        )
        if self.missing:
            text += (
                f"; {len(self.missing)} setting(s) not finished yet (e.g. {self.missing[0]}): "
                "the experiment runs them when continued"
            )
        return text


def remap(value, mapping: dict[str, str]):
    """`value` (str, dict or list) with every run ID in `mapping` replaced."""
    if isinstance(value, str):
        return _RUN_ID.sub(lambda m: mapping.get(m.group(0), m.group(0)), value)
    if isinstance(value, dict):
        return {k: remap(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [remap(v, mapping) for v in value]
    return value


def study_of(config: MainConfig, what: str) -> Study:
    """What a bundle of `config`'s experiment carries, or a BundleError naming those that
    have retrainings to carry."""
    experiment = EXPERIMENTS.get(config.experiment)
    if experiment is None or experiment.study is None:
        retraining = "|".join(n for n, e in EXPERIMENTS.items() if e.study)
        raise bundle.BundleError(
            f"{what} is experiment={config.experiment or 'none'!r}, which has no retrainings "
            f"to carry; export a run of experiment={retraining}."
        )
    return experiment.study


def export(experiment_run_id: str, to: Path) -> Exported:
    """Add every finished run of the study `experiment_run_id` names to the bundle `to`."""
    experiment_run = tracking.fetch_run(experiment_run_id, step="main", finished=False)
    config = MainConfig.from_params(tracking.run_params(experiment_run))
    study = study_of(config, f"run {experiment_run_id}")
    experiment_id = experiment_run.info.experiment_id
    tagged = _settings_tagged(experiment_run.data.tags)
    done = Exported(Path(to))

    base = study.base(config)
    mains = {name: tagged.get(name) or tracking.find_reusable(s, experiment_id=experiment_id)
             for name, s in base.items()}  # fmt: skip
    done.missing += [name for name, run in mains.items() if not run]
    mains = {name: run for name, run in mains.items() if run}
    if not mains:
        raise bundle.BundleError(
            f"the study of run {experiment_run_id} has no finished base pipeline yet; continue "
            "the experiment until one has finished, then export."
        )
    children = {name: child_runs(run) for name, run in mains.items()}
    trains = {c["train"] for c in children.values()}
    if len(trains) != 1:
        raise bundle.BundleError(
            f"the base pipelines of run {experiment_run_id} fine-tuned {len(trains)} different "
            "train runs; a study's methods must score one fine-tuning."
        )
    (base_train,) = trains
    train, test = train_manifests(base_train)
    reference = children.get(reference_method(base), next(iter(children.values())))
    retraining_configs = study.retrainings(config, train, reference["influence"])
    retrainings = {
        name: tagged.get(name) or tracking.find_reusable(s, experiment_id=experiment_id)
        for name, s in retraining_configs.items()
    }
    done.missing += [name for name, run in retrainings.items() if not run]

    originals = _originals([experiment_run_id, base_train, *mains.values(),
                            *(r for c in children.values() for r in c.values()),
                            *(r for r in retrainings.values() if r)])  # fmt: skip
    _write_header(done.root, originals[base_train], train, test)
    _write_experiment(done.root, experiment_run_id, originals)
    runs: list[tuple[str, str, str]] = [("train", "base", base_train)]
    for name, c in children.items():
        runs += [("influence", name, c["influence"]), ("analyze", name, c["analyze"])]
    runs += [("main", name, run) for name, run in mains.items()]
    runs += [("retraining", name, run) for name, run in retrainings.items() if run]
    for role, name, run_id in dict.fromkeys(runs):
        original = originals[run_id]
        if bundle.has_run(done.root, original):
            done.present.append(original)
            continue
        _export_run(done.root, role, name, run_id, originals, train, test)
        done.added.append(original)
    return done


def _settings_tagged(tags: dict[str, str]) -> dict[str, str]:
    """setting -> run, from an experiment run's tags, finished or not (attributions.
    settings_of reads a finished one's)."""
    prefix = f"{tracking.SETTING_TAG}."
    return {k[len(prefix) :]: v for k, v in tags.items() if k.startswith(prefix)}


def _originals(run_ids: list[str]) -> dict[str, str]:
    """run ID here -> its original ID (itself, or the run it was imported from)."""
    return {
        run_id: tracking.run_tags(run_id).get(IMPORTED_TAG, run_id)
        for run_id in dict.fromkeys(run_ids)
    }


def _write_header(root: Path, base_train: str, train: pd.DataFrame, test: pd.DataFrame) -> None:
    header_file = root / bundle.BUNDLE_FILE
    if header_file.exists():
        header = bundle.read_sealed(header_file, root)
        if header.get("base_train") != base_train:
            raise bundle.BundleError(
                f"{root} holds the bundle of another study (base train run "
                f"{header.get('base_train')}, this one {base_train}); export to a new folder."
            )
        return
    root.mkdir(parents=True, exist_ok=True)
    for frame, name in ((train, bundle.TRAIN_MANIFEST), (test, bundle.TEST_MANIFEST)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        bundle.digest_manifest(frame).to_parquet(root / name, index=False)
    bundle.write_sealed(
        {
            "format": bundle.FORMAT,
            "version": bundle.VERSION,
            "xlinfluence": xlinfluence.__version__,
            "base_train": base_train,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": {
                name: bundle.sha256_file(root / name)
                for name in (bundle.TRAIN_MANIFEST, bundle.TEST_MANIFEST)
            },
        },
        header_file,
    )


def _write_experiment(root: Path, run_id: str, originals: dict[str, str]) -> None:
    """The experiment run's parameters, once per experiment run (what a bundle's tables
    are recomputed with)."""
    path = root / EXPERIMENT_RECORDS / f"{originals[run_id]}.json"
    if not path.exists():
        record = tracking.run_record(run_id)
        bundle.write_sealed(
            {"run_id": originals[run_id], "params": remap(record["params"], _back(originals)),
             "start_time": record["start_time"]},
            path,
        )  # fmt: skip


def _back(originals: dict[str, str]) -> dict[str, str]:
    return {here: original for here, original in originals.items() if here != original}


def _export_run(root, role, name, run_id, originals, train, test) -> None:
    record = tracking.run_record(run_id)
    back = _back(originals)
    record = record | {
        "run_id": originals[run_id],
        "role": role,
        "name": name,
        "params": remap(record["params"], back),
        "tags": remap({k: v for k, v in record["tags"].items() if k != IMPORTED_TAG}, back),
    }
    staged = Path(tempfile.mkdtemp(prefix="xlinfluence-export-"))
    try:
        for wanted in CARRIED[role]:
            for path in tracking.artifact_files(run_id, wanted) or _single(run_id, wanted):
                if path in _LEFT_OUT or (role == "analyze" and not path.endswith(_ANALYSIS_KINDS)):
                    continue
                local = tracking.download(run_id, path)
                (staged / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(local, staged / path)
                if path.endswith(".json"):  # manifests name upstream runs
                    (staged / path).write_text(remap((staged / path).read_text(), back))
        if role == "retraining":
            record["kept_ids"] = _kept_ids(run_id, train, test)
        bundle.write_run(root, record, staged)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _single(run_id: str, path: str) -> list[str]:
    """[path] if the run has that artifact file (artifact_files lists folders' contents)."""
    parent = str(Path(path).parent)
    return [path] if path in tracking.artifact_names(run_id, parent) else []


def _kept_ids(run_id: str, train: pd.DataFrame, test: pd.DataFrame) -> list[str]:
    """The ids a retraining trained on, after checking it saw the base's texts."""
    own_train, own_test = train_manifests(run_id)
    known = bundle.digest_manifest(train).set_index(schema.ID)[bundle.TEXT_DIGEST]
    mine = bundle.digest_manifest(own_train).set_index(schema.ID)[bundle.TEXT_DIGEST]
    if (
        not mine.index.isin(known.index).all()
        or (known.loc[mine.index] != mine).any()
        or own_test[schema.ID].tolist() != test[schema.ID].tolist()
    ):
        raise bundle.BundleError(
            f"retraining {run_id} was trained or tested on other rows than the study's base "
            "run; it belongs to another study. Export from an experiment of its own."
        )
    return own_train[schema.ID].tolist()
