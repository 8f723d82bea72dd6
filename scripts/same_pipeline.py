"""Run the README's main command at two commits on this machine and compare what they
computed, bit for bit: the check that a refactor changed no number.

    python scripts/same_pipeline.py <before> <after> [-- <mlflow run options>]

Each commit is checked out in a temporary worktree and runs `mlflow run <worktree>
--env-manager local` (plus the given options) in this virtual env, with that worktree's
src/ first on the path, its own SQLite store and its own cache, so neither run reuses the
other's work. Then every numeric artifact of its train, influence and analyze runs
(safetensors tensors and Parquet tables; checkpoints excepted, whose weights the scores
already depend on) that both commits write is compared with the other commit's; one that
only one writes (a new output) is listed. Exit status 1 where one differs.
Run it on a quiet machine: the two pipelines run one after the other, with the same
thread count.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import pandas as pd
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

REPOSITORY = Path(__file__).resolve().parents[1]
STEPS = ("train", "influence", "analyze")
STEP_TAG = "xlinfluence.step"


def _pipeline(commit: str, root: Path, options: tuple[str, ...]) -> Path:
    """Run the main command at `commit`; the folder of its store and downloads."""
    tree = root / commit
    subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "add", "--detach", str(tree),
                    commit], check=True, capture_output=True)  # fmt: skip
    store = root / f"{commit}-store"
    store.mkdir()
    env = os.environ | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "XLINFLUENCE_CACHE": str(store / "cache"),
        "PYTHONPATH": str(tree / "src"),
    }
    click.echo(f"{commit}: mlflow run {' '.join(options)} ...", err=True)
    subprocess.run(["mlflow", "run", str(tree), "--env-manager", "local", *options],
                   env=env, check=True, cwd=store)  # fmt: skip
    return store


def _outputs(store: Path) -> dict[str, Path]:
    """'<step>/<artifact path>' -> its file, for the numeric artifacts of each step's run."""
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    found = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            step = run.data.tags.get(STEP_TAG)
            if step not in STEPS:
                continue
            run_id = run.info.run_id
            local = Path(client.download_artifacts(run_id, "", str(store / run_id)))
            for path in sorted(local.rglob("*")):
                relative = path.relative_to(local).as_posix()
                if path.suffix in (".safetensors", ".parquet") and "checkpoints/" not in relative:
                    found[f"{step}/{relative}"] = path
    return found


def _differs(a: Path, b: Path) -> str:
    if a.suffix == ".safetensors":
        left, right = load_file(str(a)), load_file(str(b))
        if left.keys() != right.keys():
            return f"tensors {sorted(left)} against {sorted(right)}"
        for key in left:
            if not left[key].equal(right[key]):
                largest = (left[key].double() - right[key].double()).abs().max().item()
                return f"[{key}] largest difference {largest:.3g}"
        return ""
    try:
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), check_exact=True)
    except AssertionError as err:
        return " ".join(str(err).split())[:200]
    return ""


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("before")
@click.argument("after")
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def main(before: str, after: str, options: tuple[str, ...]) -> None:
    with tempfile.TemporaryDirectory(prefix="xlinfluence-same-") as tmp:
        root = Path(tmp)
        try:
            stores = [_pipeline(commit, root, options) for commit in (before, after)]
            first, second = (_outputs(store) for store in stores)
        finally:
            subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "prune"], check=False)
        differ = 0
        for name in sorted(first.keys() & second.keys()):
            said = _differs(first[name], second[name])
            differ += bool(said)
            click.echo(f"{'DIFFERS' if said else 'equal  '} {name} {said}")
        for name in sorted(first.keys() ^ second.keys()):  # an output one commit adds
            click.echo(f"only at {before if name in first else after}: {name}")
        click.echo(f"{before} against {after}: {len(first.keys() & second.keys()) - differ} "
                   f"artifact(s) of both equal bit for bit, {differ} differ")  # fmt: skip
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
