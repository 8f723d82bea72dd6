"""`xlinfluence explain`: one test example's strongest proponents and opponents, readable.

Reads an influence run (named directly, or through an analyze or main run): the test
example's language, label and the model's prediction, then its top-N proponents (largest
scores, descending) and opponents (most negative, ascending: rank 0 is the strongest) with
their text, language, label and score, as in analysis/topk.py.

`translation_of` marks the cross-lingual rows that bring the test example's own-language
evidence again (the reinforcing proponents of analysis/translation.py): a row in another
language than the test example whose `pair_id` equals that of one of the N own-language
proponents shown, gives that proponent's id; every other row gives None. The data
selection keeps a test sentence's own translations out of training, so `pair_id` links
training rows to each other only.

Scores come from the full matrices when the influence run kept them (store_scores=true),
else from its top-k table, which limits N to the run's top_k.

The join of manifests, ranked training rows and predictions into an explanation is one
pure function (explain_join.join), which the analyze step's report calls too.

Not one of the hashed step sources (provenance.NUMBERS_SOURCES): it only reads runs.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

import pandas as pd
import torch

from xlinfluence import artifacts, tracking
from xlinfluence.analysis import topk as topk_columns
from xlinfluence.data import schema
from xlinfluence.errors import ArtifactError, ConfigError, RunLookupError
from xlinfluence.explain_join import (
    KIND_OF,
    OPPONENTS,
    PROPONENTS,
    join,
    ranked_from_topk,
    strongest_rows,
    text_pairs,
)
from xlinfluence.steps.upstream import InfluenceRun, influence_run_of

FORMATS = ("table", "json", "csv")
EXAMPLE_FIELDS = ("id", "text", "language", "label", "score", "translation_of")
TEST_FIELDS = ("id", "text", "language", "label", "prediction")


@dataclass
class Influence:
    """What one influence run says, with the train run's manifests beside it."""

    run: InfluenceRun
    label_names: list[str]
    _matrices: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _topk_rows: dict[tuple[str, int], pd.DataFrame] | None = field(default=None, repr=False)
    _predictions: dict[str, pd.DataFrame | None] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, run_id: str) -> Influence:
        """The influence run behind `run_id` (influence, analyze or main)."""
        run = InfluenceRun.fetch(influence_run_of(run_id))
        return cls(run, label_names(run.train_run.run_id))

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def train_run_id(self) -> str:
        return self.run.train_run.run_id

    @property
    def train(self) -> pd.DataFrame:
        return self.run.train

    @property
    def test(self) -> pd.DataFrame:
        return self.run.test

    @property
    def names(self) -> list[str]:
        """The score names: the checkpoints and "total"."""
        return self.run.score_names

    # -- choosing test examples -------------------------------------------------------

    def test_index(self, test_id: str) -> int:
        where = self.test.index[self.test[schema.ID] == test_id]
        if len(where):
            return int(where[0])
        if (self.train[schema.ID] == test_id).any():
            raise ConfigError(
                f"--test-id {test_id!r} is a training example of train run {self.train_run_id}, "
                "not a test example; pass a test id (the run's data/test.parquet)."
            )
        examples = ", ".join(repr(i) for i in self.test[schema.ID].head(3))
        raise ConfigError(
            f"--test-id {test_id!r} is not in the test set of train run {self.train_run_id} "
            f"({len(self.test)} examples, e.g. {examples}); pass one of its ids "
            "(data/test.parquet), or --language L for a language's strongest cases."
        )

    def strongest(self, language: str, checkpoint: str, top: int, cases: int) -> list[int]:
        """The `cases` test examples of `language` whose top-`top` proponent scores sum
        highest (ties: manifest order)."""
        rows = self.test.index[self.test[schema.LANGUAGE] == language]
        if not len(rows):
            languages = ", ".join(sorted(self.test[schema.LANGUAGE].unique()))
            raise ConfigError(
                f"--language {language!r} is not in the test set of train run "
                f"{self.train_run_id} (its languages: {languages}); pass one of them."
            )
        sums = [(int(i), sum(self.ranked(int(i), checkpoint, top)[PROPONENTS][1])) for i in rows]
        return strongest_rows(sums, cases)

    # -- scores -----------------------------------------------------------------------

    def check(self, checkpoint: str, top: int) -> None:
        if checkpoint not in self.names:
            raise ConfigError(
                f"--checkpoint {checkpoint!r} is not scored by influence run {self.run_id}; "
                f"pass one of {', '.join(self.names)}."
            )
        if top > len(self.train):
            raise ConfigError(
                f"--top {top} exceeds the {len(self.train)} training examples; lower --top."
            )
        if not self.run.has_full_scores and top > self.run.kept_top_k:
            raise ConfigError(
                f"--top {top}, but influence run {self.run_id} kept only the top "
                f"{self.run.kept_top_k} (store_scores=false); lower --top to at most "
                f"{self.run.kept_top_k}, or re-run influence with store_scores=true or a larger "
                "top_k."
            )

    def ranked(self, row: int, checkpoint: str, top: int) -> dict[str, tuple[list, list]]:
        """{"proponents"/"opponents": (train indices, scores)} of test row `row`, best first."""
        if self.run.has_full_scores:
            scores = self._matrix(checkpoint)[row]
            pro_s, pro_i = torch.topk(scores, top, largest=True, sorted=True)
            opp_s, opp_i = torch.topk(scores, top, largest=False, sorted=True)
            return {
                PROPONENTS: (pro_i.tolist(), pro_s.tolist()),
                OPPONENTS: (opp_i.tolist(), opp_s.tolist()),
            }
        empty = pd.DataFrame(columns=topk_columns.TOPK_COLUMNS)
        return ranked_from_topk(self._topk().get((checkpoint, row), empty), top)

    def _matrix(self, checkpoint: str) -> torch.Tensor:
        if checkpoint not in self._matrices:
            self._matrices[checkpoint] = self.run.matrix(checkpoint)
        return self._matrices[checkpoint]

    def _topk(self) -> dict[tuple[str, int], pd.DataFrame]:
        """The run's top-k table by (checkpoint, test index)."""
        if self._topk_rows is None:
            table = self.run.topk()
            c = topk_columns
            self._topk_rows = {
                (name, int(row)): rows
                for (name, row), rows in table.groupby([c.CHECKPOINT, c.TEST_INDEX])
            }
        return self._topk_rows

    # -- predictions ------------------------------------------------------------------

    def prediction(self, row: int, checkpoint: str) -> int | None:
        """The predicted class of test row `row` at `checkpoint` (for "total": the train
        run's last checkpoint, the fine-tuned model); None where it was not evaluated."""
        cache = self._predictions
        if checkpoint not in cache:
            cache[checkpoint] = predictions_at(self.train_run_id, checkpoint, self.test)
        frame = cache[checkpoint]
        return None if frame is None else int(frame["predicted"].iloc[row])

    # -- the explanation --------------------------------------------------------------

    def explain(self, row: int, checkpoint: str, top: int) -> dict:
        """{"test": {...}, "proponents": [...], "opponents": [...]} for test row `row`."""
        test = self.test.iloc[row]
        ranked = self.ranked(row, checkpoint, top)
        if len(ranked[PROPONENTS][0]) < top:  # a top-k table cut short: say so
            raise ArtifactError(
                f"influence run {self.run_id}'s top-k table holds fewer than {top} proponents "
                f"of test example {test[schema.ID]!r} at {checkpoint!r}; re-run the influence step."
            )
        return join(self.train, self.test, row, ranked, self.prediction(row, checkpoint))

    def text_pairs(self) -> dict[str, str]:
        """Second text fields by id (pair tasks), for the terminal table only."""
        return text_pairs(self.train, self.test)


