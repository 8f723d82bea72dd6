"""Experiment drivers: a parent run with one nested `main` run per setting, compared."""

from __future__ import annotations

import dataclasses
import os

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from xlinfluence import artifacts, tracking
from xlinfluence.config import TrainConfig
from xlinfluence.config.main import MainConfig
from xlinfluence.errors import XlinfluenceError
from xlinfluence.experiments import attributions, lds
from xlinfluence.steps import retrain
from xlinfluence.steps.main import find_project

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
    cost = pd.read_csv(tracking.download(parent, "experiment/cost.csv")).set_index("method")
    assert set(cost.index) == set(settings)  # every method's influence run, timed
    assert (cost["influence_seconds"] > 0).all() and (cost["epoch_seconds"] > 0).all()
    epoch = client.get_metric_history(main_runs["train"], "epoch_seconds")
    assert cost["epoch_seconds"].iloc[0] == pytest.approx(np.mean([m.value for m in epoch]))


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
    assert row["n_control"] == 2 and pd.isna(row["p_control"])  # too few draws for a p
    assert "2 control draws cannot reach" in row["verdict"]
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


def test_lds_scores_every_attribution_against_subset_retraining_and_resumes(main_runs):
    args = ["--experiment", "lds", "--experiment-values", "dot-all", "--retrain-seeds", "2"]
    parent, settings = _experiment(*args, "--subsets", "3")
    assert settings["dot-all"] == main_runs["main"]  # the finished pipeline is reused
    retrainings = {n: r for n, r in settings.items() if n.startswith("subset-")}
    assert set(retrainings) == {f"subset-{m}:seed-{s}" for m in range(3) for s in range(2)}
    client = MlflowClient()
    full = client.get_run(main_runs["train"])
    cheap = client.get_run(retrainings["subset-0:seed-1"])
    params = tracking.run_params(cheap)
    assert (params["remove"], params["train_seed"], params["save_checkpoints"]) == (
        "subset:0.5:0", "1", "false",
    )  # fmt: skip
    folders = {a.path for a in client.list_artifacts(cheap.info.run_id)}
    assert "training_state" not in folders
    assert {a.path for a in client.list_artifacts(cheap.info.run_id, "checkpoints")} == {
        "checkpoints/index.json"
    }
    assert cheap.data.metrics["n_train"] == 28  # half of en 24, de 16, ru 16
    assert cheap.data.metrics["artifact_bytes"] < full.data.metrics["artifact_bytes"] / 20
    evaluated = {a.path for a in client.list_artifacts(cheap.info.run_id, "evaluation")}
    assert evaluated == {"evaluation/epoch-2.parquet"}  # a retraining is scored at its end
    outputs = pd.read_parquet(tracking.download(cheap.info.run_id, "evaluation/epoch-2.parquet"))
    assert {"loss", "margin", "correct", "predicted"} <= set(outputs.columns)
    assert ((outputs["margin"] > 0) == outputs["correct"].astype(bool)).all()

    table = _comparison(parent)
    methods = set(table["method"])
    assert {"dot-all", "dot-all@epoch-1", "dot-all@epoch-2", "random"} <= methods
    assert {"seed-ceiling", "seed-ceiling-mean"} <= methods
    assert set(table["target"]) == {"margin", "loss"}
    assert set(table["test_language"]) == {"all", "en", "de", "ru"}
    assert table["lds"].dropna().between(-1, 1).all()
    tested = table.dropna(subset=["p_vs_reference"])
    assert (tested["p_holm"] >= tested["p_vs_reference"]).all()
    raw = pd.read_csv(tracking.download(parent, "experiment/retrainings.csv"))
    assert len(raw) == 6 and (raw["seconds"] > 0).all() and (raw["n_kept"] == 28).all()

    # a larger study resumes with the retrainings it has: only subset 3 is new
    again, more = _experiment(*args, "--subsets", "4")
    for name, run_id in retrainings.items():
        assert more[name] == run_id
    assert len(_comparison(again)) == len(table)  # same rows, now from 4 subsets
    assert (_comparison(again)["n_subsets"] == 4).all()

    # a method added to a finished study reads from its influence run alone, and is
    # judged against the same retrainings (scripts/findings_tables.py retraining --method)
    config = MainConfig()
    by_main = attributions.read(config, {"dot-all": main_runs["main"]})
    by_influence = attributions.read(config, {"dot-all": main_runs["influence"]})
    assert by_influence.base_train == by_main.base_train == main_runs["train"]
    np.testing.assert_array_equal(by_influence.scores["dot-all"], by_main.scores["dot-all"])
    study = MainConfig.from_params(tracking.run_params(tracking.fetch_run(again, step="main")))
    added = lds.recompute(study, again, {"added": main_runs["influence"]})["comparison"]
    same = added[added["method"].isin(["dot-all", "added"])].pivot_table(
        index=["target", "test_language"], columns="method", values="lds"
    )
    np.testing.assert_allclose(same["added"], same["dot-all"])


