"""Every table of docs/findings.md, from a study bundle or a tracking store.

    python scripts/findings_tables.py bundle studies/<name>               # from a bundle alone
    python scripts/findings_tables.py paired studies/<a> studies/<b>       # b minus a, paired
    python scripts/findings_tables.py figure studies/<name> --out FILE.png  # language datamodel
    export MLFLOW_TRACKING_URI=sqlite:////path/to/store.db
    python scripts/findings_tables.py shares <analyze run>               # one analyze run
    python scripts/findings_tables.py methods <method>=<analyze run> ...  # methods' agreement
    python scripts/findings_tables.py retraining <experiment run> ...     # lds, leave-language-out

`shares` prints one analyze run's tables (accuracy, own share per epoch against the
language-blind null, its paired epoch change, translation share minus its shuffled control,
language distance); `methods` compares the analyze runs of several attributions of the same
fine-tuning against dot-all (top-k sets recomputed from each influence run's scores);
`retraining` recomputes an lds / leave-language-out experiment's tables with this
checkout's analysis code (experiments/lds.py, experiments/leave_language_out.py `recompute`) and the
cost of its retrainings. Every table names the runs it comes from.
"""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd
from scipy import stats

from xlinfluence import artifacts, tracking
from xlinfluence.analysis import PROPONENT, ablation, agreement, plots, topk_table
from xlinfluence.config.main import MainConfig
from xlinfluence.errors import XlinfluenceError
from xlinfluence.experiments import lds, leave_language_out
from xlinfluence.experiments.base import final_accuracy, settings_of
from xlinfluence.steps.upstream import train_manifests
from xlinfluence.study import bundle
from xlinfluence.study import tables as study_tables


def markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |"]
    lines.append("|" + "---|" * len(frame.columns))
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines)


def interval(frame: pd.DataFrame, value: str, low: str, high: str, sign: str = "+") -> pd.Series:
    """'value [low, high]'; sign '+' for differences, '' for shares."""
    f = f"{{:{sign}.3f}}"
    return frame.apply(
        lambda r: (
            ""
            if pd.isna(r[value])
            else f"{f.format(r[value])} [{f.format(r[low])}, {f.format(r[high])}]"
        ),
        axis=1,
    )


def matrix(frame: pd.DataFrame, values: str, rows: str, columns: str) -> pd.DataFrame:
    """Long -> wide, rows and columns in their order of appearance."""
    wide = frame.pivot(index=rows, columns=columns, values=values)
    wide = wide.reindex(index=pd.unique(frame[rows]), columns=pd.unique(frame[columns]))
    return wide.reset_index()


def _config(experiment_run_id: str) -> MainConfig:
    """The parameters of a finished experiment run."""
    run = tracking.fetch_run(experiment_run_id, step="main")
    return MainConfig.from_params(tracking.run_params(run))


def lds_report(run_id: str, added: dict[str, str], reference: str = agreement.REFERENCE) -> str:
    tables = lds.recompute(_config(run_id), run_id, added, reference)
    return lds_text(tables, f"LDS experiment run `{run_id}`", reference)


def lds_text(tables: dict[str, pd.DataFrame], label: str, reference: str) -> str:
    table, raw = tables["comparison"], tables["retrainings"]
    overall = table[table["test_language"] == "all"].copy()
    overall["LDS [95% CI]"] = interval(overall, "lds", "ci_low", "ci_high")
    versus = f"minus {reference} [95% CI]"
    overall[versus] = interval(overall, "diff_vs_reference", "diff_ci_low", "diff_ci_high")
    shown = overall[["method", "target", "LDS [95% CI]", versus, "p_holm"]]
    languages = table[(table["target"] == "margin") & (table["test_language"] != "all")]
    wide = matrix(languages, "lds", "method", "test_language")
    cost = raw[["seconds", "artifact_bytes", "n_kept", "accuracy"]].describe().loc[
        ["mean", "min", "max"]
    ].reset_index()  # fmt: skip
    return "\n\n".join([
        f"{label}: {raw['subset'].nunique()} subsets x "
        f"{raw['train_seed'].nunique()} seeds = {len(raw)} retrainings",
        markdown(shown), "LDS (margin) per test language:", markdown(wide),
        "Retrainings (seconds, artifact bytes, rows kept, accuracy):", markdown(cost, 1),
    ])  # fmt: skip


