"""Selection: determinism, parallel test sets, disjoint pairs, imbalance, order."""

import pandas as pd
import pytest

from xlinfluence.data import schema
from xlinfluence.data.select import Pools, select
from xlinfluence.errors import DataError

LANGS = ["en", "de", "fr"]


def parallel_pool(n=60, langs=LANGS, missing=()):
    """n pair_ids in each language; `missing` = (lang, pair index) rows left out."""
    rows = [
        {
            "id": f"{lang}-{i}",
            "language": lang,
            "label": i % 3,
            "pair_id": f"p{i}",
            "text": f"{lang} text {i}",
        }
        for lang in langs
        for i in range(n)
        if (lang, i) not in missing
    ]
    return schema.validate(pd.DataFrame(rows), where="test pool")


def flat_pool(n=40, langs=LANGS):
    rows = [
        {"id": f"{lang}-{i}", "language": lang, "label": i % 2, "text": f"{lang} {i}"}
        for lang in langs
        for i in range(n)
    ]
    return schema.validate(pd.DataFrame(rows), where="test pool")


def run(pools, *, train=("en", "de"), test=("en", "de", "fr"), counts=None, per=5, seed=0):
    counts = counts or {lang: 10 for lang in train}
    return select(
        pools,
        train_languages=list(train),
        test_languages=list(test),
        train_counts=counts,
        test_per_language=per,
        seed=seed,
        where="t",
    )


def pairs(frame, lang):
    return frame.loc[frame.language == lang, "pair_id"].tolist()


def test_deterministic_and_seed_dependent():
    pools = Pools(parallel_pool(), None, ["a", "b", "c"])
    a_train, a_test = run(pools, seed=1)
    b_train, b_test = run(pools, seed=1)
    pd.testing.assert_frame_equal(a_train, b_train)
    pd.testing.assert_frame_equal(a_test, b_test)
    c_train, c_test = run(pools, seed=2)
    assert set(c_test.pair_id) != set(a_test.pair_id)
    assert set(c_train.pair_id) != set(a_train.pair_id)


def test_independent_of_pool_row_order():
    pool = parallel_pool()
    shuffled = pool.sample(frac=1.0, random_state=3).reset_index(drop=True)
    a = run(Pools(pool, None, []))
    b = run(Pools(shuffled, None, []))
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])


def test_parallel_test_sets_and_disjoint_train():
    train, test = run(Pools(parallel_pool(), None, []))
    assert pairs(test, "en") == pairs(test, "de") == pairs(test, "fr")
    assert len(pairs(test, "en")) == 5
    assert not set(train.pair_id) & set(test.pair_id)
    assert list(test.language.unique()) == ["en", "de", "fr"]
    assert list(train.language.unique()) == ["en", "de"]


def test_imbalanced_counts_take_a_shared_prefix():
    pools = Pools(parallel_pool(missing={("de", i) for i in range(40, 60)}), None, [])
    train, _ = run(pools, counts={"en": 40, "de": 12})
    assert train.language.value_counts().to_dict() == {"en": 40, "de": 12}
    en, de = pairs(train, "en"), pairs(train, "de")
    assert de == en[:12]
    # pair_ids that de lacks come after every shared one in en's order
    shared = [p for p in en if int(p[1:]) < 40]
    assert en[: len(shared)] == shared


def test_not_parallel_pool_samples_per_language():
    train, test = run(Pools(flat_pool(), None, []), per=4)
    assert test.pair_id.isna().all()
    assert test.language.value_counts().to_dict() == {"en": 4, "de": 4, "fr": 4}
    assert not set(train.id) & set(test.id)


def test_two_pools_keep_splits_apart():
    train_pool = parallel_pool().assign(
        pair_id=lambda f: "train:" + f.pair_id, id=lambda f: "tr" + f.id
    )
    test_pool = parallel_pool(n=10).assign(pair_id=lambda f: "test:" + f.pair_id)
    train, test = run(Pools(train_pool, test_pool, []))
    assert train.pair_id.str.startswith("train:").all()
    assert test.pair_id.str.startswith("test:").all()


