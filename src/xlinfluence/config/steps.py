"""The configs of the train, influence and analyze steps, and the rules between their
fields."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

from xlinfluence import checks
from xlinfluence.attribution import METHODS
from xlinfluence.checks import refuse
from xlinfluence.config.base import (
    StepConfig,
    accelerate_config_field,
    param,
    threads_field,
)
from xlinfluence.data import DATASETS as SOURCES

if TYPE_CHECKING:  # config.main imports this module
    from xlinfluence.config.main import MainConfig

DATASETS = tuple(SOURCES)  # data/__init__.py: the registry
PRESETS = ("e5-small", "tiny")
PRECISIONS = ("fp32", "bf16", "fp16")
TRAIN_CONTENTS = ("parallel", "disjoint")  # data/select.py
REMOVAL_STEPS = ("fixed", "proportional")  # steps/train.py
TEST_GRADIENTS = ("auto", "keep", "reform")  # tracin/memory.py plan_test_side
SCHEMA_COLUMNS = ("id", "language", "label", "pair_id", "text", "text_pair")


class DataSettings:
    """Typed views of the data parameters that TrainConfig and MainConfig share, parsed once
    from their checked strings: MLflow logs and compares the strings, code reads these."""

    @cached_property
    def language_codes(self) -> tuple[str, ...]:
        """`languages` in the given order (the row order of the data), held-out one included."""
        return checks.items(self.languages)

    @cached_property
    def heldout(self) -> str:
        """The zero-shot language, or ''."""
        return self.heldout_language.strip()

    @cached_property
    def train_languages(self) -> tuple[str, ...]:
        return tuple(code for code in self.language_codes if code != self.heldout)

    @cached_property
    def train_counts(self) -> dict[str, int]:
        """Training examples per training language (a count for the held-out one is
        ignored, so the seen and the zero-shot run can share the setting)."""
        text = self.train_per_language.strip()
        if "=" not in text:
            return dict.fromkeys(self.train_languages, int(text))
        counts = {code: int(n) for code, n in checks.pairs(text).items()}
        missing = [code for code in self.train_languages if code not in counts]
        extra = [code for code in counts if code not in self.language_codes]
        if missing or extra:
            raise refuse(
                "train_per_language",
                text,
                (f"no count for {missing}" if missing else f"{extra} are not among the languages"),
                f"give one count for each of {list(self.train_languages)}, or one number for all",
            )
        return {code: counts[code] for code in self.train_languages}

    @cached_property
    def columns(self) -> dict[str, str]:
        """`column_map` as schema column -> the source's column."""
        return checks.pairs(self.column_map)


