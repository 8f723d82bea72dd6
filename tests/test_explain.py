"""`xlinfluence explain` on the tiny pipeline: every field checked against the manifests, the
score matrices and the top-k table, independently of how explain.py finds them."""

from __future__ import annotations

import csv
import io
import json

import pandas as pd
import pytest
from click.testing import CliRunner

from xlinfluence import artifacts, tracking
from xlinfluence.cli import cli
from xlinfluence.steps.upstream import train_manifests

from .conftest import run_step

pytestmark = pytest.mark.slow

TOP = 10


@pytest.fixture(scope="module")
def runs(main_runs):
    """The main pipeline's runs, and an influence run of the same training that kept only
    the top 5 (store_scores=false)."""
    topk_only = run_step(
        "influence", "--train-run-id", main_runs["train"], "--store-scores", "false",
        "--top-k", "5", "--method", "dot", "--batch-size", "16",
    )  # fmt: skip
    return main_runs | {"topk_only": topk_only}


@pytest.fixture(scope="module")
def data(runs):
    train, test = train_manifests(runs["train"])
    scores = artifacts.load_scores(
        tracking.download(runs["influence"], artifacts.SCORES),
        n_test=len(test),
        n_train=len(train),
    )
    topk = pd.read_parquet(tracking.download(runs["influence"], artifacts.TOPK))
    return train, test, scores, topk


