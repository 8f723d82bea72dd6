"""The entry points end to end, through MLflow Projects, on a small built-in-corpus setting.

One `main` run (module fixture) feeds every test here: artifacts and metrics as the
contract says, scores equal to an independent per-example autograd reference, reuse on
a second `main`, and clear errors for bad run IDs.
"""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from xlinfluence import artifacts, modeling, tracking
from xlinfluence.data import schema
from xlinfluence.data.batching import TokenizedExamples, make_loader
from xlinfluence.steps.upstream import train_manifests
from xlinfluence.tracin.reference import reference_scores

from .conftest import SETTING, run_cli, run_step

pytestmark = pytest.mark.slow


def test_main_leaves_four_finished_runs_with_lineage(main_runs):
    client = MlflowClient()
    runs = {step: client.get_run(run_id) for step, run_id in main_runs.items()}
    assert {step: r.info.status for step, r in runs.items()} == dict.fromkeys(runs, "FINISHED")
    for step in ("train", "influence", "analyze"):
        assert runs[step].data.tags[tracking.PARENT_TAG] == main_runs["main"]
        assert runs[step].data.tags[tracking.STEP_TAG] == step
    assert runs["influence"].data.tags[tracking.UPSTREAM_TAG] == main_runs["train"]
    assert runs["analyze"].data.tags[tracking.UPSTREAM_TAG] == main_runs["influence"]
    headline = runs["main"].data.metrics  # copied from the children, for side-by-side views
    assert headline["accuracy.en"] == runs["train"].data.metrics["accuracy.en"]
    assert headline["total_self_share.en"] == runs["analyze"].data.metrics["total_self_share.en"]


def test_train_run_logs_manifests_checkpoints_and_metrics(main_runs):
    run_id = main_runs["train"]
    train, test = train_manifests(run_id)
    assert train["language"].value_counts().to_dict() == {"en": 24, "de": 16, "ru": 16}
    assert test["language"].value_counts().to_dict() == {"en": 4, "de": 4, "ru": 4}
    index = artifacts.load_checkpoint_index(tracking.download(run_id, artifacts.CHECKPOINT_INDEX))
    assert [c["name"] for c in index] == ["epoch-1", "epoch-2"]
    assert all(c["learning_rate"] > 0 for c in index)
    checkpoint = tracking.download(run_id, f"{artifacts.CHECKPOINTS}/epoch-2")
    assert (checkpoint / "model.safetensors").is_file()
    metrics = MlflowClient().get_metric_history(run_id, "accuracy.de")
    assert [m.step for m in metrics] == [1, 2]


def test_training_again_gives_identical_checkpoints(main_runs):
    """Same parameters and seed, same bytes: settings differ by their parameters, not by noise."""
    train_options = SETTING[: SETTING.index("--influence-batch-size")] + ["--seed", "3"]
    again = run_step("train", *train_options)
    assert again != main_runs["train"]
    try:
        for name in ("epoch-1", "epoch-2"):
            files = [
                tracking.download(run_id, f"{artifacts.CHECKPOINTS}/{name}")
                for run_id in (main_runs["train"], again)
            ]
            for file in ("model.safetensors", "tokenizer.json"):
                assert (files[0] / file).read_bytes() == (files[1] / file).read_bytes(), file
    finally:  # main would reuse it (newest equal run) and so recompute influence and analyze
        MlflowClient().delete_run(again)


def test_influence_scores_equal_the_per_example_reference(main_runs):
    """The whole step (tokenisation, bucketing, lr weighting) against float64 autograd."""
    train_id, influence_id = main_runs["train"], main_runs["influence"]
    train, test = train_manifests(train_id)
    scores = artifacts.load_scores(
        tracking.download(influence_id, artifacts.SCORES), n_test=len(test), n_train=len(train)
    )
    index = artifacts.load_checkpoint_index(tracking.download(train_id, artifacts.CHECKPOINT_INDEX))
    assert set(scores) == {"epoch-1", "epoch-2", artifacts.TOTAL}
    expected_total = torch.zeros(len(test), len(train), dtype=torch.float64)
    for checkpoint in index:
        model, tokenizer = modeling.load_checkpoint(
            tracking.download(train_id, f"{artifacts.CHECKPOINTS}/{checkpoint['name']}")
        )
        reference = reference_scores(
            copy.deepcopy(model).double(),
            make_loader(TokenizedExamples(train, tokenizer, 128), 7),
            make_loader(TokenizedExamples(test, tokenizer, 128), 5),
            n_train=len(train),
            n_test=len(test),
        )
        got = scores[checkpoint["name"]].double()
        assert (got - reference).abs().max() / reference.abs().max() < 1e-5
        expected_total += checkpoint["learning_rate"] * reference
    total = scores[artifacts.TOTAL].double()
    assert (total - expected_total).abs().max() / expected_total.abs().max() < 1e-5


