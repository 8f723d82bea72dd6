"""Language-share analysis of TracIn scores (Choenni, Garrette & Shutova 2023).

Pure computation and figures; the analyze step logs what these return.
- ``topk``: top-k proponents/opponents and the long top-k table.
- ``shares``: language shares, share matrices, own-language and cross-lingual shares.
- ``translation``: reinforcing (translation) vs complementary cross-lingual proponents.
- ``plots``: heatmaps, curves over checkpoints, translation bars.
"""

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
    "example_shares",
    "language_shares",
    "self_shares",
    "share_matrix",
    "top_k",
    "topk_table",
    "topk_table_from",
    "translation_share",
    "translation_share_per_example",
]