def test_leave_language_out_pairs_each_removal_with_the_full_retraining(main_runs):
    parent, settings = _experiment(
        "--experiment", "leave-language-out", "--experiment-values", "dot-all",
        "--retrain-seeds", "1",
    )  # fmt: skip
    names = {n for n in settings if ":seed-" in n}
    assert names == {"full:seed-0", "without-en:seed-0", "without-de:seed-0", "without-ru:seed-0"}
    client = MlflowClient()
    dropped = client.get_run(settings["without-de:seed-0"])
    assert tracking.run_params(dropped)["remove"] == "language:de"
    assert dropped.data.metrics["n_train"] == 40 and dropped.data.metrics["n_removed"] == 16
    table = _comparison(parent)
    assert len(table) == 9  # 3 test x 3 training languages
    assert set(table[table["is_own"]]["test_language"]) == {"en", "de", "ru"}
    assert (table["ci_low"] <= table["ci_high"]).all()
    assert table["p"].isna().all() and table["p_holm"].isna().all()  # one seed: no p
    agreement = pd.read_csv(tracking.download(parent, "experiment/agreement.csv"))
    assert set(agreement["method"]) >= {"dot-all", "random"}
    assert set(agreement["prediction"]) == {"summed", "top-k share"}
    assert (agreement["n_cells"] == 6).all()
    figures = {a.path for a in client.list_artifacts(parent, "experiment")}
    assert "experiment/comparison.png" in figures


def test_ground_truth_experiments_refuse_unknown_methods_before_any_run(main_runs):
    before = len(MlflowClient().search_runs(["0"]))
    code, output = run_cli("main", *SETTING, "--experiment", "lds", "--experiment-values", "tracin")
    assert code != 0
    assert "['tracin'] are not attribution methods" in output.strip().splitlines()[-1]
    assert len(MlflowClient().search_runs(["0"])) == before


def test_retrainings_run_in_an_experiment_named_by_the_environment(tracking_env, monkeypatch):
    """MLFLOW_EXPERIMENT_NAME, how docs/team.md names a study, must not reach the fan-out's
    asynchronous `mlflow run` children: beside the experiment ID MLflow gives them, that
    command refuses it, and every retraining of such a study failed."""
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "named-study")
    config = dataclasses.replace(
        TrainConfig(model="tiny", languages="en,de", train_per_language="8",
                    test_per_language=2, epochs=1, batch_size=8, learning_rate=1e-3),
        save_checkpoints=False,
    )  # fmt: skip
    with mlflow.start_run() as parent:
        runs = retrain.run_all({"one": config}, find_project(), workers=1)
    child = MlflowClient().get_run(runs["one"])
    assert child.info.status == "FINISHED"
    assert child.info.experiment_id == parent.info.experiment_id
    assert MlflowClient().get_experiment(child.info.experiment_id).name == "named-study"
    assert os.environ["MLFLOW_EXPERIMENT_NAME"] == "named-study"  # restored for the caller


def test_a_retraining_that_dies_before_its_entry_point_ends_failed_in_the_store(
    tracking_env, monkeypatch
):
    """MLflow creates the run before it launches `mlflow run`; if that process dies before
    the entry point starts, nothing ends the run, and the UI would show it running for good."""

    class DiedAtLaunch:  # MLflow's LocalSubmittedRun of a process that exited 2
        def __init__(self, run_id: str):
            self.run_id = run_id

        def get_status(self) -> str:
            return "FAILED"

    launched = []

    def submit_all(entries, project, experiment_id, **kwargs):
        launched.extend(MlflowClient().create_run(experiment_id).info.run_id for _ in entries)
        return [DiedAtLaunch(run_id) for run_id in launched[-len(entries) :]]

    monkeypatch.setattr(tracking, "submit_all", submit_all)
    config = TrainConfig(model="tiny", languages="en,de", train_per_language="8")
    with mlflow.start_run(), pytest.raises(XlinfluenceError, match="1 retraining"):
        retrain.run_all({"one": config}, find_project(), workers=1)
    assert MlflowClient().get_run(launched[0]).info.status == "FAILED"


def test_a_removal_keeps_the_full_runs_step_count_unless_asked_not_to(main_runs):
    """removal_steps=fixed (the default) trains a subset on the full run's batches with the
    removed rows skipped: as many optimizer steps; proportional: fewer."""
    train_only = {"--influence-batch-size", "--top-k", "--method"}
    args = [a for i, a in enumerate(SETTING)
            if a not in train_only and SETTING[i - 1] not in train_only]  # fmt: skip
    steps = {}
    for mode in ("fixed", "proportional"):
        run_id = run_step("train", *args, "--remove", "subset:0.5:0", "--removal-steps", mode,
                          "--save-checkpoints", "false")  # fmt: skip
        steps[mode] = _last_step(run_id)
    assert steps["fixed"] == _last_step(main_runs["train"]) == 2 * 7  # 56 rows, batches of 8
    assert steps["proportional"] == 2 * 4  # 28 kept rows


def _last_step(train_run_id: str) -> int:
    index = tracking.download(train_run_id, artifacts.CHECKPOINT_INDEX)
    return artifacts.load_checkpoint_index(index)[-1]["step"]