def explain(*args: str):
    """Exit code, stdout and stderr of `xlinfluence explain ARGS`."""
    result = CliRunner().invoke(cli, ["explain", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def explain_json(*args: str):
    code, out, err = explain(*args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def one_error_line(code: int, err: str) -> str:
    """The one `Error: ...` line a refused command prints, with no traceback."""
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, err
    return lines[0]


def expected_translation_of(explanation: dict, train: pd.DataFrame) -> list[list]:
    """translation_of from the manifest alone: the own-language proponent (among those
    shown) whose pair_id a row in another language shares."""
    by_id = train.set_index("id")
    language = explanation["test"]["language"]
    own = {}
    for p in explanation["proponents"]:
        pair = by_id.at[p["id"], "pair_id"]
        if by_id.at[p["id"], "language"] == language and not pd.isna(pair):
            own.setdefault(pair, p["id"])
    out = []
    for key in ("proponents", "opponents"):
        column = []
        for row in explanation[key]:
            pair = by_id.at[row["id"], "pair_id"]
            cross = by_id.at[row["id"], "language"] != language
            column.append(own.get(pair) if cross and not pd.isna(pair) else None)
        out.append(column)
    return out


def test_json_matches_manifests_scores_and_topk(runs, data):
    train, test, scores, topk = data
    test_id = test["id"].iloc[5]
    got = explain_json("--run", runs["analyze"], "--test-id", test_id)

    assert set(got) == {"test", "proponents", "opponents"}
    row = test.set_index("id").loc[test_id]
    assert got["test"]["id"] == test_id
    assert got["test"]["text"] == row["text"]
    assert got["test"]["language"] == row["language"]
    assert got["test"]["label"] == int(row["label"])
    last = artifacts.load_checkpoint_index(
        tracking.download(runs["train"], artifacts.CHECKPOINT_INDEX)
    )[-1]["name"]
    predictions = artifacts.load_predictions(
        tracking.download(runs["train"], artifacts.predictions(last)), test
    )
    assert got["test"]["prediction"] == int(predictions["predicted"].iloc[5])

    assert len(got["proponents"]) >= TOP and len(got["opponents"]) >= TOP
    by_id = train.set_index("id")
    position = {i: n for n, i in enumerate(train["id"])}
    total = scores[artifacts.TOTAL][5]
    for key in ("proponents", "opponents"):
        for example in got[key]:
            assert set(example) == {"id", "text", "language", "label", "score", "translation_of"}
            assert example["text"] == by_id.at[example["id"], "text"]
            assert example["language"] == by_id.at[example["id"], "language"]
            assert example["label"] == int(by_id.at[example["id"], "label"])
            assert example["score"] == float(total[position[example["id"]]])
    pro = [e["score"] for e in got["proponents"]]
    opp = [e["score"] for e in got["opponents"]]
    assert pro == sorted(pro, reverse=True) and opp == sorted(opp)
    assert pro == total.sort(descending=True).values[:TOP].tolist()  # the strongest, none missed
    assert opp == total.sort().values[:TOP].tolist()

    mine = topk[(topk["checkpoint"] == artifacts.TOTAL) & (topk["test_index"] == 5)]
    for key, kind in (("proponents", "proponent"), ("opponents", "opponent")):
        kept = mine[mine["kind"] == kind].sort_values("rank")["score"].tolist()  # top 5
        assert [e["score"] for e in got[key][: len(kept)]] == kept

    assert [
        [e["translation_of"] for e in got[k]] for k in ("proponents", "opponents")
    ] == expected_translation_of(got, train)
    # a main run names the same influence run
    assert explain_json("--run", runs["main"], "--test-id", test_id) == got


def test_translation_of_on_every_test_example(runs, data):
    train, test, scores, _ = data
    explained = []
    for language in sorted(test["language"].unique()):
        cases = explain_json(
            "--run", runs["influence"], "--language", language,
            "--cases", str(int((test["language"] == language).sum())),
        )  # fmt: skip
        assert {c["test"]["language"] for c in cases} == {language}
        sums = [sum(p["score"] for p in c["proponents"]) for c in cases]
        assert sums == sorted(sums, reverse=True)  # strongest cases first
        explained += cases
    assert sorted(c["test"]["id"] for c in explained) == sorted(test["id"])
    marked = 0
    for explanation in explained:
        expected = expected_translation_of(explanation, train)
        got = [[e["translation_of"] for e in explanation[k]] for k in ("proponents", "opponents")]
        assert got == expected, explanation["test"]["id"]
        marked += sum(v is not None for v in got[0])
    assert marked > 0  # the built-in corpus is parallel: some proponents are translations


def test_csv_and_terminal_formats(runs, data):
    _, test, _, _ = data
    test_id = test["id"].iloc[0]
    code, out, err = explain("--run", runs["analyze"], "--test-id", test_id, "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 2 * TOP
    assert [r["kind"] for r in rows] == ["proponent"] * TOP + ["opponent"] * TOP
    assert {r["test_id"] for r in rows} == {test_id}
    assert {r["test_text"] for r in rows} == {test["text"].iloc[0]}
    assert set(rows[0]) >= {"id", "text", "language", "label", "score", "translation_of"}
    as_json = explain_json("--run", runs["analyze"], "--test-id", test_id)
    assert [float(r["score"]) for r in rows[:TOP]] == [p["score"] for p in as_json["proponents"]]

    code, out, err = explain(
        "--run", runs["analyze"], "--test-id", test_id, "--checkpoint", "epoch-1", "--top", "3"
    )
    assert code == 0, err
    assert test_id in out and "proponents" in out and "opponents" in out
    assert test["text"].iloc[0] in out


def test_a_run_that_kept_only_top_k(runs, data):
    _, test, _, topk = data
    test_id = test["id"].iloc[2]
    kept = explain_json("--run", runs["topk_only"], "--test-id", test_id, "--top", "5")
    full = explain_json("--run", runs["analyze"], "--test-id", test_id, "--top", "5")
    assert [p["score"] for p in kept["proponents"]] == [p["score"] for p in full["proponents"]]
    assert [p["score"] for p in kept["opponents"]] == [p["score"] for p in full["opponents"]]
    line = one_error_line(*explain("--run", runs["topk_only"], "--test-id", test_id)[::2])
    assert "--top 10" in line and "kept only the top 5" in line and "store_scores" in line


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--test-id", "no-such-id"), "'no-such-id' is not in the test set"),
        (("--language", "xx"), "'xx' is not in the test set"),
        (("--test-id", "{test}", "--checkpoint", "epoch-9"), "pass one of epoch-1, epoch-2"),
        ((), "exactly one of --test-id"),
        (("--test-id", "{test}", "--top", "ten"), "--top 'ten' must be a whole number"),
        (("--test-id", "{test}", "--format", "xml"), "--format 'xml' is not one of"),
    ],
)
def test_bad_input_gives_one_line(runs, data, args, says):
    test_id = data[1]["id"].iloc[0]
    args = [a.format(test=test_id) for a in args]
    line = one_error_line(*explain("--run", runs["analyze"], *args)[::2])
    assert says in line


def test_wrong_run_kind_gives_one_line(runs, data):
    test_id = data[1]["id"].iloc[0]
    line = one_error_line(*explain("--run", runs["train"], "--test-id", test_id)[::2])
    assert "is a train run, not an influence or analyze run" in line


def test_train_id_is_not_a_test_id(runs, data):
    train_id = data[0]["id"].iloc[0]
    line = one_error_line(*explain("--run", runs["analyze"], "--test-id", train_id)[::2])
    assert "is a training example" in line