def leave_language_out_report(run_id: str, added: dict[str, str]) -> str:
    tables = leave_language_out.recompute(_config(run_id), run_id, added)
    settings = settings_of(run_id)
    seeds = len({n.split(":seed-")[1] for n in settings if ":seed-" in n})
    return leave_language_out_text(
        tables, f"Leave-one-language-out experiment run `{run_id}`", seeds
    )


def leave_language_out_text(tables: dict[str, pd.DataFrame], label: str, seeds: int) -> str:
    effects, agree, shares = tables["comparison"], tables["agreement"], tables["shares"]
    own = tables["own_excess"].copy()
    own["own minus others [95% CI]"] = interval(own, "own_minus_others", "ci_low", "ci_high")
    effects = effects.copy()
    effects["cell"] = interval(effects, "delta_loss", "ci_low", "ci_high") + effects["p_holm"].map(
        lambda p: " *" if p < 0.05 else ""
    )
    cells = matrix(effects, "cell", "test_language", "train_language")
    accuracy = matrix(effects, "delta_accuracy", "test_language", "train_language")
    agree = agree.copy()
    agree["Spearman [95% CI]"] = interval(agree, "spearman", "ci_low", "ci_high")
    share_matrices = []
    for method in ("dot-all", "cosine"):  # the paper's attribution and the tool's default
        of_method = shares[shares["method"] == method]
        if len(of_method):
            share_matrices += [f"{method} top-k share (rows L, columns X):",
                               markdown(matrix(of_method, "share", "test_language",
                                               "train_language"))]  # fmt: skip
    return "\n\n".join([
        f"{label}: {seeds} training seeds",
        "Change of L's mean test loss without X (rows L, columns X; 95% CI; * Holm p < 0.05):",
        markdown(cells), "Change of L's accuracy without X:", markdown(accuracy),
        "Is the own language special? Loss change without L minus the mean without each "
        "other language (paired by seed and test example; Holm over L):",
        markdown(own[["test_language", "own minus others [95% CI]", "p", "p_holm"]]),
        "Agreement of each attribution with the off-diagonal cells:",
        markdown(agree[["method", "prediction", "Spearman [95% CI]", "n_cells"]]),
        *share_matrices,
    ])  # fmt: skip


