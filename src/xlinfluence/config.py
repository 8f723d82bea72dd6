"""One config dataclass per step: the single source of parameter names, defaults and help.

The CLI builds its options from these fields, the MLproject declares the same parameters
(a test holds them in step), and the logged MLflow params are `to_params()`, so a run's
parameters compare equal as strings whichever way it was launched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from xlinfluence import checks
from xlinfluence.checks import Check, refuse
from xlinfluence.errors import ConfigError

C = TypeVar("C", bound="StepConfig")

DATASETS = ("cldr", "sib200", "xnli", "paws-x", "marc", "local")
PRESETS = ("e5-small", "tiny")
PRECISIONS = ("fp32", "bf16", "fp16")
TRAIN_CONTENTS = ("parallel", "disjoint")  # data/select.py
REMOVAL_STEPS = ("fixed", "proportional")  # steps/train.py
#: Parameters renamed since runs were logged under the old name (old -> new): a logged run
#: still parses; `similarity` became `method` when EK-FAC made it more than a similarity.
RENAMED = {"similarity": "method"}
#: tracin/methods.py
METHOD_NAMES = ("dot", "cosine", "representation", "ekfac", "metagradient", "label-only")
TEST_GRADIENTS = ("auto", "keep", "reform")  # tracin/memory.py plan_test_side
EXPERIMENTS = (
    "zero-shot",
    "imbalance",
    "seeds",
    "counterfactual",
    "methods",
    "lds",
    "leave-language-out",
    "language-datamodel",
)
BACKENDS = ("local", "kubernetes")
#: experiment=methods: attribution variants of one fine-tuning run (the train run is shared).
#: Each names its method and parameters in full, whatever the run's own settings.
ATTRIBUTION_METHODS = {
    "dot-all": {"method": "dot", "params": "all"},
    "cosine": {"method": "cosine", "params": "all"},
    "last-layer": {"method": "dot", "params": "last-layer"},
    "embeddings-only": {"method": "dot", "params": "embeddings"},
    "no-embeddings": {"method": "dot", "params": "^(?!.*embeddings)"},
    "cosine-word-embeddings": {"method": "cosine", "params": "word_embeddings"},
    "representation": {"method": "representation", "params": "all"},
    "ekfac": {"method": "ekfac", "params": "all"},
    "metagradient": {"method": "metagradient", "params": "all"},
    "label-only": {"method": "label-only", "params": "all"},
}
#: Scored only when named in experiment_values (their cost grows with the test set).
ON_REQUEST = ("metagradient",)
#: MainConfig fields that only an experiment reads; without_experiment resets them.
EXPERIMENT_FIELDS = (
    "experiment",
    "experiment_values",
    "removal_k",
    "control_draws",
    "subsets",
    "subset_fraction",
    "subset_by",
    "retrain_seeds",
    "removal_steps",
    "cut_fraction",
    "design",
    "pilot_only",
    "workers",
    "backend",
    "backend_config",
)
SCHEMA_COLUMNS = ("id", "language", "label", "pair_id", "text", "text_pair")


def _param(default: Any, help: str, check: Check) -> Any:
    return field(default=default, metadata={"help": help, "check": check})


def check_of(f: dataclasses.Field) -> Check:
    return f.metadata["check"]


@dataclass(frozen=True)
class StepConfig:
    """Base: string round-trip of a step's parameters."""

    step: ClassVar[str]
    upstream_field: ClassVar[str | None] = None  # the parameter naming the upstream run

    def __post_init__(self) -> None:
        """Every value is checked when the config is built: before any data or run."""
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), type(f.default)
            if kind is float and type(value) is int:
                value = float(value)
                object.__setattr__(self, f.name, value)
            if type(value) is not kind:
                raise refuse(f.name, value, f"not a {kind.__name__}", f"give {check_of(f).accepts}")
            check_of(f)(f.name, value)
        self._check_combinations()

    def _check_combinations(self) -> None:
        """Rules between fields (a step overrides it)."""

    @property
    def upstream_run_id(self) -> str:
        return getattr(self, self.upstream_field) if self.upstream_field else ""

    def run_name(self) -> str:
        """What the MLflow UI lists: the step and what sets this run apart."""
        return " · ".join([self.step, *self._name_parts()])

    def _name_parts(self) -> list[str]:
        return [f"{self.upstream_field.removesuffix('_run_id')} {self.upstream_run_id[:8]}"]

    def to_params(self) -> dict[str, str]:
        """Canonical string form, as logged to MLflow and compared for run reuse."""
        return {f.name: _to_str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_params(cls: type[C], params: dict[str, Any]) -> C:
        """Parse string parameters (from the CLI, MLflow or a logged run) into a config."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        params = {RENAMED.get(k, k) if RENAMED.get(k) in known else k: v for k, v in params.items()}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) {unknown} for step '{cls.step}'; known: {sorted(known)}"
            )
        values = {}
        for name, value in params.items():
            kind = type(known[name].default)
            try:
                values[name] = _from_str(value, kind)
            except ValueError as err:
                accepts = check_of(known[name]).accepts
                raise refuse(
                    name, value, f"not a valid {kind.__name__}", f"give {accepts}"
                ) from err
        return cls(**values)

    @staticmethod
    def to_text(value: Any) -> str:
        """One value in its canonical string form."""
        return _to_str(value)

    @classmethod
    def canonical(cls, params: dict[str, Any]) -> dict[str, str]:
        """Parameters as they would be logged, whatever their spelling (e.g. '1e-3' vs '0.001')."""
        return cls.from_params(params).to_params()


def _to_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _from_str(value: Any, kind: type) -> Any:
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    if kind is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(text)
    if kind is int:
        number = float(text)  # MLflow passes numbers as floats, e.g. "3.0"
        if not number.is_integer():
            raise ValueError(text)
        return int(number)
    if kind is float:
        return float(text)
    return text


def _threads() -> Any:
    return _param(
        0,
        "CPU threads per process for torch (0: torch's default, one per core)",
        checks.AtLeast(0),
    )


def _accelerate_config() -> Any:
    return _param(
        "",
        "Accelerate config file; empty runs one plain process",
        checks.PathRef("file"),
    )


@dataclass(frozen=True)
class TrainConfig(StepConfig):
    """Fine-tune a multilingual encoder on several languages, one checkpoint per epoch."""

    step: ClassVar[str] = "train"

    dataset: str = _param(
        "cldr",
        "cldr (built-in, offline), sib200, xnli, paws-x, marc, or local (your files)",
        checks.OneOf(DATASETS),
    )
    data_path: str = _param(
        "",
        "local copy: SIB-200's data/annotated folder, save_to_disk root (<path>/<lang>) for "
        "xnli/paws-x/marc, a file or folder for local",
        checks.PathRef("file or folder"),
    )
    column_map: str = _param(
        "",
        "schema=column pairs, e.g. 'text=premise,text_pair=hypothesis'",
        checks.KeyValues(SCHEMA_COLUMNS),
    )
    languages: str = _param(
        "en,de,fr,ru,zh",
        "comma-separated languages to fine-tune and test on (the held-out one included)",
        checks.Languages(),
    )
    train_per_language: str = _param(
        "400",
        "training examples per language: one number, or 'en=400,de=100,...' for imbalance",
        checks.Counts(),
    )
    test_per_language: int = _param(25, "test examples per language", checks.AtLeast(1))
    heldout_language: str = _param(
        "",
        "zero-shot language: one of `languages`, tested but never trained on",
        checks.Languages(single=True),
    )
    train_content: str = _param(
        "parallel",
        "parallel: every training language gets translations of the same sentences where the "
        "source is parallel (the paper's setting); disjoint: each language gets sentences no "
        "other training language has, label-stratified within the language (a language "
        "then brings content of its own, so removing it can matter)",
        checks.OneOf(TRAIN_CONTENTS),
    )
    model: str = _param(
        "e5-small",
        "'e5-small' (pretrained multilingual-e5-small, offline), 'tiny' (random XLM-R-shaped "
        "preset for tests), or a hub name / local folder such as xlm-roberta-base",
        checks.ModelRef(PRESETS),
    )
    trim_vocab: bool = _param(
        True,
        "pretrained models: keep only the vocabulary rows the selected data uses (exact)",
        checks.Flag(),
    )
    epochs: int = _param(
        3, "fine-tuning epochs; one checkpoint is saved after each", checks.AtLeast(1)
    )
    batch_size: int = _param(16, "training batch size per process", checks.AtLeast(1))
    learning_rate: float = _param(
        1e-4,
        "peak AdamW learning rate (1e-4 suits e5-small; use 1e-3 for tiny)",
        checks.Real(0.0, 1.0, strict_low=True),
    )
    weight_decay: float = _param(0.01, "AdamW weight decay", checks.Real(0.0))
    warmup_ratio: float = _param(
        0.1,
        "fraction of steps with linear warm-up, then linear decay",
        checks.Real(0.0, 1.0),
    )
    max_length: int = _param(128, "maximum tokens per example (truncation)", checks.AtLeast(4))
    train_precision: str = _param(
        "fp32",
        "fine-tuning arithmetic: fp32, or bf16 / fp16 autocast (weights, optimizer state and "
        "sums in fp32) where the hardware has it natively; a study's base run and its "
        "retrainings share it",
        checks.OneOf(PRECISIONS),
    )
    seed: int = _param(
        42, "seed for data selection, initialisation and shuffling", checks.AtLeast(0)
    )
    resume_run_id: str = _param(
        "",
        "a killed train run to continue from its last complete epoch (same parameters)",
        checks.RunRef("train", optional=True, finished=False),
    )
    train_seed: int = _param(
        -1,
        "seed for initialisation and training order, apart from the data seed (retraining "
        "seeds); -1: the same as seed",
        checks.AtLeast(-1),
    )
    remove: str = _param(
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
    removal_steps: str = _param(
        "fixed",
        "a retraining without rows (remove=...): fixed keeps the full run's batches and "
        "learning-rate schedule and skips the removed rows (a batch left empty is skipped), "
        "so it differs from the full run by those rows alone; proportional trains the kept "
        "rows as a set of their own, steps in proportion (fewer steps: less training, not "
        "only less data)",
        checks.OneOf(REMOVAL_STEPS),
    )
    save_checkpoints: bool = _param(
        True,
        "false: a cheap retraining that logs its last epoch's test outputs and the kept rows "
        "only (no checkpoints, no training state; it cannot be resumed or scored by influence)",
        checks.Flag(),
    )
    threads: int = _threads()
    accelerate_config: str = _accelerate_config()

    def _name_parts(self) -> list[str]:
        parts = _data_name_parts(self)
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
        _check_data(self)
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

    train_run_id: str = _param("", "MLflow run ID of a finished train run", checks.RunRef("train"))
    checkpoints: str = _param(
        "all",
        "'all' or comma-separated checkpoint names, e.g. epoch-1,epoch-3",
        checks.Pattern(
            r"all|\s*epoch-\d+\s*(,\s*epoch-\d+\s*)*", "'all' or names such as epoch-1,epoch-3"
        ),
    )
    params: str = _param(
        "all",
        "parameters to trace: 'all', 'last-layer', or a regex on parameter names",
        checks.Regex(),
    )
    precision: str = _param(
        "fp32",
        "fp32, or bf16/fp16 compute with fp32 accumulation (GPU)",
        checks.OneOf(PRECISIONS),
    )
    batch_size: int = _param(32, "training examples per backward pass", checks.AtLeast(1))
    test_chunk_size: int = _param(
        0,
        "test examples cached at once; 0 picks as many as fit 30% of the device's memory (at "
        "most 3 GiB on the CPU), sized by the data's token lengths",
        checks.AtLeast(0),
    )
    test_gradients: str = _param(
        "auto",
        "keep (form each test gradient once and hold it), reform (hold only its factors and "
        "form it again per block of contraction_rows: less memory, more arithmetic), or "
        "auto (with test_chunk_size=0, reform where that fits the test set in fewer chunks; "
        "else keep)",
        checks.OneOf(TEST_GRADIENTS),
    )
    train_chunk_size: int = _param(
        2048,
        "training examples per committed chunk: the unit of progress and of resume",
        checks.AtLeast(1),
    )
    contraction_rows: int = _param(
        128,
        "training examples whose per-layer gradients are multiplied with the test side at "
        "once (whole batches; at most batch_size per block when smaller): more is faster on "
        "sentence-length data and holds that many examples' activations and gradients",
        checks.AtLeast(1),
    )
    method: str = _param(
        "cosine",
        "cosine (TracIn with each gradient normalised to unit length per checkpoint: the "
        "default, as it predicts retraining best at the level of examples, docs/findings.md "
        "1f), dot (TracIn as in the "
        "paper), representation (cosine of the <s> hidden states: a gradient-free baseline), "
        "ekfac (influence functions with EK-FAC curvature over the selection's Linear layers), "
        "metagradient (exact data-weight gradients of each test loss through the whole "
        "fine-tuning, replayed: about 3 trainings per test example), or label-only (+1 for a "
        "training row of the test example's label, -1/(C-1) otherwise: the label-count "
        "baseline)",
        checks.OneOf(METHOD_NAMES),
    )
    store_scores: bool = _param(
        True,
        "log the full [n_test, n_train] matrices; false keeps only top-k (memory ~ top-k)",
        checks.Flag(),
    )
    self_influence: bool = _param(
        False,
        "also log <grad L(z), grad L(z)> per train example (always on with cosine)",
        checks.Flag(),
    )
    top_k: int = _param(
        100,
        "proponents and opponents kept per test example in topk.parquet",
        checks.AtLeast(1),
    )
    resume_run_id: str = _param(
        "",
        "an interrupted influence run whose finished chunks to reuse",
        checks.RunRef("influence", optional=True, finished=False),
    )
    threads: int = _threads()
    accelerate_config: str = _accelerate_config()

    def _name_parts(self) -> list[str]:
        return [self.method, f"params {self.params}", self.precision, *super()._name_parts()]


@dataclass(frozen=True)
class AnalyzeConfig(StepConfig):
    """Language shares of the most influential training examples."""

    step: ClassVar[str] = "analyze"
    upstream_field: ClassVar[str | None] = "influence_run_id"

    influence_run_id: str = _param(
        "", "MLflow run ID of a finished influence run", checks.RunRef("influence")
    )
    top_k: int = _param(
        100,
        "proponents/opponents per test example counted in the shares",
        checks.AtLeast(1),
    )

    def _name_parts(self) -> list[str]:
        return [f"top-{self.top_k}", *super()._name_parts()]


def _check_data(config: TrainConfig | MainConfig) -> None:
    """Rules between the data parameters of train (and main)."""
    languages = [c.strip() for c in config.languages.split(",")]
    heldout = config.heldout_language.strip()
    if heldout and heldout not in languages:
        raise refuse(
            "heldout_language",
            heldout,
            f"not among languages={config.languages!r}",
            f"add it to languages ({config.languages},{heldout}): it is then tested but never "
            "trained on",
        )
    if heldout and len(languages) < 2:
        raise refuse(
            "heldout_language",
            heldout,
            "every language is held out",
            "add at least one training language",
        )
    train_counts(config)
    if config.dataset == "cldr" and (config.data_path or config.column_map):
        name = "data_path" if config.data_path else "column_map"
        raise refuse(
            name,
            getattr(config, name),
            "cldr is built in and takes none",
            "leave it empty, or use dataset=local for your own files",
        )
    if config.dataset == "local" and not config.data_path:
        raise refuse(
            "data_path",
            "",
            "dataset=local reads your files",
            "give a .jsonl/.csv/.parquet file or a folder with train and test files",
        )
    if config.dataset == "sib200" and config.column_map:
        raise refuse(
            "column_map", config.column_map, "SIB-200 has fixed columns", "leave column_map empty"
        )


def train_counts(config: TrainConfig | MainConfig) -> dict[str, int]:
    """Training examples per training language (a count for the held-out one is ignored)."""
    languages = [c.strip() for c in config.languages.split(",")]
    heldout = config.heldout_language.strip()
    train = [lang for lang in languages if lang != heldout]
    text = config.train_per_language.strip()
    if "=" not in text:
        return dict.fromkeys(train, int(text))
    counts = {k.strip(): int(v) for k, _, v in (e.partition("=") for e in text.split(","))}
    missing = [lang for lang in train if lang not in counts]
    extra = [lang for lang in counts if lang not in languages]
    if missing or extra:
        raise refuse(
            "train_per_language",
            text,
            (f"no count for {missing}" if missing else f"{extra} are not among the languages"),
            f"give one count for each of {train}, or one number for all",
        )
    return {lang: counts[lang] for lang in train}


def _data_name_parts(config: TrainConfig | MainConfig) -> list[str]:
    parts = [config.dataset, config.model, config.languages]
    counts = config.train_per_language
    parts.append(f"{counts}/lang" if "=" not in counts else counts)
    if config.heldout_language:
        parts.append(f"zero-shot {config.heldout_language}")
    return [*parts, f"seed {config.seed}"]


_T, _I, _A = TrainConfig, InfluenceConfig, AnalyzeConfig  # short names for MainConfig below


def _same(cls: type[StepConfig], name: str) -> Any:
    """A field declared again in MainConfig, with the owning step's default and help."""
    owner = {f.name: f for f in dataclasses.fields(cls)}[name]
    return field(default=owner.default, metadata=owner.metadata)


@dataclass(frozen=True)
class MainConfig(StepConfig):
    """train -> influence -> analyze, reusing finished runs with matching parameters."""

    step: ClassVar[str] = "main"

    dataset: str = _same(_T, "dataset")
    data_path: str = _same(_T, "data_path")
    column_map: str = _same(_T, "column_map")
    languages: str = _same(_T, "languages")
    train_per_language: str = _same(_T, "train_per_language")
    test_per_language: int = _same(_T, "test_per_language")
    heldout_language: str = _same(_T, "heldout_language")
    train_content: str = _same(_T, "train_content")
    model: str = _same(_T, "model")
    trim_vocab: bool = _same(_T, "trim_vocab")
    epochs: int = _same(_T, "epochs")
    batch_size: int = _same(_T, "batch_size")
    learning_rate: float = _same(_T, "learning_rate")
    weight_decay: float = _same(_T, "weight_decay")
    warmup_ratio: float = _same(_T, "warmup_ratio")
    max_length: int = _same(_T, "max_length")
    train_precision: str = _same(_T, "train_precision")
    seed: int = _same(_T, "seed")
    threads: int = _same(_T, "threads")
    checkpoints: str = _same(_I, "checkpoints")
    params: str = _same(_I, "params")
    precision: str = _same(_I, "precision")
    influence_batch_size: int = _param(
        _I.batch_size, "influence: training examples per backward pass", checks.AtLeast(1)
    )
    test_chunk_size: int = _same(_I, "test_chunk_size")
    test_gradients: str = _same(_I, "test_gradients")
    train_chunk_size: int = _same(_I, "train_chunk_size")
    contraction_rows: int = _same(_I, "contraction_rows")
    method: str = _same(_I, "method")
    store_scores: bool = _same(_I, "store_scores")
    self_influence: bool = _same(_I, "self_influence")
    top_k: int = _same(_A, "top_k")
    accelerate_config: str = _param(
        "",
        "Accelerate config for train and influence; empty: plain",
        checks.PathRef("file"),
    )
    experiment: str = _param(
        "",
        "'' runs one pipeline; zero-shot, imbalance, seeds, counterfactual, methods, lds or "
        "leave-language-out run one child per setting (docs/analysis.md)",
        checks.OneOf(("", *EXPERIMENTS)),
    )
    experiment_values: str = _param(
        "",
        "zero-shot: languages to hold out (default all); imbalance: ratios for the first "
        "language (default 1,2,4); seeds: seeds (default 1,2,3); counterfactual: test "
        "languages L or L:X pairs (default every pair); methods, lds, leave-language-out: "
        "the attribution methods to score (default all but metagradient, which is named "
        "to be scored)",
        checks.Pattern(r"[\w.:-]*(,[\w.:-]+)*", "empty, or comma-separated values"),
    )
    removal_k: int = _param(
        25,
        "counterfactual: training examples removed per (test language, training language)",
        checks.AtLeast(1),
    )
    control_draws: int = _param(
        3, "counterfactual: random same-label removals per pair, the control", checks.AtLeast(1)
    )
    subsets: int = _param(
        40, "lds: random training subsets, each retrained retrain_seeds times", checks.AtLeast(3)
    )
    subset_fraction: float = _param(
        0.5,
        "lds: fraction alpha of each training language a subset keeps",
        checks.Real(0.0, 1.0, strict_low=True),
    )
    subset_by: str = _param(
        "rows",
        "lds: draw subsets by rows of each language, by translation groups (pairs: "
        "pair_id), or by rows of each (language, label) cell (labels: every subset keeps the "
        "label proportions, so a score that counts same-label rows cannot predict it)",
        checks.OneOf(("rows", "pairs", "labels")),
    )
    retrain_seeds: int = _param(
        3,
        "lds, leave-language-out, language-datamodel: training seeds per retraining "
        "(train_seed 0..S-1)",
        checks.AtLeast(1),
    )
    removal_steps: str = _same(_T, "removal_steps")
    cut_fraction: float = _param(
        0.25,
        "language-datamodel: the fraction of a training language kept where the design cuts "
        "it (label-stratified, a fresh draw per composition)",
        checks.Real(0.0, 1.0, strict_low=True),
    )
    design: str = _param(
        "auto",
        "language-datamodel: two-level design over the training languages: full (2^k "
        "compositions), half (2^(k-1), resolution k), quarter (2^(k-2)), or auto (full up to "
        "4 languages, else half)",
        checks.OneOf(("auto", "full", "half", "quarter")),
    )
    pilot_only: bool = _param(
        False,
        "language-datamodel: run the pilot (full and all-cut compositions, 4 seeds each) and "
        "its power analysis only, to choose retrain_seeds before the design",
        checks.Flag(),
    )
    workers: int = _param(
        0,
        "retrainings run at once (0: what this machine's cores and memory bear)",
        checks.AtLeast(0),
    )
    backend: str = _param(
        "local",
        "MLflow Projects backend for retrainings: local, or kubernetes (docs/cluster.md)",
        checks.OneOf(BACKENDS),
    )
    backend_config: str = _param(
        "",
        "the backend's config file (kubernetes: JSON, docs/cluster.md)",
        checks.PathRef("file"),
    )

    def _check_combinations(self) -> None:
        _check_data(self)
        checks.experiment_values(self)
        if not 1e-6 <= round(self.subset_fraction, 6) <= 1 - 1e-6:
            raise refuse(
                "subset_fraction",
                self.subset_fraction,
                "rounds to 0 or 1 at the 6 decimals a retraining's spec keeps",
                "give a fraction between 0.000001 and 0.999999",
            )
        if self.backend == "kubernetes" and not self.backend_config:
            raise refuse(
                "backend_config",
                "",
                "the kubernetes backend needs its config (kube-job-template-path, repository-uri)",
                "give configs/kubernetes/backend_config.json, edited (docs/cluster.md)",
            )
        if self.experiment == "language-datamodel":
            from xlinfluence.analysis import design  # refuse a design before any run

            design.resolve(self.design, len(train_counts(self)))
        total = sum(train_counts(self).values())
        if self.top_k > total:
            raise refuse(
                "top_k",
                self.top_k,
                f"more than the {total} training examples asked for",
                f"give top_k <= {total}",
            )

    def _name_parts(self) -> list[str]:
        if self.experiment:
            return [f"{self.experiment} experiment", *_data_name_parts(self)[:3]]
        return _data_name_parts(self)

    def without_experiment(self) -> MainConfig:
        """The plain pipeline an experiment builds on: every experiment field at its
        default, so it is the very run `main` without the experiment makes (and reuses)."""
        defaults = {
            name: MainConfig.__dataclass_fields__[name].default for name in EXPERIMENT_FIELDS
        }
        return dataclasses.replace(self, **defaults)

    def train(self) -> TrainConfig:
        return TrainConfig(**_shared_values(self, TrainConfig))

    def influence(self, train_run_id: str) -> InfluenceConfig:
        return InfluenceConfig(
            **_shared_values(self, InfluenceConfig, exclude=("batch_size",)),
            train_run_id=train_run_id,
            batch_size=self.influence_batch_size,
        )

    def analyze(self, influence_run_id: str) -> AnalyzeConfig:
        return AnalyzeConfig(influence_run_id=influence_run_id, top_k=self.top_k)


def _shared_values(
    source: StepConfig, target: type[StepConfig], exclude: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The target step's fields that the source config also has, by name."""
    return {
        f.name: getattr(source, f.name)
        for f in dataclasses.fields(target)
        if hasattr(source, f.name) and f.name not in exclude
    }


STEP_CONFIGS: dict[str, type[StepConfig]] = {
    c.step: c for c in (TrainConfig, InfluenceConfig, AnalyzeConfig, MainConfig)
}
