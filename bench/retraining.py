"""Seconds per cheap SIB-200 retraining: a baseline commit's train step, this checkout's
(fp32 and at a reduced precision), and a plain transformers loop at that precision, side
by side on one machine, each a fresh process as a study launches it.

    python bench/retraining.py --baseline f4afa4c --rounds 3 --precision bf16

Every arm trains e5-small on the same rows (5 languages x 100 SIB-200 sentences, 3 epochs,
batch 16, one torch thread: one study worker's share of this 2-core machine) and ends with
the test outputs of its last epoch (5 x 100 test sentences). The baseline runs from
`git archive <baseline>` on PYTHONPATH, so both versions meet the same data, model cache,
libraries and store. Arms are interleaved within each round, in a rotated order. Reported:
seconds per arm per round, where the step's time goes (process start and imports, set-up,
training loops, evaluation, logging), and each arm's ratio to the baseline as a geometric
mean with its t interval over rounds (rounds are the unit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from mlflow.tracking import MlflowClient
from tracin_report import geometric_interval
from tracin_setup import SIB200

ROOT = Path(__file__).resolve().parents[1]
PLAIN = Path(__file__).with_name("retraining_plain.py")


def step_command(args, precision: str | None) -> list[str]:
    command = [
        sys.executable, "-m", "xlinfluence.cli", "train", "--dataset", "sib200",
        "--data-path", str(args.data_path), "--languages", args.languages,
        "--train-per-language", str(args.per_language), "--test-per-language",
        str(args.per_language), "--model", "e5-small", "--epochs", str(args.epochs),
        "--save-checkpoints", "false", "--threads", str(args.threads), "--seed", "42",
    ]  # fmt: skip
    return command + (["--train-precision", precision] if precision else [])


def plain_command(args, precision: str) -> list[str]:
    return [
        sys.executable, str(PLAIN), "--data-path", str(args.data_path), "--languages",
        args.languages, "--per-language", str(args.per_language), "--epochs", str(args.epochs),
        "--threads", str(args.threads), "--precision", precision,
    ]  # fmt: skip


def baseline_tree(commit: str, into: Path) -> Path:
    """The baseline's source tree (git archive), for PYTHONPATH."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src"],
                             check=True, capture_output=True).stdout  # fmt: skip
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def breakdown(run_id: str, wall: float) -> dict[str, float]:
    """Where a train run's wall time went, from its own record."""
    client = MlflowClient()
    run = client.get_run(run_id)
    history = {k: [m.value for m in client.get_metric_history(run_id, k)]
               for k in ("epoch_seconds", "evaluation_seconds")}  # fmt: skip
    duration = (run.info.end_time - run.info.start_time) / 1000
    training = sum(history["epoch_seconds"])
    evaluation = sum(history["evaluation_seconds"])
    return {
        "wall": wall,
        "outside the run (start, imports, data, model)": wall - duration,
        "training loops": training,
        "evaluation": evaluation,
        "rest of the run (logging, set-up)": duration - training - evaluation,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", required=True, help="commit of today's way")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp16"))
    p.add_argument("--data-path", default=SIB200)
    p.add_argument("--languages", default="en,de,fr,ru,zh")
    p.add_argument("--per-language", type=int, default=100)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/retraining.json")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xlinfluence-bench-retraining-"))
    base_src = baseline_tree(args.baseline, work / "baseline")
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'bench.db'}",
                        "XLINFLUENCE_CACHE": str(work / "cache"), "TQDM_DISABLE": "1"}  # fmt: skip
    arms = {
        "today": (step_command(args, None), env | {"PYTHONPATH": str(base_src)}),
        "new fp32": (step_command(args, "fp32"), env),
        f"new {args.precision}": (step_command(args, args.precision), env),
        f"plain loop {args.precision}": (plain_command(args, args.precision), env),
    }
    os.environ.update({"MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]})
    rounds: list[dict] = []
    for r in range(args.rounds):
        order = list(arms)[r % len(arms) :] + list(arms)[: r % len(arms)]
        found = {}
        for name in order:
            command, arm_env = arms[name]
            seconds, last = timed(command, arm_env)
            found[name] = {"seconds": seconds}
            if not name.startswith("plain"):
                found[name]["parts"] = breakdown(last, seconds)
            print(f"round {r + 1} {name}: {seconds:.1f} s", flush=True)
        rounds.append(found)
    report = {"cpu": platform.processor() or platform.machine(), "flags": cpu_flags(),
              "args": {k: str(v) for k, v in vars(args).items()}, "rounds": rounds,
              "ratios": {}}  # fmt: skip
    for name in arms:
        if name == "today":
            continue
        ratios = [found[name]["seconds"] / found["today"]["seconds"] for found in rounds]
        if len(ratios) > 1:
            mean, low, high = geometric_interval(ratios, 0.95)
            report["ratios"][f"{name} / today"] = {"mean": mean, "low": low, "high": high,
                                                   "rounds": ratios}  # fmt: skip
            print(f"{name} / today: {mean:.3f} [{low:.3f}, {high:.3f}] over {len(ratios)} rounds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"written {args.out}")


def cpu_flags() -> list[str]:
    """The CPU's native reduced-precision features (what bf16 autocast can use)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n")[0].split()
    except (OSError, IndexError):
        return []
    return sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512f", "avx_vnni")))


if __name__ == "__main__":
    main()