def language_datamodel_text(tables: dict[str, pd.DataFrame], label: str) -> str:
    """The language datamodel's tables as docs/findings.md shows them."""
    truth = tables["language_truth"].copy()
    seeds = tables["retrainings"]["seed"].nunique()
    compositions = tables["retrainings"]["composition"].nunique()
    truth["cell"] = interval(truth, "beta", "low", "high") + truth["p_holm"].map(
        lambda p: " *" if p < 0.05 else ""
    )
    premium = tables["premium"]
    premium = premium[premium["target"] == "loss"].copy()
    premium["premium [95% CI]"] = interval(premium, "premium", "low", "high")
    agree = tables["language_agreement"]
    agree = agree[agree["target"] == "loss"].copy()
    agree["agreement [95% CI]"] = interval(agree, "agreement", "low", "high")
    agree["column"] = agree["prediction"] + ", " + agree["centring"] + "-centred"
    wide = agree.pivot(index="method", columns="column", values="agreement [95% CI]")
    lds_table = tables["lds_partialled"]
    lds_table = lds_table[lds_table["test_language"] == "all"].copy()
    flat = sorted(lds_table.loc[lds_table["n_test"] == 0, "method"].unique())
    lds_table = lds_table[~lds_table["method"].isin(flat)]
    lds_table["LDS [95% CI]"] = interval(lds_table, "lds", "low", "high")
    lds_wide = lds_table.pivot(index="method", columns="target", values="LDS [95% CI]")
    fraction = lds_table.pivot(index="method", columns="target", values="fraction_of_ceiling")
    lds_wide = lds_wide.join(fraction.add_prefix("fraction of ceiling, "))
    paired = tables["lds_partialled_differences"]
    paired = paired[paired["test_language"] == "all"].copy()
    reference = paired["reference"].iloc[0]
    paired[f"minus {reference} [95% CI]"] = interval(paired, "diff", "low", "high")
    paired["by one seed's outputs"] = paired.apply(
        lambda r: f"{r.seed_low:+.3f} to {r.seed_high:+.3f}", axis=1
    )
    paired["seeds agreeing"] = (
        paired["seeds_agreeing"].astype(str) + "/" + paired["n_seeds"].astype(str)
    )
    power = tables["power"]
    power = power[(power["target"] == "loss") & (power["seeds"].isin([3, seeds]) | power["chosen"])]
    return "\n\n".join([
        f"{label}: {compositions} compositions x {seeds} seeds = {compositions * seeds} "
        "retrainings, beside the pilot",
        "beta(L, X): L's mean test loss increase when X is cut (rows L, columns X; 95% CI; "
        "* Holm p < 0.05 over the cells):",
        markdown(matrix(truth, "cell", "test_language", "train_language")),
        "Own-language premium, beta(L, L) minus the mean beta(L, X), X != L (Holm over L; "
        "TOST within the pilot's margin):",
        markdown(premium[["test_language", "premium [95% CI]", "p_holm", "margin",
                          "p_tost_holm", "verdict"]]),  # fmt: skip
        "Agreement with beta (correlation of the centred L x X matrices, loss; interval over "
        "beta's uncertainty; random: the mean and 95% range of 200 draws of random scores):",
        markdown(wide.reset_index()),
        "Example-level LDS over the compositions, language amounts partialled out"
        + (f" ({', '.join(flat)}: nothing left once the amounts are partialled out, no score)"
           if flat else "") + ":",
        markdown(lds_wide.reset_index()),
        f"Each method's partialled LDS minus {reference}'s, paired over the test examples "
        "(bootstrap over test examples; Holm over the methods, per target):",
        markdown(paired[["method", "target", f"minus {reference} [95% CI]", "p_holm",
                         "by one seed's outputs", "seeds agreeing"]]),  # fmt: skip
        "Power (pilot's seed spread; loss):",
        markdown(power[["seeds", "retrainings", "seed_sd", "margin", "se_beta",
                        "power_premium", "power_equivalence", "power_cell", "chosen"]]),
    ])  # fmt: skip


def cost(run_id: str) -> str:
    """Seconds and artifact bytes of the cheap retrainings against the full train run."""
    settings = settings_of(run_id)
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
    by_kind = pd.DataFrame(rows).groupby("run", sort=False)
    table = by_kind.mean().round(3).assign(runs=by_kind.size()).reset_index()
    return f"Cost (base train run `{base_train}`; means):\n\n" + markdown(table, 3)


def analysis_table(analyze_run: str, name: str) -> pd.DataFrame | None:
    """One of an analyze run's tables; None where the run has none (one checkpoint: no
    epoch change; languages URIEL does not know: no distances)."""
    path = f"{artifacts.ANALYSIS}/{name}.parquet"
    if path not in tracking.artifact_names(analyze_run, artifacts.ANALYSIS):
        return None
    return pd.read_parquet(tracking.download(analyze_run, path))


def upstream(analyze_run: str) -> tuple[str, str]:
    """(influence run, train run) an analyze run read."""
    influence_run = tracking.run_params(tracking.fetch_run(analyze_run, step="analyze"))[
        "influence_run_id"
    ]
    manifest = artifacts.read_json(tracking.download(influence_run, artifacts.INFLUENCE_MANIFEST))
    return influence_run, manifest["train_run_id"]


