"""One config dataclass per step: the single source of parameter names, defaults and help.

The CLI builds its options from these fields, the MLproject declares the same parameters
(a test holds them in step), and the logged MLflow params are `to_params()`, so a run's
parameters compare equal as strings whichever way it was launched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from xlinfluence.errors import ConfigError

C = TypeVar("C", bound="StepConfig")


def _param(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class StepConfig:
    """Base: string round-trip of a step's parameters."""

    step: ClassVar[str]
    upstream_field: ClassVar[str | None] = None  # the parameter naming the upstream run

    @property
    def upstream_run_id(self) -> str:
        return getattr(self, self.upstream_field) if self.upstream_field else ""

    def to_params(self) -> dict[str, str]:
        """Canonical string form, as logged to MLflow and compared for run reuse."""
        return {f.name: _to_str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_params(cls: type[C], params: dict[str, Any]) -> C:
        """Parse string parameters (from the CLI, MLflow or a logged run) into a config."""
        known = {f.name: f for f in dataclasses.fields(cls)}
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
                raise ConfigError(
                    f"parameter {name}={value!r} of step '{cls.step}' is not a valid "
                    f"{kind.__name__}"
                ) from err
        return cls(**values)

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
    return _param(0, "CPU threads per process for torch (0: torch's default, one per core)")


@dataclass(frozen=True)
class TrainConfig(StepConfig):
    """Fine-tune a multilingual encoder on several languages, one checkpoint per epoch."""

    step: ClassVar[str] = "train"

    dataset: str = _param(
        "cldr", "cldr (built-in, offline), sib200, xnli, paws-x, marc, or local (your files)"
    )
    data_path: str = _param(
        "", "local copy: save_to_disk root (<path>/<lang>) for hub tasks, file or dir for local"
    )
    column_map: str = _param("", "schema=column pairs, e.g. 'text=premise,text_pair=hypothesis'")
    languages: str = _param("en,de,fr,ru,zh", "comma-separated languages to fine-tune and test on")
    train_per_language: str = _param(
        "400", "training examples per language: one number, or 'en=400,de=100,...' for imbalance"
    )
    test_per_language: int = _param(25, "test examples per language")
    heldout_language: str = _param("", "zero-shot language: in the test set, never in training")
    model: str = _param(
        "e5-small",
        "'e5-small' (pretrained multilingual-e5-small, offline), 'tiny' (random XLM-R-shaped "
        "preset for tests), or a hub name / local folder such as xlm-roberta-base",
    )
    trim_vocab: bool = _param(
        True, "pretrained models: keep only the vocabulary rows the selected data uses (exact)"
    )
    epochs: int = _param(3, "fine-tuning epochs; one checkpoint is saved after each")
    batch_size: int = _param(16, "training batch size per process")
    learning_rate: float = _param(
        1e-4, "peak AdamW learning rate (1e-4 suits e5-small; use 1e-3 for tiny)"
    )
    weight_decay: float = _param(0.01, "AdamW weight decay")
    warmup_ratio: float = _param(0.1, "fraction of steps with linear warm-up, then linear decay")
    max_length: int = _param(128, "maximum tokens per example (truncation)")
    seed: int = _param(42, "seed for data selection, initialisation and shuffling")
    threads: int = _threads()
    accelerate_config: str = _param("", "Accelerate config file; empty runs one plain process")


@dataclass(frozen=True)
class InfluenceConfig(StepConfig):
    """Exact TracIn of every training example on every test example of a train run."""

    step: ClassVar[str] = "influence"
    upstream_field: ClassVar[str | None] = "train_run_id"

    train_run_id: str = _param("", "MLflow run ID of a finished train run")
    checkpoints: str = _param(
        "all", "'all' or comma-separated checkpoint names, e.g. epoch-1,epoch-3"
    )
    params: str = _param(
        "all", "parameters to trace: 'all', 'last-layer', or a regex on parameter names"
    )
    precision: str = _param("fp32", "fp32, or bf16/fp16 compute with fp32 accumulation (GPU)")
    batch_size: int = _param(32, "training examples per backward pass")
    test_chunk_size: int = _param(
        0, "test examples cached at once; 0 picks as many as fit 30% of the device's memory"
    )
    train_chunk_size: int = _param(
        2048, "training examples per committed chunk: the unit of progress and of resume"
    )
    similarity: str = _param(
        "dot", "dot (TracIn) or cosine (each gradient normalised to unit length per checkpoint)"
    )
    store_scores: bool = _param(
        True, "log the full [n_test, n_train] matrices; false keeps only top-k (memory ~ top-k)"
    )
    self_influence: bool = _param(
        False, "also log <grad L(z), grad L(z)> per train example (always on with cosine)"
    )
    top_k: int = _param(100, "proponents and opponents kept per test example in topk.parquet")
    resume_run_id: str = _param("", "an interrupted influence run whose finished chunks to reuse")
    threads: int = _threads()
    accelerate_config: str = _param("", "Accelerate config file; empty runs one plain process")


@dataclass(frozen=True)
class AnalyzeConfig(StepConfig):
    """Language shares of the most influential training examples."""

    step: ClassVar[str] = "analyze"
    upstream_field: ClassVar[str | None] = "influence_run_id"

    influence_run_id: str = _param("", "MLflow run ID of a finished influence run")
    top_k: int = _param(100, "proponents/opponents per test example counted in the shares")


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
    model: str = _same(_T, "model")
    trim_vocab: bool = _same(_T, "trim_vocab")
    epochs: int = _same(_T, "epochs")
    batch_size: int = _same(_T, "batch_size")
    learning_rate: float = _same(_T, "learning_rate")
    weight_decay: float = _same(_T, "weight_decay")
    warmup_ratio: float = _same(_T, "warmup_ratio")
    max_length: int = _same(_T, "max_length")
    seed: int = _same(_T, "seed")
    threads: int = _same(_T, "threads")
    checkpoints: str = _same(_I, "checkpoints")
    params: str = _same(_I, "params")
    precision: str = _same(_I, "precision")
    influence_batch_size: int = _param(
        _I.batch_size, "influence: training examples per backward pass"
    )
    test_chunk_size: int = _same(_I, "test_chunk_size")
    train_chunk_size: int = _same(_I, "train_chunk_size")
    similarity: str = _same(_I, "similarity")
    store_scores: bool = _same(_I, "store_scores")
    self_influence: bool = _same(_I, "self_influence")
    top_k: int = _same(_A, "top_k")
    accelerate_config: str = _param("", "Accelerate config for train and influence; empty: plain")
    experiment: str = _param(
        "", "'' runs one pipeline; zero-shot, imbalance or seeds run one child per setting"
    )
    experiment_values: str = _param(
        "",
        "zero-shot: languages to hold out (default all); imbalance: ratios for the first "
        "language (default 1,2,4); seeds: seeds (default 1,2,3)",
    )

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
