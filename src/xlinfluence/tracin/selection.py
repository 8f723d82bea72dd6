"""Which parameters TracIn traces: all trainable ones (default), the last layer, or a regex."""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from xlinfluence.errors import ConfigError

ALL = "all"
LAST_LAYER = "last-layer"
_LAYER = re.compile(r"\.layer\.(\d+)\.")


def parameter_filter(spec: str, model: torch.nn.Module) -> Callable[[str], bool] | None:
    """A predicate on parameter names, or None for every trainable parameter.

    'last-layer' keeps the classifier head (with BERT's pooler) and the last encoder layer
    (the cheap variant of Pruthi et al. 2020, sec. 3.2); any other value is a regex searched
    in parameter names.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if spec == ALL:
        return None
    if spec == LAST_LAYER:
        layers = [int(m.group(1)) for n in names if (m := _LAYER.search(n))]
        last = f".layer.{max(layers)}." if layers else None
        keep = lambda name: (  # noqa: E731
            name.startswith("classifier.")
            or ".pooler." in name
            or (last is not None and last in name)
        )
    else:
        try:
            pattern = re.compile(spec)
        except re.error as err:
            raise ConfigError(f"params={spec!r} is not a valid regex ({err}).") from err
        keep = lambda name: pattern.search(name) is not None  # noqa: E731
    if not any(keep(n) for n in names):
        raise ConfigError(
            f"params={spec!r} selects no trainable parameter; names look like {names[:3]}. "
            f"Use '{ALL}', '{LAST_LAYER}', or a regex such as 'classifier|layer\\.3\\.'."
        )
    return keep