def shares_report(analyze_run: str) -> str:
    influence_run, train_run = upstream(analyze_run)
    accuracy = pd.DataFrame([final_accuracy(train_run)])
    shares = analysis_table(analyze_run, "shares")
    shares = shares[shares["kind"] == PROPONENT]
    own = shares[shares["test_language"] == shares["train_language"]].copy()
    own["own share [95% CI]"] = interval(own, "share", "ci_low", "ci_high", sign="")
    own["minus null [95% CI]"] = interval(own, "excess", "excess_ci_low", "excess_ci_high")
    own_wide = matrix(own, "own share [95% CI]", "test_language", "checkpoint")
    excess_wide = matrix(own, "minus null [95% CI]", "test_language", "checkpoint")
    total = shares[shares["checkpoint"] == artifacts.TOTAL].copy()
    total["cell"] = total.apply(
        lambda r: f"{r['share']:.3f} ({r['excess']:+.3f}"
        + ("*" if r["excess_ci_low"] > 0 or r["excess_ci_high"] < 0 else "") + ")",
        axis=1,
    )  # fmt: skip
    translation = analysis_table(analyze_run, "translation_share")
    translation = translation[translation["checkpoint"] == artifacts.TOTAL].copy()
    translation["translation share [95% CI]"] = interval(
        translation, "translation_share", "translation_share_ci_low",
        "translation_share_ci_high", "",
    )  # fmt: skip
    translation["control [95% CI]"] = interval(
        translation, "control_translation_share", "control_translation_share_ci_low",
        "control_translation_share_ci_high", "",
    )  # fmt: skip
    excess = analysis_table(analyze_run, "translation_excess")
    excess = excess[excess["checkpoint"] == artifacts.TOTAL].copy()
    excess["share minus control, paired [95% CI]"] = interval(
        excess, "translation_minus_control", "ci_low", "ci_high"
    )
    translation = translation.merge(excess, on=["checkpoint", "test_language"])
    parts = [
        f"analyze `{analyze_run}` (influence `{influence_run}`, train `{train_run}`)",
        "Test accuracy (final epoch):", markdown(accuracy),
        "Own-language share of the top-k proponents per checkpoint:", markdown(own_wide),
        "Own share minus the language-blind null (paired):", markdown(excess_wide),
        "Share matrix, total (rows: test language; cells: share (minus null, * its 95% "
        "interval excludes 0, not adjusted for the 25 cells)):",
        markdown(matrix(total, "cell", "test_language", "train_language")),
        "Translation share against the within-label shuffled control (total):",
        markdown(translation[["test_language", "translation share [95% CI]", "control [95% CI]",
                              "share minus control, paired [95% CI]", "p_holm", "n_test"]]),
    ]  # fmt: skip
    change = analysis_table(analyze_run, "self_share_change")
    if change is not None:
        change["change [95% CI]"] = interval(change, "self_share_change", "ci_low", "ci_high")
        parts += ["Own share, last minus first checkpoint (paired; Holm over languages):",
                  markdown(change[["test_language", "change [95% CI]", "p", "p_holm",
                                   "n_test"]])]  # fmt: skip
    distance = analysis_table(analyze_run, "distance_correlations")
    if distance is not None:
        parts += ["Language distance (Mantel test over language permutations):",
                  markdown(distance)]  # fmt: skip
    return "\n\n".join(parts)


def methods_report(analyze_runs: dict[str, str], k: int, figure: str = "") -> str:
    """Agreement of each method's shares and top-k with dot-all's (as experiment=methods)."""
    methods = {}
    for name, analyze_run in analyze_runs.items():
        influence_run, train_run = upstream(analyze_run)
        train, test = train_manifests(train_run)
        scores = artifacts.load_scores(
            tracking.download(influence_run, artifacts.SCORES), n_test=len(test), n_train=len(train)
        )
        tables = {t: analysis_table(analyze_run, t) for t in ("shares", "self_shares")}
        tables["topk"] = topk_table(scores, train, test, k)
        methods[name] = tables | {"checkpoint": artifacts.TOTAL}
        if name == agreement.REFERENCE:
            for checkpoint in (c for c in scores if c != artifacts.TOTAL):
                methods[f"{name}@{checkpoint}"] = tables | {"checkpoint": checkpoint}
    table, own = agreement.compare(methods, k)
    if figure:
        agreement.figure(table, own).savefig(figure, dpi=110, bbox_inches="tight")
    own = own.copy()
    own["cell"] = own.apply(
        lambda r: f"{r['self_share']:.3f}" + ("*" if r["apart_from_reference"] else ""), axis=1
    )
    runs = "; ".join(f"{n} `{r}`" for n, r in analyze_runs.items())
    return "\n\n".join([
        f"analyze runs: {runs}", markdown(table),
        "Own share (total; * interval apart from dot-all's):",
        markdown(matrix(own, "cell", "method", "test_language")),
    ])  # fmt: skip


