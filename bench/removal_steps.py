"""What a fixed step count costs a retraining: one SIB-200 retraining that removes a part
of the training set, trained on the full run's batches with the removed rows skipped
(removal_steps=fixed, the default) against the kept rows as a set of their own
(proportional), side by side on one machine, each a fresh process as a study launches it.

    python bench/removal_steps.py --rounds 3 --remove fraction:0.25:en+de:3

Both arms train e5-small on the same kept rows (5 languages x 100 SIB-200 sentences,
disjoint, before the removal; 3 epochs, batch 16, one torch thread, bf16 as the language
datamodel study trains) and end with their last epoch's test outputs; arms alternate
within each round in a rotated order. Reported: seconds per arm per round, the training
loops' share, the optimizer steps each took, and fixed / proportional as a geometric mean
with its t interval over rounds (rounds are the unit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient
from retraining import ROOT, breakdown, cpu_flags, timed
from tracin_report import geometric_interval
from tracin_setup import SIB200

from xlinfluence import artifacts, tracking


def command(args, mode: str) -> list[str]:
    return [
        "python", "-m", "xlinfluence.cli", "train", "--dataset", "sib200",
        "--data-path", str(args.data_path), "--languages", args.languages,
        "--train-per-language", str(args.per_language), "--test-per-language", "40",
        "--train-content", "disjoint", "--model", "e5-small", "--epochs", str(args.epochs),
        "--save-checkpoints", "false", "--threads", str(args.threads), "--seed", "42",
        "--train-precision", args.precision, "--remove", args.remove, "--removal-steps", mode,
    ]  # fmt: skip


def steps(run_id: str) -> int:
    index = tracking.download(run_id, artifacts.CHECKPOINT_INDEX)
    return int(artifacts.load_checkpoint_index(index)[-1]["step"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--remove", default="fraction:0.25:en+de:3")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--data-path", default=SIB200)
    p.add_argument("--languages", default="en,de,fr,ru,zh")
    p.add_argument("--per-language", type=int, default=100)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/removal_steps.json")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xlinfluence-bench-removal-"))
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'bench.db'}",
                        "XLINFLUENCE_CACHE": str(work / "cache"), "TQDM_DISABLE": "1"}  # fmt: skip
    os.environ.update({"MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]})
    modes = ["fixed", "proportional"]
    rounds: list[dict] = []
    for r in range(args.rounds):
        found = {}
        for mode in modes[r % 2 :] + modes[: r % 2]:
            seconds, run_id = timed(command(args, mode), env)
            kept = MlflowClient().get_run(run_id).data.metrics["n_train"]
            found[mode] = {"seconds": seconds, "steps": steps(run_id), "n_train": kept,
                           "parts": breakdown(run_id, seconds)}  # fmt: skip
            print(f"round {r + 1} {mode}: {seconds:.1f} s, {found[mode]['steps']} steps")
        rounds.append(found)
    ratios = [f["fixed"]["seconds"] / f["proportional"]["seconds"] for f in rounds]
    report = {"cpu": platform.processor() or platform.machine(), "flags": cpu_flags(),
              "args": {k: str(v) for k, v in vars(args).items()}, "rounds": rounds}  # fmt: skip
    if len(ratios) > 1:
        mean, low, high = geometric_interval(ratios, 0.95)
        report["fixed / proportional"] = {"mean": mean, "low": low, "high": high,
                                          "rounds": ratios}  # fmt: skip
        print(f"fixed / proportional: {mean:.3f} [{low:.3f}, {high:.3f}] over {len(ratios)} rounds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