@dataclass(frozen=True)
class TrainConfig(DataSettings, StepConfig):
    """Fine-tune a multilingual encoder on several languages, one checkpoint per epoch."""

    step: ClassVar[str] = "train"

    dataset: str = param(
        "cldr",
        "cldr (built-in, offline), sib200, xnli, paws-x, marc, or local (your files)",
        checks.OneOf(DATASETS),
    )
    data_path: str = param(
        "",
        "local copy: SIB-200's data/annotated folder, save_to_disk root (<path>/<lang>) for "
        "xnli/paws-x/marc, a file or folder for local",
        checks.PathRef("file or folder"),
    )
    column_map: str = param(
        "",
        "schema=column pairs, e.g. 'text=premise,text_pair=hypothesis'",
        checks.KeyValues(SCHEMA_COLUMNS),
    )
    languages: str = param(
        "en,de,fr,ru,zh",
        "comma-separated languages to fine-tune and test on (the held-out one included)",
        checks.Languages(),
    )
    train_per_language: str = param(
        "400",
        "training examples per language: one number, or 'en=400,de=100,...' for imbalance",
        checks.Counts(),
    )
    test_per_language: int = param(25, "test examples per language", checks.AtLeast(1))
    heldout_language: str = param(
        "",
        "zero-shot language: one of `languages`, tested but never trained on",
        checks.Languages(single=True),
    )
    train_content: str = param(
        "parallel",
        "parallel: every training language gets translations of the same sentences where the "
        "source is parallel (the paper's setting); disjoint: each language gets sentences no "
        "other training language has, label-stratified within the language (a language "
        "then brings content of its own, so removing it can matter)",
        checks.OneOf(TRAIN_CONTENTS),
    )
    model: str = param(
        "e5-small",
        "'e5-small' (pretrained multilingual-e5-small, offline), 'tiny' (random XLM-R-shaped "
        "preset for tests), or a hub name / local folder such as xlm-roberta-base",
        checks.ModelRef(PRESETS),
    )
    trim_vocab: bool = param(
        True,
        "pretrained models: keep only the vocabulary rows the selected data uses (exact)",
        checks.Flag(),
    )
    epochs: int = param(
        3, "fine-tuning epochs; one checkpoint is saved after each", checks.AtLeast(1)
    )
    batch_size: int = param(16, "training batch size per process", checks.AtLeast(1))
    learning_rate: float = param(
        1e-4,
        "peak AdamW learning rate (1e-4 suits e5-small; use 1e-3 for tiny)",
        checks.Real(0.0, 1.0, strict_low=True),
    )
    weight_decay: float = param(0.01, "AdamW weight decay", checks.Real(0.0))
    warmup_ratio: float = param(
        0.1,
        "fraction of steps with linear warm-up, then linear decay",
        checks.Real(0.0, 1.0),
    )
    max_length: int = param(128, "maximum tokens per example (truncation)", checks.AtLeast(4))
    train_precision: str = param(
        "fp32",
        "fine-tuning arithmetic: fp32, or bf16 / fp16 autocast (weights, optimizer state and "
        "sums in fp32) where the hardware has it natively; a study's base run and its "
        "retrainings share it",
        checks.OneOf(PRECISIONS),
    )
    seed: int = param(
        42, "seed for data selection, initialisation and shuffling", checks.AtLeast(0)
    )
    resume_run_id: str = param(
        "",
        "a killed train run to continue from its last complete epoch (same parameters)",
        checks.RunRef("train", optional=True, finished=False),
    )
    train_seed: int = param(
        -1,
        "seed for initialisation and training order, apart from the data seed (retraining "
        "seeds); -1: the same as seed",
        checks.AtLeast(-1),
    )
    remove: str = param(
        "",
        "retraining on part of the data: TracIn's top-k of a language for a test language, "
        "or k random ones (experiment=counterfactual); a random subset (experiment=lds); "
        "every row of one language (experiment=leave-language-out)",
        checks.Pattern(
            f"({checks.REMOVAL}|{checks.SELECTION})?",
            "empty, or tracin:<influence run>:<test lang>:<train lang>:<k>, "
            "random:<influence run>:<test lang>:<train lang>:<k>:<draw>, "
            "subset:<alpha>:<draw>[:pairs|:labels], language:<train lang> or "
            "fraction:<f>:<lang>[+<lang>...]:<draw>",
        ),
    )
    removal_steps: str = param(
        "fixed",
        "a retraining without rows (remove=...): fixed keeps the full run's batches and "
        "learning-rate schedule and skips the removed rows (a batch left empty is skipped), "
        "so it differs from the full run by those rows alone; proportional trains the kept "
        "rows as a set of their own, steps in proportion (fewer steps: less training, not "
        "only less data)",
        checks.OneOf(REMOVAL_STEPS),
    )
    save_checkpoints: bool = param(
        True,
        "false: a cheap retraining that logs its last epoch's test outputs and the kept rows "
        "only (no checkpoints, no training state; it cannot be resumed or scored by influence)",
        checks.Flag(),
    )
    threads: int = threads_field()
    accelerate_config: str = accelerate_config_field()

    def _name_parts(self) -> list[str]:
        parts = data_name_parts(self)
        from xlinfluence.data import subsets  # data imports config

        if self.train_seed >= 0:
            parts.append(f"train seed {self.train_seed}")
        if subsets.is_selection(self.remove):
            parts.append(subsets.Selection.parse(self.remove).label())
        elif self.remove:
            kind, _, test, train, k, *draw = self.remove.split(":")
            parts.append(f"remove {kind} {train}→{test} k={k}" + (f" #{draw[0]}" if draw else ""))
        if not self.save_checkpoints:
            parts.append("outputs only")
        return parts

    @property
    def training_seed(self) -> int:
        """The seed of initialisation and order: train_seed, or seed where it is -1."""
        return self.seed if self.train_seed < 0 else self.train_seed

    def _check_combinations(self) -> None:
        check_data(self)
        if self.resume_run_id and not self.save_checkpoints:
            raise refuse(
                "save_checkpoints",
                False,
                "a cheap retraining keeps no training state to resume from",
                "retrain from scratch (without resume_run_id), or keep save_checkpoints=true",
            )


