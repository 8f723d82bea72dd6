"""The influence step's options: kill-and-resume, top-k only, cosine, self-influence."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from xlinfluence import artifacts, modeling, tracking
from xlinfluence.data.batching import TokenizedExamples, make_loader
from xlinfluence.steps.upstream import TrainRun, train_manifests
from xlinfluence.tracin.reference import reference_scores

from .conftest import run_cli, run_step

pytestmark = pytest.mark.slow

# Small chunks so a run has many work units to be killed between.
CHUNKED = [
    "--batch-size", "1", "--train-chunk-size", "2", "--test-chunk-size", "8", "--top-k", "5",
    "--method", "dot",  # as the main run these are compared with
]  # fmt: skip


def _influence(*args: str) -> str:
    return run_step("influence", *args)


def _scores(run_id: str, train_run_id: str, name: str = artifacts.SCORES) -> dict:
    train, test = train_manifests(train_run_id)
    path = tracking.download(run_id, name)
    if name == artifacts.SCORES:
        return artifacts.load_scores(path, n_test=len(test), n_train=len(train))
    from safetensors.torch import load_file

    return load_file(str(path))


def _chunk_files(run_id: str) -> int:
    client = MlflowClient()
    return sum(
        len(client.list_artifacts(run_id, folder.path))
        for folder in client.list_artifacts(run_id, "influence/chunks")
    )


def test_killed_run_resumes_to_identical_tensors(main_runs, tracking_env, monkeypatch):
    train_id = main_runs["train"]
    uninterrupted = _influence("--train-run-id", train_id, *CHUNKED)

    before = {r.info.run_id for r in MlflowClient().search_runs(["0"])}
    process = subprocess.Popen(
        [sys.executable, "-m", "xlinfluence.cli", "influence", "--train-run-id", train_id,
         *CHUNKED],
        cwd=tracking_env, env=os.environ.copy(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    killed = None
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        new = [r for r in MlflowClient().search_runs(["0"]) if r.info.run_id not in before]
        if new and _chunk_files(new[0].info.run_id) >= 3:
            killed = new[0].info.run_id
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    assert killed, "the run finished (or never logged a chunk) before it could be killed"
    assert MlflowClient().get_run(killed).info.status == "RUNNING"  # killed, never finished
    n_partial = _chunk_files(killed)

    killed_chunks = _chunks(killed)  # what the killed process had logged
    resumed = _influence("--train-run-id", train_id, *CHUNKED, "--resume-run-id", killed)
    metrics = MlflowClient().get_run(resumed).data.metrics
    assert metrics["chunks_reused"] == n_partial
    assert 0 < metrics["chunks_reused"] < metrics["chunks_total"]
    resumed_chunks = _chunks(resumed)
    for name, tensors in killed_chunks.items():  # carried over, not recomputed
        assert all(torch.equal(resumed_chunks[name][k], v) for k, v in tensors.items()), name
    _assert_same_scores(_scores(resumed, train_id), _scores(uninterrupted, train_id))

    # The interrupted run itself also finishes when re-attached (MLFLOW_RUN_ID), reusing its chunks.
    monkeypatch.setenv("MLFLOW_RUN_ID", killed)  # as `mlflow run --run-id` does
    assert _influence("--train-run-id", train_id, *CHUNKED) == killed
    assert MlflowClient().get_run(killed).info.status == "FINISHED"
    _assert_same_scores(_scores(killed, train_id), _scores(uninterrupted, train_id))


def _chunks(run_id: str) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    folder = tracking.download(run_id, "influence/chunks")
    return {str(p.relative_to(folder)): load_file(str(p)) for p in folder.rglob("*.safetensors")}


def _assert_same_scores(got: dict, want: dict) -> None:
    """Equal up to float summation order: the killed chunks came from another process,
    and BLAS (MKL) promises bitwise-equal sums across processes only under MKL_CBWR, so
    one CI run saw a last-bit difference there. The carried-over chunks themselves are
    checked bitwise above."""
    assert want.keys() == got.keys()
    for name in want:
        scale = float(want[name].abs().max())
        difference = float((got[name] - want[name]).abs().max())
        assert difference <= 1e-5 * scale, f"{name}: differs by {difference:.3g} of {scale:.3g}"


def test_resume_refuses_chunks_from_other_parameters(main_runs):
    train_id = main_runs["train"]
    first = _influence("--train-run-id", train_id, *CHUNKED)
    code, output = run_cli(
        "influence", "--train-run-id", train_id, *CHUNKED, "--params", "last-layer",
        "--resume-run-id", first,
    )  # fmt: skip
    assert code == 1
    assert "computed with other parameters" in output


def test_a_chunk_cut_short_in_the_store_is_recomputed_on_resume(main_runs):
    """An upload cut short leaves a truncated chunk in the artifact store, where MLflow
    cannot delete it: resume recomputes that chunk, reuses the rest, and ends equal."""
    train_id = main_runs["train"]
    first = _influence("--train-run-id", train_id, *CHUNKED)
    store = Path(url2pathname(urlparse(MlflowClient().get_run(first).info.artifact_uri).path))
    cut = sorted((store / artifacts.CHUNKS).rglob("*.safetensors"))[1]
    cut.write_bytes(cut.read_bytes()[:100])
    resumed = _influence("--train-run-id", train_id, *CHUNKED, "--resume-run-id", first)
    metrics = MlflowClient().get_run(resumed).data.metrics
    assert metrics["chunks_reused"] == metrics["chunks_total"] - 1
    _assert_same_scores(_scores(resumed, train_id), _scores(first, train_id))


def test_topk_only_run_matches_full_run_and_feeds_analyze(main_runs):
    train_id = main_runs["train"]
    topk_only = _influence("--train-run-id", train_id, *CHUNKED, "--store-scores", "false")
    names = {a.path for a in MlflowClient().list_artifacts(topk_only, "influence")}
    assert artifacts.SCORES not in names
    assert artifacts.SELF_INFLUENCE not in names  # only when asked for (or cosine)
    full = pd.read_parquet(tracking.download(main_runs["influence"], artifacts.TOPK))
    kept = pd.read_parquet(tracking.download(topk_only, artifacts.TOPK))
    # Rank by rank the same scores; which of two exactly tied examples comes first may differ
    # (the corpus has names spelled the same in two languages, with identical gradients).
    # Chunked (batch 1) and unchunked runs sum in another order: float32 rounding relative to
    # the largest scores, which small scores that cancel out inherit.
    scale = float(full["score"].abs().max())
    pd.testing.assert_series_equal(full["score"], kept["score"], rtol=1e-5, atol=1e-6 * scale)
    matrices = _scores(main_runs["influence"], train_id)
    for name, rows in kept.groupby("checkpoint"):
        at = (rows["test_index"].to_numpy(copy=True), rows["train_index"].to_numpy(copy=True))
        entries = matrices[name][at]
        torch.testing.assert_close(entries, torch.tensor(rows["score"].to_numpy()))

    code, output = run_cli("analyze", "--influence-run-id", topk_only, "--top-k", "3")
    assert code == 0, output
    code, output = run_cli("analyze", "--influence-run-id", topk_only, "--top-k", "9")
    assert code == 1 and "kept only the top 5" in output


def test_cosine_scores_and_self_influence_equal_the_reference(main_runs):
    train_id = main_runs["train"]
    cosine = _influence("--train-run-id", train_id, "--top-k", "5", "--method", "cosine")
    train, test = train_manifests(train_id)
    index = artifacts.load_checkpoint_index(tracking.download(train_id, artifacts.CHECKPOINT_INDEX))
    scores = _scores(cosine, train_id)
    own = _scores(cosine, train_id, artifacts.SELF_INFLUENCE)
    for checkpoint in index:
        model, tokenizer = modeling.load_checkpoint(
            tracking.download(train_id, f"{artifacts.CHECKPOINTS}/{checkpoint['name']}")
        )
        model = copy.deepcopy(model).double()
        train_batches = make_loader(TokenizedExamples(train, tokenizer, 128), 7)
        test_batches = make_loader(TokenizedExamples(test, tokenizer, 128), 5)
        shape = dict(n_train=len(train), n_test=len(test))
        dot = reference_scores(model, train_batches, test_batches, **shape)
        train_sq = reference_scores(
            model, train_batches, train_batches, n_train=len(train), n_test=len(train)
        ).diagonal()
        test_sq = reference_scores(
            model, test_batches, test_batches, n_train=len(test), n_test=len(test)
        ).diagonal()
        expected = dot / (test_sq.unsqueeze(1) * train_sq.unsqueeze(0)).sqrt()
        got = scores[checkpoint["name"]].double()
        assert (got - expected).abs().max() / expected.abs().max() < 1e-5
        assert (own[checkpoint["name"]].double() - train_sq).abs().max() / train_sq.max() < 1e-5


def test_reformed_test_gradients_give_the_kept_scores(main_runs):
    """test_gradients=reform through the step: the main run's scores (kept, as auto chose
    for this small test set) to rounding, and the way each run took is on its tags."""
    train_id = main_runs["train"]
    reform = _influence("--train-run-id", train_id, "--top-k", "5", "--method", "dot",
                        "--test-gradients", "reform", "--contraction-rows", "7")  # fmt: skip
    kept = _scores(main_runs["influence"], train_id)
    for name, got in _scores(reform, train_id).items():
        want = kept[name]
        assert (got - want).abs().max() / want.abs().max() < 1e-5, name
    client = MlflowClient()
    assert client.get_run(reform).data.tags["test_gradients"] == "reform"
    assert client.get_run(main_runs["influence"]).data.tags["test_gradients"] == "keep"


def test_bf16_compute_stays_close_to_fp32(main_runs):
    """bf16 autocast (CPU here, GPU in production), fp32 accumulation: close, not exact.

    Seen here: 1.4e-2 max relative error, correlation 0.99998; margins 5x that.
    """
    train_id = main_runs["train"]
    bf16 = _scores(_influence("--train-run-id", train_id, "--top-k", "5", "--precision", "bf16",
                              "--method", "dot"), train_id)  # fmt: skip
    fp32 = _scores(main_runs["influence"], train_id)
    for name, want in fp32.items():
        got = bf16[name]
        assert not torch.equal(got, want), "bf16 was requested but the scores are fp32's"
        assert (got - want).abs().max() / want.abs().max() < 7e-2, name
        assert torch.corrcoef(torch.stack([got.flatten(), want.flatten()]))[0, 1] > 0.9999, name


def test_unknown_precision_and_method_are_refused(main_runs):
    for option, value in (("--precision", "fp8"), ("--method", "l2")):
        code, output = run_cli("influence", "--train-run-id", main_runs["train"], option, value)
        assert code == 1 and value in output


def test_reform_is_refused_for_methods_that_hold_their_own_test_side(main_runs):
    for method in ("representation", "ekfac", "metagradient"):
        code, output = run_cli("influence", "--train-run-id", main_runs["train"], "--top-k",
                               "5", "--method", method, "--test-gradients", "reform")  # fmt: skip
        assert code == 1 and f"method={method} holds its own test side" in output, output


def test_ekfac_method_equals_the_scorer_called_directly(main_runs):
    """`mlflow run . -e influence -P method=ekfac` (chunks, learning-rate weights, top-k)
    against attribution/ekfac.py's scorer on the same checkpoint and batches;
    tests/attribution/test_ekfac.py holds
    that scorer to explicit computations."""
    from xlinfluence.attribution.ekfac import EKFACScorer

    train_id = main_runs["train"]
    run = _mlflow_run_influence(train_run_id=train_id, method="ekfac", checkpoints="epoch-2",
                                top_k=5, test_chunk_size=5)  # fmt: skip
    got = _scores(run, train_id)
    assert set(got) == {"epoch-2", artifacts.TOTAL}
    train, test = train_manifests(train_id)
    index = artifacts.load_checkpoint_index(tracking.download(train_id, artifacts.CHECKPOINT_INDEX))
    model, tokenizer = modeling.load_checkpoint(
        tracking.download(train_id, f"{artifacts.CHECKPOINTS}/epoch-2")
    )
    train_loader = make_loader(TokenizedExamples(train, tokenizer, 128), 32, bucket_by_length=True)
    test_loader = make_loader(TokenizedExamples(test, tokenizer, 128), 32)
    want = torch.zeros(len(test), len(train))
    with EKFACScorer(model, None, train_loader) as scorer:
        cache = scorer.test_cache(list(test_loader))
        for batch in train_loader:
            block, _ = scorer.train_block([batch], cache)
            want[cache.index.unsqueeze(1), batch["index"].unsqueeze(0)] = block.T.float()
    assert (got["epoch-2"] - want).abs().max() / want.abs().max() < 1e-4
    lr = next(c["learning_rate"] for c in index if c["name"] == "epoch-2")
    torch.testing.assert_close(got[artifacts.TOTAL], lr * got["epoch-2"])


def test_token_overlap_through_the_step_equals_a_plain_tfidf_cosine(main_runs):
    """A method added as one module and one registry line runs through the step: chunked,
    learning-rate weighted, resumable; its scores are those of the reference over the
    checkpoint tokenizer's ids."""
    from .attribution.test_token_overlap import _reference

    train_id = main_runs["train"]
    run = _influence("--train-run-id", train_id, "--method", "token-overlap", "--checkpoints",
                     "epoch-2", "--top-k", "5", "--train-chunk-size", "7")  # fmt: skip
    got = _scores(run, train_id)
    train, test = train_manifests(train_id)
    _, tokenizer = modeling.load_checkpoint(
        tracking.download(train_id, f"{artifacts.CHECKPOINTS}/epoch-2")
    )
    ids = [TokenizedExamples(part, tokenizer, 128).input_ids for part in (test, train)]
    want = torch.tensor(_reference(*ids), dtype=torch.float32)
    torch.testing.assert_close(got["epoch-2"], want, rtol=0, atol=1e-6)


