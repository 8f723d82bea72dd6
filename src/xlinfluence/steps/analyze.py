"""The analyze step: language shares of the top-k proponents and opponents, per checkpoint.

Reads the influence run's scores and, through its manifest, the train run's example
manifests; logs tables (Parquet + CSV), heatmaps, curves and per-language metrics.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from xlinfluence import artifacts, tracking
from xlinfluence.analysis import (
    OPPONENT,
    PROPONENT,
    aggregate_translation_share,
    language_shares,
    self_shares,
    share_matrix,
    topk_table,
    translation_share_per_example,
)
from xlinfluence.analysis.plots import self_share_curve, share_heatmap, translation_share_bars
from xlinfluence.config import AnalyzeConfig, InfluenceConfig
from xlinfluence.errors import ArtifactError, ConfigError
from xlinfluence.steps.upstream import train_manifests


def run(config: AnalyzeConfig) -> str:
    tracking.fetch_run(config.influence_run_id, step=InfluenceConfig.step)
    manifest = artifacts.read_json(
        tracking.download(config.influence_run_id, artifacts.INFLUENCE_MANIFEST)
    )
    train_run_id = manifest.get("train_run_id", "")
    tracking.fetch_run(train_run_id, step="train")
    train, test = train_manifests(train_run_id)
    _check_ids(manifest, train, test)
    table, names = _topk(config, manifest, train, test)
    shares = language_shares(table, train_languages=list(pd.unique(train["language"])))
    own = self_shares(shares)
    per_example = translation_share_per_example(table, train)
    translation = aggregate_translation_share(per_example)

    with tracking.step_run(config) as run, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / artifacts.ANALYSIS
        out.mkdir()
        tables = {
            "shares": shares,
            "self_shares": own,
            "translation_share": translation,
            "translation_share_per_example": per_example,
        }
        for name, frame in tables.items():
            frame.to_parquet(out / f"{name}.parquet", index=False)
            frame.to_csv(out / f"{name}.csv", index=False)
        run.log_artifacts(out, artifacts.ANALYSIS)
        checkpoints = [name for name in names if name != artifacts.TOTAL]
        _log_metrics(run, own, translation, checkpoints)
        for name in [*checkpoints, artifacts.TOTAL]:
            for kind in (PROPONENT, OPPONENT):
                figure = share_heatmap(
                    share_matrix(shares, name, kind),
                    f"Share of top-{config.top_k} {kind}s by training language ({name})",
                )
                run.log_figure(figure, f"{artifacts.ANALYSIS}/figures/heatmap_{kind}_{name}.png")
        run.log_figure(self_share_curve(own), f"{artifacts.ANALYSIS}/figures/self_share.png")
        run.log_figure(
            translation_share_bars(translation),
            f"{artifacts.ANALYSIS}/figures/translation_share.png",
        )
        return run.run_id or ""


def _log_metrics(run, own: pd.DataFrame, translation: pd.DataFrame, checkpoints: list[str]):
    """`self_share.<lang>` etc. with step = checkpoint position; `total_*` for the sum."""
    step_of = {name: i for i, name in enumerate(checkpoints)}
    proponents = own[own["kind"] == PROPONENT]
    for frame, columns in (
        (proponents, ("self_share", "cross_share")),
        (translation, ("translation_share",)),
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


def _topk(config: AnalyzeConfig, manifest: dict, train, test) -> tuple[pd.DataFrame, list[str]]:
    """The top-k table at this step's k: from the full scores, or the run's kept top-k."""
    if manifest.get("has_full_scores", True):
        scores = artifacts.load_scores(
            tracking.download(config.influence_run_id, artifacts.SCORES),
            n_test=len(test),
            n_train=len(train),
        )
        return topk_table(scores, train, test, config.top_k), list(scores)
    kept = int(manifest.get("top_k", 0))
    if config.top_k > kept:
        raise ConfigError(
            f"top_k={config.top_k}, but influence run {config.influence_run_id} kept only the "
            f"top {kept} (store_scores=false); lower top_k or re-run influence with "
            "store_scores=true or a larger top_k."
        )
    table = pd.read_parquet(tracking.download(config.influence_run_id, artifacts.TOPK))
    return table[table["rank"] < config.top_k].reset_index(drop=True), manifest["score_names"]


def _check_ids(manifest: dict, train: pd.DataFrame, test: pd.DataFrame) -> None:
    if (
        manifest.get("train_ids") != train["id"].tolist()
        or manifest.get("test_ids") != test["id"].tolist()
    ):
        raise ArtifactError(
            "the influence run's example ids do not match its train run's manifests; "
            "the artifacts were altered or mixed up: re-run the influence step."
        )