def test_influence_logs_topk_and_manifest(main_runs):
    influence_id = main_runs["influence"]
    manifest = artifacts.read_json(tracking.download(influence_id, artifacts.INFLUENCE_MANIFEST))
    train, test = train_manifests(main_runs["train"])
    assert manifest["train_run_id"] == main_runs["train"]
    assert manifest["train_ids"] == train["id"].tolist()
    assert manifest["test_ids"] == test["id"].tolist()

    topk = pd.read_parquet(tracking.download(influence_id, artifacts.TOPK))
    per_example = topk.groupby(["checkpoint", "test_index", "kind"]).size()
    assert (per_example == 5).all()
    assert len(per_example) == 3 * len(test) * 2  # 2 checkpoints + total, x 2 kinds


def test_analyze_logs_tables_figures_and_self_share_metrics(main_runs):
    run_id = main_runs["analyze"]
    client = MlflowClient()
    names = {a.path for a in client.list_artifacts(run_id, artifacts.ANALYSIS)}
    for table in ("shares", "self_shares", "translation_share", "translation_excess"):
        assert f"{artifacts.ANALYSIS}/{table}.parquet" in names
        assert f"{artifacts.ANALYSIS}/{table}.csv" in names
    figures = {a.path for a in client.list_artifacts(run_id, f"{artifacts.ANALYSIS}/figures")}
    assert f"{artifacts.ANALYSIS}/figures/self_share.png" in figures
    assert f"{artifacts.ANALYSIS}/figures/heatmap_proponent_total.png" in figures
    assert f"{artifacts.ANALYSIS}/figures/share_bars.png" in figures
    assert f"{artifacts.ANALYSIS}/report.html" in names
    assert f"{artifacts.ANALYSIS}/influence_mass.parquet" in names
    shares = pd.read_parquet(tracking.download(run_id, f"{artifacts.ANALYSIS}/shares.parquet"))
    assert (shares["ci_low"] <= shares["share"] + 1e-12).all()
    assert (shares["share"] <= shares["ci_high"] + 1e-12).all()
    history = client.get_metric_history(run_id, "self_share.en")
    assert [m.step for m in history] == [0, 1]
    assert all(0.0 <= m.value <= 1.0 for m in history)
    assert "total_self_share.en" in client.get_run(run_id).data.metrics


def test_second_main_reuses_every_child_run(main_runs):
    before = {r.info.run_id for r in MlflowClient().search_runs(["0"])}
    code, output = run_cli("main", *SETTING)
    assert code == 0, output
    after = MlflowClient().search_runs(["0"])
    new = [r for r in after if r.info.run_id not in before]
    assert [r.data.tags[tracking.STEP_TAG] for r in new] == ["main"]
    tags = new[0].data.tags
    for step in ("train", "influence", "analyze"):
        assert tags[f"xlinfluence.{step}_run_id"] == main_runs[step]
        assert tags[f"{tracking.REUSED_TAG}.{step}"] == main_runs[step]