@dataclass(frozen=True)
class InfluenceConfig(StepConfig):
    """Exact TracIn of every training example on every test example of a train run."""

    step: ClassVar[str] = "influence"
    upstream_field: ClassVar[str | None] = "train_run_id"

    train_run_id: str = param("", "MLflow run ID of a finished train run", checks.RunRef("train"))
    checkpoints: str = param(
        "all",
        "'all' or comma-separated checkpoint names, e.g. epoch-1,epoch-3",
        checks.Pattern(
            r"all|\s*epoch-\d+\s*(,\s*epoch-\d+\s*)*", "'all' or names such as epoch-1,epoch-3"
        ),
    )
    params: str = param(
        "all",
        "parameters to trace: 'all', 'last-layer', or a regex on parameter names",
        checks.Regex(),
    )
    precision: str = param(
        "fp32",
        "fp32, or bf16/fp16 compute with fp32 accumulation (GPU)",
        checks.OneOf(PRECISIONS),
    )
    batch_size: int = param(32, "training examples per backward pass", checks.AtLeast(1))
    test_chunk_size: int = param(
        0,
        "test examples cached at once; 0 picks as many as fit 30% of the device's memory (at "
        "most 3 GiB on the CPU), sized by the data's token lengths",
        checks.AtLeast(0),
    )
    test_gradients: str = param(
        "auto",
        "keep (form each test gradient once and hold it), reform (hold only its factors and "
        "form it again per block of contraction_rows: less memory, more arithmetic), or "
        "auto (with test_chunk_size=0, reform where that fits the test set in fewer chunks; "
        "else keep)",
        checks.OneOf(TEST_GRADIENTS),
    )
    train_chunk_size: int = param(
        2048,
        "training examples per committed chunk: the unit of progress and of resume",
        checks.AtLeast(1),
    )
    contraction_rows: int = param(
        128,
        "training examples whose per-layer gradients are multiplied with the test side at "
        "once (whole batches; at most batch_size per block when smaller): more is faster on "
        "sentence-length data and holds that many examples' activations and gradients",
        checks.AtLeast(1),
    )
    method: str = param(
        "dot",
        ", ".join(f"{m.name} ({m.help})" for m in METHODS.values()),
        checks.OneOf(tuple(METHODS)),
    )
    store_scores: bool = param(
        True,
        "log the full [n_test, n_train] matrices; false keeps only top-k (memory ~ top-k)",
        checks.Flag(),
    )
    self_influence: bool = param(
        False,
        "also log <grad L(z), grad L(z)> per train example (always on with cosine)",
        checks.Flag(),
    )
    top_k: int = param(
        100,
        "proponents and opponents kept per test example in topk.parquet",
        checks.AtLeast(1),
    )
    resume_run_id: str = param(
        "",
        "an interrupted influence run whose finished chunks to reuse",
        checks.RunRef("influence", optional=True, finished=False),
    )
    threads: int = threads_field()
    accelerate_config: str = accelerate_config_field()

    @cached_property
    def checkpoint_names(self) -> tuple[str, ...] | None:
        """The checkpoints to score by name, in the given order; None: all of them."""
        return None if self.checkpoints.strip() == "all" else checks.items(self.checkpoints)

    def _name_parts(self) -> list[str]:
        return [self.method, f"params {self.params}", self.precision, *super()._name_parts()]


@dataclass(frozen=True)
class AnalyzeConfig(StepConfig):
    """Language shares of the most influential training examples."""

    step: ClassVar[str] = "analyze"
    upstream_field: ClassVar[str | None] = "influence_run_id"

    influence_run_id: str = param(
        "", "MLflow run ID of a finished influence run", checks.RunRef("influence")
    )
    top_k: int = param(
        100,
        "proponents/opponents per test example counted in the shares",
        checks.AtLeast(1),
    )

    def _name_parts(self) -> list[str]:
        return [f"top-{self.top_k}", *super()._name_parts()]


def check_data(config: TrainConfig | MainConfig) -> None:
    """Rules between the data parameters of train (and main)."""
    heldout = config.heldout
    if heldout and heldout not in config.language_codes:
        raise refuse(
            "heldout_language",
            heldout,
            f"not among languages={config.languages!r}",
            f"add it to languages ({config.languages},{heldout}): it is then tested but never "
            "trained on",
        )
    if heldout and not config.train_languages:
        raise refuse(
            "heldout_language",
            heldout,
            "every language is held out",
            "add at least one training language",
        )
    config.train_counts  # noqa: B018 (parsed now: a bad count is refused before any run)
    if refused := SOURCES[config.dataset].refusal(config.data_path, config.column_map):
        raise refuse(*refused)


def data_name_parts(config: TrainConfig | MainConfig) -> list[str]:
    parts = [config.dataset, config.model, config.languages]
    counts = config.train_per_language
    parts.append(f"{counts}/lang" if "=" not in counts else counts)
    if config.heldout_language:
        parts.append(f"zero-shot {config.heldout_language}")
    return [*parts, f"seed {config.seed}"]
