"""The analyze step: language shares of the top-k proponents and opponents, per checkpoint.

Reads the influence run's scores and, through its manifest, the train run's example
manifests; logs tables (Parquet + CSV), heatmaps, curves and per-language metrics.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd

from xlinfluence import artifacts, explain, tracking
from xlinfluence.analysis import (
    OPPONENT,
    PROPONENT,
    aggregate_translation_share,
    distance,
    example_shares,
    influence_mass,
    language_shares,
    report,
    self_share_intervals,
    self_shares,
    share_intervals,
    share_matrix,
    topk_table,
    translation_influence,
    translation_share_intervals,
    translation_share_per_example,
)
from xlinfluence.analysis.dynamics import self_share_change
from xlinfluence.analysis.null import with_null
from xlinfluence.analysis.paired import translation_excess
from xlinfluence.analysis.plots import (
    self_share_curve,
    share_bars,
    share_heatmap,
    translation_share_bars,
)
from xlinfluence.analysis.translation import (
    CONTROL_SHARE,
    TRANSLATION_SHARE,
    control_share_per_example,
)
from xlinfluence.config import AnalyzeConfig
from xlinfluence.errors import ConfigError
from xlinfluence.steps.upstream import InfluenceRun

log = logging.getLogger(__name__)


def run(config: AnalyzeConfig) -> str:
    influence = InfluenceRun.fetch(config.influence_run_id)
    manifest, train, test = influence.manifest, influence.train, influence.test
    train_run_id = influence.train_run.run_id
    table, names, scores = _topk(config, influence)
    train_languages = list(pd.unique(train["language"]))
    per_example = example_shares(table, train_languages=train_languages)
    shares = share_intervals(language_shares(table, train_languages=train_languages), per_example)
    shares = with_null(shares, per_example, train, test, config.top_k)
    own = self_share_intervals(self_shares(shares), per_example)
    translation_per_example = translation_share_per_example(table, train)
    translation_per_example[CONTROL_SHARE] = control_share_per_example(table, train).to_numpy()
    translation = translation_share_intervals(
        aggregate_translation_share(translation_per_example), translation_per_example
    )
    tables = {
        "shares": shares,
        "example_shares": per_example,
        "self_shares": own,
        "translation_share": translation,
        "translation_share_per_example": translation_per_example,
        "translation_excess": translation_excess(translation_per_example),
    }
    checkpoints = [name for name in names if name != artifacts.TOTAL]
    if len(checkpoints) >= 2:  # paired change of the own share, first to last checkpoint
        tables["self_share_change"] = self_share_change(
            per_example, checkpoints[0], checkpoints[-1]
        )
    if scores is not None:  # these need every score, not only the top-k
        tables["influence_mass"] = influence_mass(scores, train, test)
        tables["translation_influence_per_example"] = translation_influence(table, train, scores)
    figures = {
        f"heatmap_{kind}_{name}": share_heatmap(
            share_matrix(shares, name, kind),
            f"Share of top-{config.top_k} {kind}s by training language ({name})",
        )
        for name in [*checkpoints, artifacts.TOTAL]
        for kind in (PROPONENT, OPPONENT)
    }
    tables |= _language_distance(shares, figures)
    figures["share_bars"] = share_bars(shares)
    figures["self_share"] = self_share_curve(own, bands=True)
    figures["translation_share"] = translation_share_bars(translation)

    with tracking.step_run(config) as run, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / artifacts.ANALYSIS
        out.mkdir()
        for name, frame in tables.items():
            frame.to_parquet(out / f"{name}.parquet", index=False)
            frame.to_csv(out / f"{name}.csv", index=False)
        (out / "report.html").write_text(
            report.render(
                title=f"xlinfluence analysis {run.run_id or ''}",
                lineage={
                    "analyze run": run.run_id or "",
                    "influence run": config.influence_run_id,
                    "train run": train_run_id,
                    "code version": tracking.code_version(),
                },
                params=config.to_params()
                | {f"influence.{k}": str(v) for k, v in manifest.items() if k in _SHOWN}
                | {"languages": ", ".join(train_languages)},
                figures=figures,
                tables=tables,
                examples=explain.ReportExamples.of(train_run_id, train, test, table),
                top_k=config.top_k,
            )
        )
        run.log_artifacts(out, artifacts.ANALYSIS)
        if "distance_correlations" in tables:
            run.log_metrics(
                {
                    f"distance_rho.{r.distance}": r.spearman_rho
                    for r in tables["distance_correlations"].itertuples()
                }
                | {
                    f"distance_p.{r.distance}": r.mantel_p
                    for r in tables["distance_correlations"].itertuples()
                }
            )
        for name in ("shares", "self_shares", "translation_share"):  # rendered in the UI
            run.log_table(tables[name], f"{artifacts.ANALYSIS}/tables/{name}.json")
        _log_metrics(run, own, translation, checkpoints)
        for name, figure in figures.items():
            run.log_figure(figure, f"{artifacts.ANALYSIS}/figures/{name}.png")
        return run.run_id or ""


_SHOWN = ("params", "precision", "method", "top_k")


def _language_distance(shares: pd.DataFrame, figures: dict) -> dict[str, pd.DataFrame]:
    """Cross-lingual shares against URIEL distances and script (analysis/distance.py), when
    at least three languages are both trained and tested and URIEL knows them."""
    matrix = share_matrix(shares, artifacts.TOTAL, PROPONENT)
    try:
        pairs = distance.pairs_table(matrix)
        correlations = distance.correlations(matrix)
    except ConfigError as err:  # e.g. languages URIEL does not know
        log.info("no language-distance analysis: %s", err)
        return {}
    if correlations.empty:
        return {}
    figures["share_vs_distance"] = distance.scatter(pairs, correlations)
    return {"language_distance": pairs, "distance_correlations": correlations}


def _log_metrics(run, own: pd.DataFrame, translation: pd.DataFrame, checkpoints: list[str]):
    """`self_share.<lang>` etc. with step = checkpoint position; `total_*` for the sum."""
    step_of = {name: i for i, name in enumerate(checkpoints)}
    proponents = own[own["kind"] == PROPONENT]
    for frame, columns in (
        (proponents, ("self_share", "cross_share")),
        (translation, (TRANSLATION_SHARE, CONTROL_SHARE)),
    ):
        for row in frame.itertuples(index=False):
            values = {
                f"{c}.{row.test_language}": getattr(row, c)
                for c in columns
                if pd.notna(getattr(row, c))
            }
            if row.checkpoint == artifacts.TOTAL:
                run.log_metrics({f"total_{k}": v for k, v in values.items()})
            else:
                run.log_metrics(values, step=step_of[row.checkpoint])


def _topk(config: AnalyzeConfig, influence: InfluenceRun):
    """(top-k table at this step's k, score names, full scores or None if only top-k kept)."""
    if influence.has_full_scores:
        scores = influence.scores()
        return (
            topk_table(scores, influence.train, influence.test, config.top_k),
            list(scores),
            scores,
        )
    kept = influence.kept_top_k
    if config.top_k > kept:
        raise ConfigError(
            f"top_k={config.top_k}, but influence run {config.influence_run_id} kept only the "
            f"top {kept} (store_scores=false); lower top_k or re-run influence with "
            "store_scores=true or a larger top_k."
        )
    table = influence.topk()
    kept_table = table[table["rank"] < config.top_k].reset_index(drop=True)
    return kept_table, influence.manifest["score_names"], None
