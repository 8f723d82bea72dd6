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


def test_methods_compare_attributions_of_one_fine_tuning(main_runs):
    parent, settings = _experiment("--experiment", "methods")
    client = MlflowClient()
    trains = {client.get_run(m).data.tags["xlinfluence.train_run_id"] for m in settings.values()}
    assert trains == {main_runs["train"]}  # one fine-tuning, every method reads it
    table = _comparison(parent).set_index("method")
    methods = {"dot-all", "cosine", "last-layer", "embeddings-only", "no-embeddings"}
    assert methods | {"representation", "dot-all@epoch-1", "dot-all@epoch-2"} <= set(table.index)
    reference = table.loc["dot-all"]
    assert reference["spearman_rho"] == pytest.approx(1.0) and reference["topk_overlap"] == 1.0
    assert table["spearman_rho"].between(-1, 1).all() and table["topk_overlap"].between(0, 1).all()
    own = pd.read_csv(tracking.download(parent, "experiment/own_shares.csv"))
    assert set(own["method"]) == set(table.index)


def test_counterfactual_retrains_without_tracins_picks_and_random_controls(main_runs):
    parent, settings = _experiment(
        "--experiment", "counterfactual", "--experiment-values", "ru:de",
        "--removal-k", "1", "--control-draws", "2",
    )  # fmt: skip
    assert settings["base"] == main_runs["main"]  # the finished pipeline is reused
    assert set(settings) == {"base", "de-to-ru:tracin", "de-to-ru:random-0", "de-to-ru:random-1"}
    client = MlflowClient()
    removed = {}
    for name in ("de-to-ru:tracin", "de-to-ru:random-0", "de-to-ru:random-1"):
        run = client.get_run(settings[name])
        assert tracking.run_params(run)["remove"].startswith(name.split(":")[1].split("-")[0] + ":")
        assert run.data.metrics["n_removed"] == 1
        removed[name] = set(
            pd.read_json(tracking.download(settings[name], "data/removed.json"), typ="series")
        )
    assert removed["de-to-ru:tracin"].isdisjoint(removed["de-to-ru:random-0"])
    table = _comparison(parent)
    row = table.iloc[0]
    assert (row["test_language"], row["train_language"], row["k"]) == ("ru", "de", 1)
    assert row["n_control"] == 2 and 0 < row["p_control"] <= 1
    raw = pd.read_csv(tracking.download(parent, "experiment/retrainings.csv"))
    assert len(raw) == 3 and (raw["seconds"] > 0).all()


def test_counterfactual_refuses_an_impossible_control_before_retraining(main_runs):
    before = len(MlflowClient().search_runs(["0"]))
    code, output = run_cli(
        "main", *SETTING, "--experiment", "counterfactual", "--experiment-values", "ru:de",
        "--removal-k", "16",
    )  # fmt: skip
    assert code != 0
    assert "lower k" in output.strip().splitlines()[-1]
    runs = MlflowClient().search_runs(["0"])
    assert not [r for r in runs[: len(runs) - before] if tracking.run_params(r).get("remove")]
