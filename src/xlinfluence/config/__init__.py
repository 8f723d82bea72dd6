"""One config dataclass per step: the single source of parameter names, defaults and help.

`base` holds what every step's config shares, `steps` the train, influence and analyze
configs. The main step's config is `config.main.MainConfig`; it is not re-exported here
because it reads the experiment registry (xlinfluence.experiments), whose drivers import
the step configs from this package.
"""

from xlinfluence.config.base import RENAMED, StepConfig, check_of
from xlinfluence.config.steps import (
    DATASETS,
    AnalyzeConfig,
    InfluenceConfig,
    TrainConfig,
)

__all__ = [
    "DATASETS",
    "RENAMED",
    "AnalyzeConfig",
    "InfluenceConfig",
    "StepConfig",
    "TrainConfig",
    "check_of",
]