def _mlflow_run_influence(**parameters) -> str:
    """`mlflow run . -e influence -P k=v ...`, as a user launches it."""
    import mlflow

    project = Path(__file__).resolve().parents[1]
    submitted = mlflow.projects.run(
        uri=str(project), entry_point="influence", parameters=parameters,
        env_manager="local", synchronous=True,
    )  # fmt: skip
    return submitted.run_id


def test_the_replay_reproduces_the_logged_fine_tuning(main_runs):
    """What method=metagradient differentiates is the run itself: its replay lands on the
    logged last checkpoint (its recorded RNG states restored step by step), and the check
    would see other dropout masks."""
    from xlinfluence.steps import replay

    rerun, difference = replay.verified(TrainRun.fetch(main_runs["train"]))
    assert difference <= 1e-5
    rerun.rng_states = rerun.rng_states[1:] + rerun.rng_states[:1]  # other dropout masks
    logged, _ = modeling.load_checkpoint(
        tracking.download(main_runs["train"], f"{artifacts.CHECKPOINTS}/{rerun.final_checkpoint}")
    )
    want = dict(logged.named_parameters())
    names = [n for n, _ in rerun.model.named_parameters()]
    final = zip(names, rerun.final_parameters(), strict=True)
    moved = max(float((g - want[n]).abs().max()) for n, g in final)
    scale = max(float(p.abs().max()) for p in want.values())
    assert moved / scale > 10 * replay.REPRODUCTION_TOLERANCE


