"""Experiment drivers: a parent run with one nested `main` run per setting, compared."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from xlinfluence import tracking

from .conftest import SETTING, run_cli, run_step

pytestmark = pytest.mark.slow


def _experiment(*args: str) -> tuple[str, dict[str, str]]:
    """Run main with an experiment; (its run ID, setting name -> setting main run ID)."""
    before = {r.info.run_id for r in MlflowClient().search_runs(["0"])}
    run_step("main", *SETTING, *args)
    new = [r for r in MlflowClient().search_runs(["0"]) if r.info.run_id not in before]
    parent = next(r for r in new if tracking.PARENT_TAG not in r.data.tags)
    assert tracking.run_params(parent)["experiment"]
    prefix = "xlinfluence.setting."
    settings = {k[len(prefix) :]: v for k, v in parent.data.tags.items() if k.startswith(prefix)}
    return parent.info.run_id, settings


def _comparison(run_id: str) -> pd.DataFrame:
    return pd.read_csv(tracking.download(run_id, "experiment/comparison.csv"))


def test_zero_shot_compares_unseen_with_seen(main_runs):
    parent, settings = _experiment("--experiment", "zero-shot", "--experiment-values", "ru")
    assert set(settings) == {"all-seen", "heldout-ru"}
    assert settings["all-seen"] == main_runs["main"]  # the finished pipeline is reused
    client = MlflowClient()
    assert client.get_run(settings["heldout-ru"]).data.tags[tracking.PARENT_TAG] == parent
    for run_id in settings.values():
        assert client.get_run(run_id).info.status == "FINISHED"
    heldout_train = client.get_run(settings["heldout-ru"]).data.tags["xlinfluence.train_run_id"]
    assert client.get_run(heldout_train).data.params["heldout_language"] == "ru"
    table = _comparison(parent).set_index("train_language")
    assert (table["test_language"] == "ru").all()
    assert list(table.index) == ["en", "de", "ru"]
    assert table.loc["ru", "unseen_share"] == 0.0  # no ru training data when held out
    assert table["unseen_share"].sum() == pytest.approx(1.0)
    assert table["seen_share"].sum() == pytest.approx(1.0)
    assert table[["seen_accuracy", "unseen_accuracy"]].notna().all().all()
    figures = {a.path for a in client.list_artifacts(parent, "experiment")}
    assert "experiment/comparison.png" in figures


def test_seeds_report_mean_and_interval_per_language(main_runs):
    parent, settings = _experiment("--experiment", "seeds", "--experiment-values", "3,4")
    assert set(settings) == {"seed-3", "seed-4"}
    table = _comparison(parent)
    assert set(table["test_language"]) == {"en", "de", "ru"}
    assert (table["n_seeds"] == 2).all()
    assert ((table["ci_low"] <= table["self_share"])
            & (table["self_share"] <= table["ci_high"])).all()  # fmt: skip
    pooled = pd.read_csv(tracking.download(parent, "experiment/pooled_shares.csv"))
    total = pooled[(pooled["checkpoint"] == "total") & (pooled["kind"] == "proponent")]
    assert len(total) == 3 * 3  # every test language x training language
    assert (total["n_seeds"] == 2).all()
    assert total.groupby("test_language")["share"].sum().round(6).eq(1).all()


def test_imbalance_needs_one_base_count(main_runs):
    code, output = run_cli("main", *SETTING, "--experiment", "imbalance")
    assert code == 1
    assert "imbalance sets per-language counts itself" in output