def test_too_few_shared_pairs_for_test():
    pools = Pools(parallel_pool(n=6, missing={("fr", i) for i in range(4)}), None, [])
    with pytest.raises(
        DataError, match=r"only 2 pair_id\(s\).*Lower test_per_language to at most 2"
    ):
        run(pools, per=3)


def test_too_few_training_examples():
    with pytest.raises(DataError, match=r"only 55 training example\(s\) in 'de'.*at most 55"):
        run(Pools(parallel_pool(), None, []), counts={"en": 10, "de": 56})


def test_too_few_test_examples_not_parallel():
    with pytest.raises(DataError, match=r"only 40 test example\(s\) in 'en'"):
        run(Pools(flat_pool(), None, []), per=41)


def test_duplicate_pair_in_a_language_is_used_once():
    pool = parallel_pool(n=12)
    extra = pool[(pool.language == "de")].assign(id=lambda f: f.id + "-dup")
    pools = Pools(pd.concat([pool, extra]), None, [])  # duplicate index labels too
    train, test = run(pools, counts={"en": 7, "de": 7}, per=5)
    assert pairs(test, "de") == pairs(test, "en")
    assert not train.duplicated(["language", "pair_id"]).any()
    assert not train.id.str.endswith("-dup").any()


def partially_parallel_pool(n=40):
    """en and de are translations of each other; fr, ru and zh carry pair_ids of their own."""
    rows = [
        {
            "id": f"{lang}-{i}",
            "language": lang,
            "label": i % 3,
            "pair_id": f"p{i}" if lang in ("en", "de") else f"{lang}-own-{i}",
            "text": f"{lang} text {i}",
        }
        for lang in ("en", "de", "fr", "ru", "zh")
        for i in range(n)
    ]
    return schema.validate(pd.DataFrame(rows), where="test pool")


def test_partially_parallel_data_keeps_the_parallel_languages_parallel():
    """Two parallel languages and three unrelated ones: selection used to refuse the set."""
    langs = ("en", "de", "fr", "ru", "zh")
    pools = Pools(partially_parallel_pool(), None, ["a", "b", "c"])
    train, test = run(pools, train=langs, test=langs, counts=dict.fromkeys(langs, 10), per=5)
    assert pairs(test, "en") == pairs(test, "de")  # the parallel pair stays parallel
    for lang in ("fr", "ru", "zh"):
        assert len(pairs(test, lang)) == 5  # sampled on their own
    assert not set(train.pair_id) & set(test.pair_id)  # test content kept out of training
    assert train.language.value_counts().to_dict() == dict.fromkeys(langs, 10)


def _disjoint(pools, counts, seed=0):
    return select(pools, train_languages=list(counts), test_languages=list(counts),
                  train_counts=counts, test_per_language=5, seed=seed, where="t",
                  train_content="disjoint")  # fmt: skip


def test_disjoint_training_sets_share_no_sentence_and_keep_each_languages_labels():
    pool = parallel_pool(n=90)
    train, test = _disjoint(Pools(pool, None, ["a", "b", "c"]), {"en": 24, "de": 24, "fr": 24})
    per_language = {lang: set(pairs(train, lang)) for lang in LANGS}
    assert all(len(p) == 24 for p in per_language.values())
    for a in LANGS:
        for b in LANGS:
            assert a == b or per_language[a].isdisjoint(per_language[b])
    assert set(train["pair_id"]).isdisjoint(set(test["pair_id"]))
    counts = train.groupby(["language", "label"]).size().unstack()
    assert (counts == 8).all().all()  # the pool's labels are a third each
    again, _ = _disjoint(Pools(pool.sample(frac=1, random_state=1), None, ["a", "b", "c"]),
                         {"en": 24, "de": 24, "fr": 24})  # fmt: skip
    assert train["id"].tolist() == again["id"].tolist()  # row order of the pool is irrelevant


def test_disjoint_training_sets_that_the_pool_cannot_fill_are_refused_with_the_fix():
    pool = parallel_pool(n=60)
    with pytest.raises(DataError, match="train_content=disjoint.*Lower train_per_language"):
        _disjoint(Pools(pool, None, ["a", "b", "c"]), {"en": 20, "de": 20, "fr": 20})
