"""Each step's `run`, by step name: what `xlinfluence <step>` and the MLproject entry points
execute (cli.execute). Importing it imports every step (torch, transformers, accelerate),
so the CLI imports it only when a step runs, not for `--help`."""

from __future__ import annotations

from collections.abc import Callable

from xlinfluence.config import AnalyzeConfig, InfluenceConfig, StepConfig, TrainConfig
from xlinfluence.config.main import MainConfig
from xlinfluence.steps import analyze, influence, main, train

RUNNERS: dict[str, Callable[[StepConfig], object]] = {
    TrainConfig.step: train.run,
    InfluenceConfig.step: influence.run,
    AnalyzeConfig.step: analyze.run,
    MainConfig.step: main.run,
}
