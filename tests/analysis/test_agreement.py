"""Agreement between attribution methods' language shares."""

from __future__ import annotations

import pandas as pd

from xlinfluence.analysis import agreement
from xlinfluence.analysis.bootstrap import self_share_intervals, share_intervals
from xlinfluence.analysis.shares import example_shares, language_shares, self_shares
from xlinfluence.analysis.topk import topk_table

from .cases import OPPONENTS, PROPONENTS, TRAIN_LANGS, K, make_scores, make_test, make_train


def _tables(scores):
    train, test = make_train(), make_test()
    table = topk_table(scores, train, test, K)
    per_example = example_shares(table, train_languages=TRAIN_LANGS)
    shares = share_intervals(language_shares(table, train_languages=TRAIN_LANGS), per_example)
    own = self_share_intervals(self_shares(shares), per_example)
    return {"shares": shares, "self_shares": own, "topk": table, "checkpoint": "total"}


def test_a_method_agrees_with_itself_and_a_reversed_one_does_not():
    scores = {name: make_scores(pro, OPPONENTS) for name, pro in PROPONENTS.items()}
    reversed_ = {name: -s for name, s in scores.items()}
    methods = {agreement.REFERENCE: _tables(scores), "reversed": _tables(reversed_)}
    methods["epoch-2"] = methods[agreement.REFERENCE] | {"checkpoint": "epoch-2"}
    table, own = agreement.compare(methods, K)
    table = table.set_index("method")
    assert table.loc[agreement.REFERENCE, "spearman_rho"] == 1.0
    assert table.loc[agreement.REFERENCE, "topk_overlap"] == 1.0
    assert table.loc[agreement.REFERENCE, "own_disagreements"] == 0
    assert table.loc["reversed", "topk_overlap"] == 0.0
    assert set(own["method"]) == {agreement.REFERENCE, "reversed", "epoch-2"}
    agreement.figure(table.reset_index(), own)
    assert isinstance(own, pd.DataFrame)