def _pairs(values: tuple[str, ...], where: str) -> dict[str, str]:
    bad = [v for v in values if "=" not in v]
    if bad:
        raise click.BadParameter(f"{bad} are not NAME=RUN pairs", param_hint=where)
    return dict(v.split("=", 1) for v in values)


@click.group()
def main() -> None:
    """Print the findings tables from the store in MLFLOW_TRACKING_URI."""


@main.command()
@click.argument("analyze_run")
def shares(analyze_run: str) -> None:
    click.echo(shares_report(analyze_run))


@main.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--top-k", default=100, show_default=True)
@click.option("--figure", default="", help="also save the agreement figure to this PNG")
def methods(runs: tuple[str, ...], top_k: int, figure: str) -> None:
    """RUNS: method=analyze-run pairs, dot-all among them."""
    pairs = _pairs(runs, "RUNS")
    if agreement.REFERENCE not in pairs:
        raise click.UsageError(f"give {agreement.REFERENCE}=<analyze run> among RUNS")
    click.echo(methods_report(pairs, top_k, figure))


@main.command()
@click.argument("run_ids", nargs=-1, required=True)
@click.option(
    "--method", "added", multiple=True, metavar="NAME=RUN",
    help="also score a method added after the study (its main or influence run, same "
    "fine-tuning) against the same retrainings; repeatable",
)  # fmt: skip
@click.option("--reference", default=agreement.REFERENCE, show_default=True,
              help="lds: the method every other is paired against")  # fmt: skip
def retraining(run_ids: tuple[str, ...], added: tuple[str, ...], reference: str) -> None:
    reports = {
        "lds": lambda run_id, methods: lds_report(run_id, methods, reference),
        "leave-language-out": leave_language_out_report,
    }
    for run_id in run_ids:
        experiment = _config(run_id).experiment
        if experiment not in reports:
            raise click.UsageError(
                f"run {run_id} is experiment={experiment!r}, not {' or '.join(reports)}"
            )
        text = reports[experiment](run_id, _pairs(added, "--method"))
        click.echo(text + "\n\n" + cost(run_id) + "\n")


@main.command("bundle")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data-path", default="", help="where the study's data is on this machine")
def from_bundle(root: Path, data_path: str) -> None:
    """ROOT: a study bundle (studies/<name>); its tables, from the bundle alone."""
    click.echo(bundle_report(root, data_path))


def bundle_report(root: Path, data_path: str = "") -> str:
    config, tables = study_tables.compute(root, data_path)
    label = f"Study bundle `{Path(root).name}`"
    texts = {
        "lds": lambda: lds_text(tables, label, agreement.REFERENCE),
        "language-datamodel": lambda: language_datamodel_text(tables, label),
        "leave-language-out": lambda: leave_language_out_text(tables, label, config.retrain_seeds),
    }
    return texts[config.experiment]()


