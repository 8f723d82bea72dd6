"""The machinery every step's config shares: one frozen dataclass per step whose fields are
the single source of parameter names, defaults, help and checks.

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

#: Parameters renamed since runs were logged under the old name (old -> new): a logged run
#: still parses; `similarity` became `method` when EK-FAC made it more than a similarity.
RENAMED = {"similarity": "method"}


def param(default: Any, help: str, check: Check) -> Any:
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


def threads_field() -> Any:
    return param(
        0,
        "CPU threads per process for torch (0: torch's default, one per core)",
        checks.AtLeast(0),
    )


def accelerate_config_field() -> Any:
    return param(
        "",
        "Accelerate config file; empty runs one plain process",
        checks.PathRef("file"),
    )


def same_as(cls: type[StepConfig], name: str) -> Any:
    """A field declared again in another step's config (MainConfig), with the owning
    step's default, help and check."""
    owner = {f.name: f for f in dataclasses.fields(cls)}[name]
    return field(default=owner.default, metadata=owner.metadata)
