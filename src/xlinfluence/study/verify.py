"""`xlinfluence study verify`: does this checkout still compute a bundle's numbers?

A change to the modules that compute numbers (provenance.NUMBERS_SOURCES) makes every run
of every study a stranger to reuse, even a refactor that changes no number. This check
imports the bundle into a throwaway store, re-runs the chosen steps of its runs with this
checkout, each against the bundle's own upstream runs and with the parameters (thread
count included) its run recorded, and compares what they wrote with the bundle's files,
bit for bit. Where every one is equal, the bundle's source digests of those steps are
listed in numbers_equivalent.json (`--record`), so its runs, and every study made by that
code, are reused again; where one differs, it says which and by how much.

Steps are chosen because their costs differ a hundredfold: an analyze run takes seconds
from the bundle's scores, a retraining a minute or two, an influence run the most (it
needs its train run made again, for the checkpoints a bundle does not carry). A change
to the analysis modules only needs `--steps analyze`.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from safetensors.torch import load_file

from xlinfluence import provenance, tracking
from xlinfluence.config.main import STEP_CONFIGS
from xlinfluence.errors import XlinfluenceError
from xlinfluence.study import bundle, importer
from xlinfluence.study.export import remap


@dataclass
class Verdict:
    equal: list[str] = field(default_factory=list)  # "role name (run)" that matched
    differ: list[str] = field(default_factory=list)  # with what differed
    verified: list[str] = field(default_factory=list)  # bundle run IDs found equal

    @property
    def holds(self) -> bool:
        return bool(self.equal) and not self.differ

    def summary(self) -> str:
        text = f"{len(self.equal)} run(s) equal bit for bit"
        if self.differ:
            text += f"; {len(self.differ)} differ: " + "; ".join(self.differ)
        return text


#: The steps whose runs a bundle carries numbers of, in the order they are made.
STEPS = ("train", "influence", "analyze")


def verify(
    root: Path, data_path: str = "", retrainings: int = 2, steps: tuple[str, ...] = STEPS
) -> Verdict:
    """Re-run the bundle's runs of `steps` here (of train: the base run and the first
    `retrainings` retrainings) against its own upstream runs, imported."""
    unknown = sorted(set(steps) - set(STEPS))
    if unknown or not steps:
        raise bundle.BundleError(
            f"steps {unknown or 'none'}: a bundle's runs of {', '.join(STEPS)} can be verified; "
            "name some of those."
        )
    found = bundle.read(Path(root))
    chosen = [run for step in STEPS if step in steps for run in found.of_role(step)]
    if "train" in steps:
        chosen += found.of_role("retraining")[:retrainings]
    elif "influence" in steps:  # its checkpoints are made again; a bundle carries none
        chosen = found.of_role("train") + chosen
    verdict = Verdict()
    with tempfile.TemporaryDirectory(prefix="xlinfluence-verify-") as tmp:
        with tracking.temporary_store(Path(tmp)):
            # bundle run ID -> its run here: imported, then the one made again
            mapping = dict(importer.import_bundle(Path(root), data_path, found).runs)
            for run in chosen:
                step = run.record["tags"][tracking.STEP_TAG]
                params = remap(tracking.params_as_given(run.record["params"]), mapping)
                if data_path and "data_path" in params:
                    params["data_path"] = data_path
                threads = run.record["tags"].get(tracking.THREADS_TAG)
                if params.get("threads") in ("0", "") and threads:  # bit for bit needs them
                    params["threads"] = threads
                config = STEP_CONFIGS[step].from_params(params)
                mapping[run.run_id] = _run_step(config)
                label = f"{run.role} {run.record['name']} ({run.run_id[:8]})"
                problem = _compare(run, mapping[run.run_id])
                if problem:
                    verdict.differ.append(f"{label}: {problem}")
                else:
                    verdict.equal.append(label)
                    verdict.verified.append(run.run_id)
    return verdict


def _run_step(config) -> str:
    from xlinfluence.cli import execute  # which starts each step from a fresh Accelerate state

    return execute(config)


def _compare(run: bundle.Run, again: str) -> str:
    """'' where every carried file of `run` equals the re-run's, else what differs."""
    for name in run.record["files"]:
        mine = run.artifacts / name
        try:
            theirs = tracking.download(again, name)
        except XlinfluenceError:
            return f"{name} was not written again"
        if name.endswith(".safetensors"):
            a, b = load_file(str(mine)), load_file(str(theirs))
            for key in a:
                if key not in b or not a[key].equal(b[key]):
                    diff = (a[key] - b[key]).abs().max().item() if key in b else float("nan")
                    return f"{name}[{key}] differs (largest difference {diff:.3g})"
        elif name.endswith(".parquet"):
            a, b = pd.read_parquet(mine), pd.read_parquet(theirs)
            try:
                pd.testing.assert_frame_equal(a, b, check_exact=True)
            except AssertionError as err:
                return f"{name} differs ({' '.join(str(err).split())[:160]})"
    return ""


def record(root: Path, verdict: Verdict) -> list[str]:
    """List the bundle's source digests as equivalent to this checkout's (after a verdict
    that holds; each entry names the digest it was shown equal to, `to`); the steps whose
    entries were added."""
    if not verdict.holds:
        raise bundle.BundleError(f"bundle {root}: {verdict.summary()}; nothing recorded.")
    listed = (
        json.loads(provenance.EQUIVALENT_FILE.read_text())
        if provenance.EQUIVALENT_FILE.is_file()
        else {}
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=provenance.PACKAGE).stdout.strip() or "unknown"  # fmt: skip
    shown_by = (
        f"xlinfluence study verify {Path(root).name} at {commit}, "
        f"{datetime.now(UTC).date().isoformat()}: {verdict.summary()}"
    )
    added = []
    for run in bundle.read(Path(root)).runs:
        if run.run_id not in verdict.verified:  # listed only what was run again and equal
            continue
        tags = run.record["tags"]
        step, source = tags[tracking.STEP_TAG], tags[provenance.SOURCE_TAG]
        entries, current = listed.setdefault(step, []), provenance.source_digest(step)
        shown_now = {e["source"] for e in entries if e["to"] == current}
        if source != current and source not in shown_now | set(
            provenance.equivalents(step, current)
        ):
            entries.append({"source": source, "to": current, "shown_by": shown_by})
            added.append(step)
    provenance.EQUIVALENT_FILE.write_text(json.dumps(listed, indent=1) + "\n")
    return added
