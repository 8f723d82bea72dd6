"""What a killed fine-tuning run needs to continue exactly: optimizer, schedule, RNG.

Saved after every epoch but the last (the weights are the epoch's checkpoint) as
safetensors and JSON, never pickle:

    optimizer.safetensors   AdamW's per-parameter tensors (step, exp_avg, exp_avg_sq)
    rng.safetensors         torch's CPU (and CUDA) generator states
    state.json              epoch, step, optimizer param groups, scheduler state, and the
                            SHA-256 of both tensor files; written last, so a state whose
                            upload was cut off is recognised and skipped

Restoring these, the epoch's checkpoint and the data order (seeded per epoch) makes the
remaining epochs' checkpoints equal an uninterrupted run's byte for byte (one process).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from xlinfluence.errors import ArtifactError

OPTIMIZER = "optimizer.safetensors"
RNG = "rng.safetensors"
STATE = "state.json"


@dataclass(frozen=True)
class TrainingState:
    epoch: int  # epochs completed
    step: int  # optimizer steps taken


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save(directory: Path, state: TrainingState, optimizer, scheduler) -> None:
    """Write the three files; state.json last."""
    directory.mkdir(parents=True, exist_ok=True)
    saved = optimizer.state_dict()
    tensors = {
        f"{index}.{key}": value.detach().cpu().contiguous()
        for index, values in saved["state"].items()
        for key, value in values.items()
        if isinstance(value, torch.Tensor)
    }
    save_file(tensors, str(directory / OPTIMIZER))
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng |= {f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    save_file(rng, str(directory / RNG))
    payload = {
        "epoch": state.epoch,
        "step": state.step,
        "param_groups": saved["param_groups"],
        "scheduler": scheduler.state_dict(),
        "sha256": {name: _digest(directory / name) for name in (OPTIMIZER, RNG)},
    }
    (directory / STATE).write_text(json.dumps(payload, default=list) + "\n")


def is_complete(directory: Path) -> bool:
    """state.json is there and both tensor files are the ones it names."""
    try:
        payload = json.loads((directory / STATE).read_text())
        return all(_digest(directory / n) == h for n, h in payload["sha256"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load(directory: Path, optimizer, scheduler) -> TrainingState:
    """Restore optimizer, scheduler and RNG from `directory`; the epoch and step reached."""
    if not is_complete(directory):
        raise ArtifactError(
            f"training state {directory} is incomplete or corrupt; resume from an earlier "
            "epoch's state or train again."
        )
    payload = json.loads((directory / STATE).read_text())
    try:
        tensors = load_file(str(directory / OPTIMIZER))
        rng = load_file(str(directory / RNG))
    except (SafetensorError, OSError) as err:
        raise ArtifactError(f"training state {directory} is unreadable ({err}).") from err
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        per_param.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": payload["param_groups"]})
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(rng["torch"])
    cuda = [rng[f"cuda.{i}"] for i in range(sum(k.startswith("cuda.") for k in rng))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    return TrainingState(int(payload["epoch"]), int(payload["step"]))