# -- what a train run says beside its manifests -----------------------------------------


def predictions_at(train_run_id: str, checkpoint: str, test: pd.DataFrame) -> pd.DataFrame | None:
    """The train run's predictions at `checkpoint` (for "total": its last checkpoint, the
    fine-tuned model); None where that checkpoint was not evaluated."""
    name = checkpoint
    if checkpoint == artifacts.TOTAL:
        index = artifacts.load_checkpoint_index(
            tracking.download(train_run_id, artifacts.CHECKPOINT_INDEX)
        )
        name = index[-1]["name"]
    path = artifacts.predictions(name)
    if path not in tracking.artifact_names(train_run_id, artifacts.EVALUATION):
        return None
    return artifacts.load_predictions(tracking.download(train_run_id, path), test)


def label_names(train_run_id: str) -> list[str]:
    """The train run's class names by index; [] where it logged none."""
    try:
        labels = artifacts.read_json(tracking.download(train_run_id, artifacts.LABELS))
    except (ArtifactError, RunLookupError):
        return []
    return [str(name) for name in labels] if isinstance(labels, list) else []


@dataclass
class ReportExamples:
    """What the analyze step's report needs to show test examples with their proponents."""

    train: pd.DataFrame
    test: pd.DataFrame
    topk: pd.DataFrame  # the analyze step's top-k table
    predictions: pd.Series | None  # the fine-tuned model's predicted class per test row
    label_names: list[str]

    @classmethod
    def of(cls, train_run_id: str, train, test, topk) -> ReportExamples:
        """With the train run's final predictions and label names, where it has them."""
        try:
            frame = predictions_at(train_run_id, artifacts.TOTAL, test)
        except (ArtifactError, RunLookupError):  # only the report shows them
            frame = None
        predictions = None if frame is None else frame["predicted"].reset_index(drop=True)
        return cls(train, test, topk, predictions, label_names(train_run_id))


