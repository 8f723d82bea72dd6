"""Where the influence step's time goes on a train run you have: the step as `mlflow run -e
influence` runs it (same code path, a real influence run is logged), with the engine's
parts timed exclusively (tracin_profile.Regions). Repeats alternate the settings given, so
a slow spell of the machine hits them alike.

    python bench/influence_profile.py --train-run-id <id> --checkpoints epoch-3 \\
        --batch-size 32 64 --repeat 2

The tracking store is MLFLOW_TRACKING_URI (each repeat logs one influence run there).
"""

from __future__ import annotations

import argparse
import time

import torch
from tracin_profile import Regions, patched

from xlinfluence.config import InfluenceConfig
from xlinfluence.steps import influence


def profile_once(config: InfluenceConfig) -> tuple[float, dict[str, float], dict[str, int]]:
    """Wall seconds of the whole step, and exclusive seconds and calls per engine part."""
    regions = Regions(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    with patched(regions):
        start = time.perf_counter()
        influence.run(config)
        total = time.perf_counter() - start
    return total, dict(regions.seconds), dict(regions.calls)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-run-id", required=True)
    p.add_argument("--checkpoints", default="all", help="as the influence step's parameter")
    p.add_argument("--method", default="cosine")
    p.add_argument("--batch-size", type=int, nargs="+", default=[32],
                   help="influence batch sizes to alternate")  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--top", type=int, default=8, help="engine parts printed per run")
    args = p.parse_args()

    totals: dict[int, list[float]] = {b: [] for b in args.batch_size}
    for repeat in range(args.repeat):
        for batch_size in args.batch_size:
            config = InfluenceConfig(
                train_run_id=args.train_run_id, checkpoints=args.checkpoints,
                method=args.method, batch_size=batch_size, threads=args.threads,
            )  # fmt: skip
            total, seconds, calls = profile_once(config)
            totals[batch_size].append(total)
            print(f"repeat {repeat}, batch {batch_size}: {total:.1f} s for the whole step")
            for part, s in sorted(seconds.items(), key=lambda kv: -kv[1])[: args.top]:
                print(f"  {s:8.2f} s  {calls[part]:6d}x  {part}")
    first = args.batch_size[0]
    for batch_size, runs in totals.items():
        ratios = ", ".join(f"{t / f:.3f}" for t, f in zip(runs, totals[first], strict=True))
        print(f"batch {batch_size}: " + ", ".join(f"{t:.1f}" for t in runs) + f" s; "
              f"over batch {first}, paired: {ratios}")  # fmt: skip


if __name__ == "__main__":
    main()