def test_metagradient_method_through_mlflow_run(main_runs):
    """`mlflow run . -e influence -P method=metagradient`: each test row is minus the exact
    derivative of its loss in each training row's weight. Held against finite differences of
    real retrainings (the verified replay, in float64) and, by linearity, against one
    reverse pass for a whole test language's mean loss."""
    from xlinfluence.steps import replay
    from xlinfluence.training import metagradient as mg

    train_id = main_runs["train"]
    run = _mlflow_run_influence(train_run_id=train_id, method="metagradient", top_k=5)
    got = _scores(run, train_id)
    assert set(got) == {"fine-tuning", artifacts.TOTAL}
    torch.testing.assert_close(got[artifacts.TOTAL], got["fine-tuning"])
    metrics = MlflowClient().get_run(run).data.metrics
    assert metrics["replay_parameter_difference"] <= 1e-5 and metrics["seconds_per_output"] > 0
    _, test = train_manifests(train_id)
    rerun = replay.of_train_run(TrainRun.fetch(train_id))
    rows = test.index[test["language"] == "de"].tolist()
    language = -rerun.test_loss_gradient(rows)
    torch.testing.assert_close(got[artifacts.TOTAL][rows].mean(0), language, rtol=1e-4, atol=1e-7)
    rerun.model = rerun.model.double()
    first = list(make_loader(rerun.test_examples, 1, indices=[0]))
    output = mg.test_loss_output(rerun.model, first)
    h = 1e-4
    for i in got[artifacts.TOTAL][0].abs().argsort(descending=True)[:2].tolist():
        moved = []
        for sign in (1, -1):
            weights = torch.ones(len(rerun.train), dtype=torch.float64)
            weights[i] += sign * h
            with torch.no_grad():
                final = mg.train(
                    rerun.model, rerun.batches, rerun.learning_rates, weights,
                    optimizer=rerun.optimizer, rng_states=rerun.rng_states,
                )  # fmt: skip
                moved.append(float(output(final)))
        numeric = -(moved[0] - moved[1]) / (2 * h)
        assert abs(float(got[artifacts.TOTAL][0, i]) - numeric) <= 1e-4 * abs(numeric), (i, numeric)


def test_metagradient_refuses_what_it_cannot_replay(main_runs):
    code, output = run_cli("influence", "--train-run-id", main_runs["train"], "--method",
                           "metagradient", "--params", "last-layer", "--top-k", "5")  # fmt: skip
    assert code == 1 and "params='last-layer' (use 'all')" in output
