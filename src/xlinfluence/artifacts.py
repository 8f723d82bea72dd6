"""Artifact names and formats: the contract between steps, in one place.

Every artifact is safetensors, JSON or Parquet (never pickle). Each has a path constant
and save/load functions; loads validate and raise ArtifactError naming the file and the fix.

    train run       data/train.parquet, data/test.parquet   manifests, rows in tensor order
                    data/labels.json                        label names by class index
                    checkpoints/<name>/                     safetensors weights, config, tokenizer
                    checkpoints/index.json                  [{name, epoch, step, learning_rate}]
                    evaluation/<checkpoint>.parquet         per test example: predicted, loss,
                                                            correct (manifest order)
    influence run   influence/scores.safetensors            "total" and one tensor per checkpoint,
                                                            each float32 [n_test, n_train]
                    influence/self_influence.safetensors    <grad L(z), grad L(z)> per train
                                                            example: per checkpoint and "total"
                    influence/chunks/<checkpoint>/...       the resumable work units
                    influence/topk.parquet                  top-k proponents/opponents per test
                    influence/manifest.json                 ids in tensor order, checkpoints
    analyze run     analysis/...                            tables (Parquet + CSV) and figures
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from xlinfluence.data import schema
from xlinfluence.errors import ArtifactError

DATA = "data"
TRAIN_MANIFEST = "data/train.parquet"
TEST_MANIFEST = "data/test.parquet"
LABELS = "data/labels.json"
REMOVED = "data/removed.json"  # counterfactual runs: the training ids left out
EVALUATION = "evaluation"
TRAINING = "training"  # per-epoch RNG states (steps/replay.py reads them)
CHECKPOINTS = "checkpoints"
CHECKPOINT_INDEX = "checkpoints/index.json"
INFLUENCE = "influence"
SCORES = "influence/scores.safetensors"
SELF_INFLUENCE = "influence/self_influence.safetensors"
TOPK = "influence/topk.parquet"
INFLUENCE_MANIFEST = "influence/manifest.json"
CHUNKS = "influence/chunks"  # <checkpoint>/<chunk file>: the resumable work units
ANALYSIS = "analysis"

TOTAL = "total"  # name of the learning-rate-weighted sum over checkpoints in SCORES


def _corrupt(path: Path, err: Exception) -> ArtifactError:
    return ArtifactError(
        f"artifact {path} is unreadable or corrupt ({err}); re-run the step that produced it."
    )


def write_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path):
    if not path.is_file():
        raise ArtifactError(f"artifact {path} is missing; re-run the step that produced it.")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _corrupt(path, err) from err


def save_manifest(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def _read_train_parquet(path: Path, missing: str) -> pd.DataFrame:
    """A Parquet file the train step wrote, or an ArtifactError that says so; `missing`
    words its absence ("manifest {path} is missing")."""
    if not path.is_file():
        raise ArtifactError(missing.format(path=path) + "; re-run the train step.")
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several unrelated types for bad files
        raise _corrupt(path, err) from err


def load_manifest(path: Path) -> pd.DataFrame:
    return schema.validate(_read_train_parquet(path, "manifest {path} is missing"), where=str(path))


def predictions(checkpoint: str) -> str:
    return f"{EVALUATION}/{checkpoint}.parquet"


def save_predictions(predictions: pd.DataFrame, test: pd.DataFrame, path: Path) -> None:
    """One row per test example, with its id, language and label beside the prediction."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = test[[schema.ID, schema.LANGUAGE, schema.LABEL]].reset_index(drop=True)
    pd.concat([keys, predictions.reset_index(drop=True)], axis=1).to_parquet(path, index=False)


def load_predictions(path: Path, test: pd.DataFrame) -> pd.DataFrame:
    """A train run's predictions for a checkpoint, checked against its test manifest."""
    frame = _read_train_parquet(path, "predictions {path} are missing")
    if frame.get(schema.ID, pd.Series(dtype=str)).tolist() != test[schema.ID].tolist():
        raise ArtifactError(
            f"predictions {path} do not list the test manifest's examples in order; "
            "re-run the train step."
        )
    return frame


def rng_states(checkpoint: str) -> str:
    """The CPU RNG state before each training step of the epoch ending at `checkpoint`."""
    return f"{TRAINING}/rng_states-{checkpoint}.safetensors"


def save_rng_states(states: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"rng_states": states.contiguous()}, str(path))


def load_rng_states(path: Path) -> torch.Tensor:
    """(steps, n) uint8, as training.fine_tune recorded them."""
    if not path.is_file():
        raise ArtifactError(
            f"RNG states {path} are missing: the train run predates them or was cut short; "
            "retrain it with this version to replay it."
        )
    try:
        return load_file(str(path))["rng_states"]
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise _corrupt(path, err) from err


def save_checkpoint_index(checkpoints: list[dict], path: Path) -> None:
    write_json({"checkpoints": checkpoints}, path)


def load_checkpoint_index(path: Path) -> list[dict]:
    index = read_json(path)
    entries = index.get("checkpoints") if isinstance(index, dict) else None
    required = {"name", "epoch", "step", "learning_rate"}
    if not entries or not all(isinstance(e, dict) and required <= set(e) for e in entries):
        raise ArtifactError(
            f"checkpoint index {path} lacks entries with {sorted(required)}; re-run the train step."
        )
    return entries


def save_scores(scores: dict[str, torch.Tensor], path: Path) -> None:
    """Named float32 tensors (score matrices, or self-influence vectors) as safetensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float().contiguous().cpu() for k, v in scores.items()}, str(path))


def load_scores(path: Path, *, n_test: int, n_train: int) -> dict[str, torch.Tensor]:
    """Score tensors by name, checked against the manifests' sizes."""
    if not path.is_file():
        raise ArtifactError(f"scores {path} are missing; re-run the influence step.")
    try:
        scores = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise _corrupt(path, err) from err
    if TOTAL not in scores:
        raise ArtifactError(f"scores {path} hold no '{TOTAL}' tensor; re-run the influence step.")
    for name, tensor in scores.items():
        if tuple(tensor.shape) != (n_test, n_train):
            raise ArtifactError(
                f"scores[{name!r}] in {path} has shape {tuple(tensor.shape)}, expected "
                f"({n_test}, {n_train}) from the manifests; the artifacts do not belong together."
            )
    return scores


def load_score_matrix(path: Path, name: str, shape: tuple[int, int]) -> torch.Tensor:
    """One named score matrix of a scores file, without reading the others."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            if name not in handle.keys():
                raise ArtifactError(
                    f"scores {path} hold no {name!r} matrix; re-run the influence step."
                )
            matrix = handle.get_tensor(name)
    except (SafetensorError, OSError, ValueError) as err:
        raise _corrupt(path, err) from err
    if tuple(matrix.shape) != shape:
        raise ArtifactError(
            f"scores[{name!r}] in {path} has shape {tuple(matrix.shape)}, expected {shape} "
            "from the manifests; the artifacts do not belong together."
        )
    return matrix.float()
