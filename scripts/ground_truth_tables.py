"""The ground-truth tables of docs/findings.md, from the tracking store.

    MLFLOW_TRACKING_URI=sqlite:////path/to/store.db \
        python scripts/ground_truth_tables.py <lds or leave-language-out experiment run> ...

Reads each finished experiment run's settings (every method's main run and every
retraining, from its tags), recomputes the tables with this checkout's analysis code
(steps/lds.py, steps/leave_language_out.py `recompute`) and prints them as Markdown,
with the run IDs they come from.
"""

from __future__ import annotations

import sys

import pandas as pd

from xlinfluence import tracking
from xlinfluence.steps import attributions, lds, leave_language_out


def markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |"]
    lines.append("|" + "---|" * len(frame.columns))
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines)


def interval(frame: pd.DataFrame, value: str, low: str, high: str) -> pd.Series:
    return frame.apply(lambda r: f"{r[value]:+.3f} [{r[low]:+.3f}, {r[high]:+.3f}]", axis=1)


def matrix(frame: pd.DataFrame, values: str, rows: str, columns: str) -> pd.DataFrame:
    """Long -> wide, rows and columns in their order of appearance."""
    wide = frame.pivot(index=rows, columns=columns, values=values)
    wide = wide.reindex(index=pd.unique(frame[rows]), columns=pd.unique(frame[columns]))
    return wide.reset_index()


def lds_report(run_id: str) -> str:
    tables = lds.recompute(run_id)
    table, raw = tables["comparison"], tables["retrainings"]
    overall = table[table["test_language"] == "all"].copy()
    overall["LDS [95% CI]"] = interval(overall, "lds", "ci_low", "ci_high")
    overall["minus dot-all [95% CI]"] = overall.apply(
        lambda r: "" if pd.isna(r.get("diff_vs_reference"))
        else f"{r['diff_vs_reference']:+.3f} [{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}]",
        axis=1,
    )  # fmt: skip
    shown = overall[["method", "target", "LDS [95% CI]", "minus dot-all [95% CI]", "p_holm"]]
    languages = table[(table["target"] == "margin") & (table["test_language"] != "all")]
    wide = matrix(languages, "lds", "method", "test_language")
    cost = raw[["seconds", "artifact_bytes", "n_kept", "accuracy"]].describe().loc[
        ["mean", "min", "max"]
    ].reset_index()  # fmt: skip
    return "\n\n".join([
        f"LDS experiment run `{run_id}`: {raw['subset'].nunique()} subsets x "
        f"{raw['train_seed'].nunique()} seeds = {len(raw)} retrainings",
        markdown(shown), "LDS (margin) per test language:", markdown(wide),
        "Retrainings (seconds, artifact bytes, rows kept, accuracy):", markdown(cost, 1),
    ])  # fmt: skip


def leave_language_out_report(run_id: str) -> str:
    tables = leave_language_out.recompute(run_id)
    effects, agree, shares = tables["comparison"], tables["agreement"], tables["shares"]
    effects = effects.copy()
    effects["cell"] = interval(effects, "delta_loss", "ci_low", "ci_high") + effects["p_holm"].map(
        lambda p: " *" if p < 0.05 else ""
    )
    cells = matrix(effects, "cell", "test_language", "train_language")
    accuracy = matrix(effects, "delta_accuracy", "test_language", "train_language")
    agree = agree.copy()
    agree["Spearman [95% CI]"] = interval(agree, "spearman", "ci_low", "ci_high")
    reference = shares[shares["method"] == "dot-all"]
    share_matrix = matrix(reference, "share", "test_language", "train_language")
    settings = attributions.settings_of(run_id)
    seeds = sorted({n.split(":seed-")[1] for n in settings if ":seed-" in n})
    return "\n\n".join([
        f"Leave-one-language-out experiment run `{run_id}`: {len(seeds)} training seeds",
        "Change of L's mean test loss without X (rows L, columns X; 95% CI; * Holm p < 0.05):",
        markdown(cells), "Change of L's accuracy without X:", markdown(accuracy),
        "Agreement of each attribution with the off-diagonal cells:",
        markdown(agree[["method", "prediction", "Spearman [95% CI]", "n_cells"]]),
        "dot-all top-k share (rows L, columns X):", markdown(share_matrix),
    ])  # fmt: skip


def cost(run_id: str) -> str:
    """Seconds and artifact bytes of the cheap retrainings against the full train run."""
    settings = attributions.settings_of(run_id)
    base_main = settings["dot-all"]
    base_train = tracking.fetch_run(base_main, step="main").data.tags["xlinfluence.train_run_id"]
    rows = []
    for name, label in [(base_train, "full train run (checkpoints, state)")] + [
        (r, "cheap retraining") for n, r in settings.items() if ":seed-" in n
    ]:
        run = tracking.fetch_run(name, step="train")
        rows.append({
            "run": label,
            "seconds": (run.info.end_time - run.info.start_time) / 1000,
            "artifact MB": run.data.metrics.get("artifact_bytes", float("nan")) / 1e6,
            "rows trained": run.data.metrics.get("n_train", float("nan")),
        })  # fmt: skip
    frame = pd.DataFrame(rows).groupby("run", sort=False)
    table = frame.mean().round(3).assign(runs=frame.size()).reset_index()
    return f"Cost (base train run `{base_train}`; means):\n\n" + markdown(table, 3)


def main(run_ids: list[str]) -> None:
    for run_id in run_ids:
        experiment = tracking.run_params(tracking.fetch_run(run_id, step="main"))["experiment"]
        report = {"lds": lds_report, "leave-language-out": leave_language_out_report}.get(
            experiment
        )
        if report is None:
            sys.exit(f"run {run_id} is experiment={experiment!r}, not lds or leave-language-out")
        print(report(run_id), end="\n\n")
        print(cost(run_id), end="\n\n")


if __name__ == "__main__":
    main(sys.argv[1:])