@main.command("figure")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data-path", default="", help="where the study's data is on this machine")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="the PNG to write")  # fmt: skip
def figure(root: Path, data_path: str, out: Path) -> None:
    """ROOT: a language-datamodel bundle; its figure (beta(L, X) and each attribution's
    agreement with it, as the experiment run logs it), from the bundle alone."""
    experiment_name = study_tables.experiment_config(root).experiment
    if experiment_name != "language-datamodel":
        raise click.UsageError(f"{root} is experiment={experiment_name}, not language-datamodel")
    _, tables = study_tables.compute(root, data_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots.language_truth_figure(tables).savefig(out, dpi=110, bbox_inches="tight")
    click.echo(f"wrote {out}")


@main.command("paired")
@click.argument("reference", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("other", type=click.Path(exists=True, file_okay=False, path_type=Path))
def paired(reference: Path, other: Path) -> None:
    """Two leave-language-out bundles of one design (e.g. fp32 and bf16): per (L, X), the
    change without X in OTHER minus that in REFERENCE, paired by training seed and test
    example, with the study's own two-level intervals and Holm; and the full retrainings'
    accuracy per seed."""
    click.echo(paired_report(reference, other))


def paired_report(reference: Path, other: Path) -> str:
    config = study_tables.experiment_config(reference)
    if config.experiment != "leave-language-out":
        raise click.UsageError(
            f"{reference} is experiment={config.experiment}, not leave-language-out"
        )
    ref, oth = _ablation_outputs(reference, config), _ablation_outputs(other, config)
    test = pd.read_parquet(Path(reference) / "manifests" / "test.parquet")
    if (
        pd.read_parquet(Path(other) / "manifests" / "test.parquet")["id"].tolist()
        != test["id"].tolist()
    ):
        raise click.UsageError(
            "the two bundles test different examples; pair bundles of one design"
        )
    languages = list(ref["removed"])
    differences = {}
    for column in ("loss", "correct"):
        a = ablation.deltas(ref["base"], ref["removed"], column)
        b = ablation.deltas(oth["base"], oth["removed"], column)
        differences[column] = {x: b[x] - a[x] for x in languages}
    table = ablation.effect_table(differences["loss"], differences["correct"],
                                  test["language"].to_numpy(), seed=config.seed)  # fmt: skip
    table["cell"] = interval(table, "delta_loss", "ci_low", "ci_high") + table["p_holm"].map(
        lambda p: " *" if p < 0.05 else ""
    )
    accuracy = pd.DataFrame({
        "training seed": range(len(ref["base"])),
        Path(reference).name: [f["correct"].mean() for f in ref["base"]],
        Path(other).name: [f["correct"].mean() for f in oth["base"]],
    })  # fmt: skip
    gaps = accuracy.iloc[:, 2] - accuracy.iloc[:, 1]  # seeds are the unit
    low, high = stats.t.interval(0.95, len(gaps) - 1, loc=gaps.mean(), scale=stats.sem(gaps))
    seeds_line = (
        f"Accuracy, {Path(other).name} minus {Path(reference).name}, paired by seed: "
        f"{gaps.mean():+.3f} [{low:+.3f}, {high:+.3f}] (95% t interval over "
        f"{len(gaps)} seeds); seed spread of {Path(reference).name}: "
        f"{accuracy.iloc[:, 1].min():.3f}-{accuracy.iloc[:, 1].max():.3f}"
    )
    return "\n\n".join([
        f"`{Path(other).name}` minus `{Path(reference).name}`: change of L's mean test loss "
        "without X (rows L, columns X; paired by seed and test example; 95% CI; * Holm p < 0.05):",
        markdown(matrix(table, "cell", "test_language", "train_language")),
        "Full retrainings' test accuracy per training seed:", markdown(accuracy), seeds_line,
    ])  # fmt: skip


def _ablation_outputs(root: Path, config) -> dict:
    """The last epoch's outputs of a leave-language-out bundle's retrainings, by seed."""
    found = bundle.read(Path(root))
    by_name = {r.record["name"]: r for r in found.of_role("retraining")}
    epoch = artifacts.predictions(f"epoch-{config.epochs}")

    def outputs(name: str) -> pd.DataFrame:
        return pd.read_parquet(by_name[name].artifacts / epoch)

    seeds = range(config.retrain_seeds)
    languages = list(pd.unique(found.train["language"]))
    return {
        "base": [outputs(f"full:seed-{s}") for s in seeds],
        "removed": {x: [outputs(f"without-{x}:seed-{s}") for s in seeds] for x in languages},
    }


if __name__ == "__main__":
    try:
        main(standalone_mode=False)
    except click.ClickException as err:
        err.show()
        raise SystemExit(err.exit_code) from err
    except XlinfluenceError as err:  # a bad run ID or method name: one line, no traceback
        raise SystemExit(f"Error: {err}") from err
