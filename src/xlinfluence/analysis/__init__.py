"""Language-share analysis of TracIn scores (Choenni, Garrette & Shutova 2023).

Pure computation and figures; the analyze step logs what these return.
- ``topk``: top-k proponents/opponents and the long top-k table.
- ``shares``: language shares, share matrices, own-language and cross-lingual shares.
- ``translation``: reinforcing (translation) vs complementary cross-lingual proponents.
- ``bootstrap``: percentile bootstrap intervals over test examples (and pooled over seeds).
- ``mass``: influence mass (sums of positive / negative scores) per training language.
- ``plots``: heatmaps, curves over checkpoints, translation bars, share bars with intervals.
"""

from xlinfluence.analysis.bootstrap import (
    bootstrap_means,
    hierarchical_bootstrap_means,
    pooled_self_share_intervals,
    pooled_share_intervals,
    pooled_translation_share_intervals,
    self_share_intervals,
    share_intervals,
    translation_share_intervals,
)
from xlinfluence.analysis.mass import example_mass, influence_mass
from xlinfluence.analysis.shares import (
    example_shares,
    language_shares,
    self_shares,
    share_matrix,
)
from xlinfluence.analysis.topk import (
    OPPONENT,
    PROPONENT,
    StreamingTopK,
    top_k,
    topk_table,
    topk_table_from,
)
from xlinfluence.analysis.translation import (
    aggregate_translation_share,
    translation_influence,
    translation_share,
    translation_share_per_example,
)
from xlinfluence.artifacts import TOTAL

__all__ = [
    "OPPONENT",
    "PROPONENT",
    "TOTAL",
    "StreamingTopK",
    "aggregate_translation_share",
    "bootstrap_means",
    "example_mass",
    "example_shares",
    "hierarchical_bootstrap_means",
    "influence_mass",
    "language_shares",
    "pooled_self_share_intervals",
    "pooled_share_intervals",
    "pooled_translation_share_intervals",
    "self_share_intervals",
    "self_shares",
    "share_intervals",
    "share_matrix",
    "top_k",
    "topk_table",
    "topk_table_from",
    "translation_influence",
    "translation_share",
    "translation_share_intervals",
    "translation_share_per_example",
]