def whole_number(option: str, value: int | str) -> int:
    """A positive whole number given as text (`--top 10`), or a one-line ConfigError."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(
            f"{option} {value!r} must be a whole number of at least 1; e.g. {option} 5."
        )
    return number


def check_format(value: str) -> str:
    if value not in FORMATS:
        raise ConfigError(
            f"--format {value!r} is not one of {', '.join(FORMATS)}; pass one of them."
        )
    return value


def explain(
    run_id: str,
    *,
    test_id: str | None = None,
    language: str | None = None,
    checkpoint: str = artifacts.TOTAL,
    top: int | str = 10,
    cases: int | str | None = None,
) -> tuple[Influence, list[dict]]:
    """The explanations asked for: one for `test_id`, or `cases` (default: `top`) for the
    strongest test examples of `language`."""
    top = whole_number("--top", top)
    cases = None if cases is None else whole_number("--cases", cases)
    if (test_id is None) == (language is None):
        raise ConfigError(
            "pass exactly one of --test-id ID (one test example) or --language L (that "
            "test language's strongest cases)."
        )
    if test_id is not None and cases is not None:
        raise ConfigError("--cases goes with --language; drop it, or pass --language L.")
    influence = Influence.load(run_id)
    influence.check(checkpoint, top)
    if test_id is not None:
        rows = [influence.test_index(test_id)]
    else:
        rows = influence.strongest(language, checkpoint, top, top if cases is None else cases)
    return influence, [influence.explain(row, checkpoint, top) for row in rows]


# -- output -----------------------------------------------------------------------------


def to_json(explanations: list[dict], *, one: bool) -> str:
    """The one explanation (--test-id) or the list of them (--language) as JSON."""
    return json.dumps(explanations[0] if one else explanations, indent=2, ensure_ascii=False)


CSV_COLUMNS = (
    *(f"test_{f}" for f in TEST_FIELDS),
    "kind",
    "rank",
    *EXAMPLE_FIELDS,
)


def to_csv(explanations: list[dict]) -> str:
    """One row per proponent and opponent, the test example's fields repeated on each."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for explanation in explanations:
        test = [explanation["test"][f] for f in TEST_FIELDS]
        for key, kind in KIND_OF.items():
            for rank, example in enumerate(explanation[key]):
                writer.writerow(
                    [
                        *("" if v is None else v for v in test),
                        kind,
                        rank,
                        *("" if example[f] is None else example[f] for f in EXAMPLE_FIELDS),
                    ]
                )
    return buffer.getvalue()


def render(influence: Influence, explanations: list[dict], checkpoint: str, console) -> None:
    """Terminal tables (rich): the test example, then its proponents and its opponents."""
    from rich.table import Table
    from rich.text import Text

    pairs = influence.text_pairs()

    def label(index: int | None) -> str:
        if index is None:
            return "n/a (not evaluated)"
        names = influence.label_names
        return f"{index} {names[index]}" if 0 <= index < len(names) else str(index)

    def text(example: dict) -> Text:  # Text: a sentence's brackets are not rich markup
        second = pairs.get(example["id"])
        return Text(example["text"] if second is None else f"{example['text']} | {second}")

    for explanation in explanations:
        test = explanation["test"]
        verdict = ""
        if test["prediction"] is not None:
            verdict = " (correct)" if test["prediction"] == test["label"] else " (wrong)"
        console.print()
        console.print(
            Text.assemble(
                ("test ", "bold"),
                (test["id"], "bold cyan"),
                f" [{test['language']}]  ",
                "label ",
                label(test["label"]),
                "  prediction ",
                label(test["prediction"]),
                verdict,
            )  # fmt: skip
        )
        console.print(Text("  ") + text(test))
        for key in (PROPONENTS, OPPONENTS):
            table = Table(
                title=f"{key} ({checkpoint}, influence run {influence.run_id})",
                title_justify="left",
            )
            # a narrow terminal folds ids and texts onto more lines
            table.add_column("#", justify="right", no_wrap=True)
            table.add_column("id", overflow="fold")
            table.add_column("lang", no_wrap=True)
            table.add_column("label", overflow="ellipsis", max_width=14)
            table.add_column("score", justify="right", no_wrap=True)
            table.add_column("translates", overflow="fold")
            table.add_column("text", overflow="fold")
            for rank, example in enumerate(explanation[key]):
                same = example["language"] == test["language"]
                table.add_row(
                    str(rank),
                    Text(example["id"]),
                    Text(example["language"], style="green" if same else ""),
                    Text(label(example["label"])),
                    f"{example['score']:.5g}",
                    Text(example["translation_of"] or ""),
                    text(example),
                )
            console.print(table)