@pytest.mark.parametrize(
    "args, message",
    [
        (["influence", "--train-run-id", "0123456789abcdef"], "not an MLflow run ID"),
        (["influence", "--train-run-id", "0123456789abcdef" * 2], "does not exist"),
        (["influence"], "train_run_id='': not an MLflow run ID"),
        (["analyze", "--influence-run-id", "{train}"], "is a train run, not a 'influence' run"),
        (["influence", "--train-run-id", "{analyze}"], "is a analyze run, not a 'train' run"),
        (["influence", "--train-run-id", "{train}", "--top-k", "1000"], "top_k=1000"),
        (
            ["influence", "--train-run-id", "{train}", "--top-k", "5", "--checkpoints", "epoch-9"],
            "epoch-9",
        ),
    ],
)
def test_bad_upstream_runs_fail_with_a_clear_message(main_runs, args, message):
    args = [a.format(**main_runs) for a in args]
    code, output = run_cli(*args)
    assert code == 1
    assert message in output
    assert "Traceback" not in output


def test_unfinished_upstream_run_is_refused(main_runs):
    client = MlflowClient()
    run = client.create_run("0", tags={tracking.STEP_TAG: "train"})
    code, output = run_cli("influence", "--train-run-id", run.info.run_id)
    assert code == 1
    assert "RUNNING, not FINISHED" in output


def test_corrupt_scores_artifact_is_reported(main_runs, tmp_path):
    path = tmp_path / "scores.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(artifacts.ArtifactError, match="corrupt"):
        artifacts.load_scores(path, n_test=1, n_train=1)


def test_two_processes_give_the_one_process_scores(main_runs):
    """`accelerate launch` with configs/cpu.yaml: 2 gloo processes, one run, same tensors."""
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "cpu.yaml"
    run_id = run_step(
        "influence", "--train-run-id", main_runs["train"], "--top-k", "5",
        "--batch-size", "16", "--method", "dot", "--accelerate-config", str(config),
    )  # fmt: skip
    try:
        run = MlflowClient().get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags[tracking.STEP_TAG] == "influence"
        assert run.data.metrics["num_processes"] == 2
        train, test = train_manifests(main_runs["train"])
        shape = dict(n_test=len(test), n_train=len(train))
        two = artifacts.load_scores(tracking.download(run_id, artifacts.SCORES), **shape)
        one = artifacts.load_scores(
            tracking.download(main_runs["influence"], artifacts.SCORES), **shape
        )
        for name in one:
            torch.testing.assert_close(
                two[name], one[name], rtol=1e-5, atol=1e-7 * one[name].abs().max()
            )
    finally:  # main would reuse it (newest equal run) and so recompute analyze
        MlflowClient().delete_run(run_id)


def test_the_final_checkpoint_is_an_mlflow_model_that_predicts_as_the_checkpoint(main_runs):
    import mlflow

    train_run = MlflowClient().get_run(main_runs["train"])
    model = mlflow.pyfunc.load_model(train_run.data.tags[tracking.MODEL_URI_TAG])
    assert [i["type"] for i in model.metadata.get_input_schema().to_dict()] == ["string"]
    _, test = train_manifests(main_runs["train"])
    texts = test[schema.TEXT].head(6).tolist()
    predicted = model.predict(texts)
    labels = artifacts.read_json(tracking.download(main_runs["train"], artifacts.LABELS))
    index = artifacts.load_checkpoint_index(
        tracking.download(main_runs["train"], artifacts.CHECKPOINT_INDEX)
    )
    directory = tracking.download(main_runs["train"], f"checkpoints/{index[-1]['name']}")
    checkpoint, tokenizer = modeling.load_checkpoint(directory)
    with torch.no_grad():
        logits = checkpoint(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    assert predicted["label"].tolist() == [labels[i] for i in logits.argmax(-1).tolist()]


def test_influence_and_analyze_runs_record_what_they_read(main_runs):
    client = MlflowClient()

    def inputs(step):
        return {
            {t.key: t.value for t in given.tags}["mlflow.data.context"]: given.dataset
            for given in client.get_run(main_runs[step]).inputs.dataset_inputs
        }

    trained, scored, analysed = inputs("train"), inputs("influence"), inputs("analyze")
    assert scored["attributed training examples"].digest == trained["training"].digest
    assert scored["attributed test examples"].digest == trained["testing"].digest
    assert scored["checkpoints scored"].digest == main_runs["train"]
    assert analysed["scores analysed"].digest == main_runs["influence"]
    assert "/checkpoints" in scored["checkpoints scored"].source
