"""The MLproject file, rendered from the step configs: parameters are declared in one place.

`python -m xlinfluence.mlproject > MLproject` rewrites it; tests/test_mlproject.py fails
when the committed file and the configs disagree.
"""

from __future__ import annotations

import dataclasses

from xlinfluence.config import STEP_CONFIGS, StepConfig

HEADER = """\
name: xlinfluence

# Generated from src/xlinfluence/config.py by `python -m xlinfluence.mlproject > MLproject`.
# Every step: `mlflow run . -e <step> -P name=value`; see README.md.

conda_env: conda.yaml

entry_points:
"""


def _declaration(value: object) -> str:
    """MLflow parameter type and default; ints are 'float' because MLflow passes '3.0'."""
    if isinstance(value, bool):
        return f'{{type: string, default: "{"true" if value else "false"}"}}'
    if isinstance(value, int | float):
        return f"{{type: float, default: {value!r}}}"
    return f'{{type: string, default: "{value}"}}'


def _entry_point(cls: type[StepConfig]) -> str:
    fields = dataclasses.fields(cls)
    lines = [f"  {cls.step}:", "    parameters:"]
    lines += [f"      {f.name}: {_declaration(f.default)}" for f in fields]
    lines += ["    command: >-", f"      python entrypoints/{cls.step}.py"]
    lines += [f"      --{f.name.replace('_', '-')} {{{f.name}}}" for f in fields]
    return "\n".join(lines) + "\n"


def render() -> str:
    """main first (what `mlflow run .` runs), then the steps in pipeline order."""
    order = sorted(STEP_CONFIGS.values(), key=lambda cls: cls.step != "main")
    return HEADER + "".join(_entry_point(cls) for cls in order)


if __name__ == "__main__":
    print(render(), end="")
