"""The report leads with the answer: its sentences from a hand-made table, and the page
(escaping, the share matrix with intervals, the examples, the order of the sections) from
the hand-built case of cases.py."""

from __future__ import annotations

import html
import math
import re

import pandas as pd
import pytest
from matplotlib.figure import Figure

from xlinfluence.analysis import report
from xlinfluence.analysis.bootstrap import self_share_intervals, share_intervals
from xlinfluence.analysis.null import with_null
from xlinfluence.analysis.paired import translation_excess
from xlinfluence.analysis.plots import self_share_curve, share_heatmap
from xlinfluence.analysis.report_summary import CAVEAT, summary_sentences
from xlinfluence.analysis.shares import example_shares, language_shares, self_shares, share_matrix
from xlinfluence.analysis.translation import (
    CONTROL_SHARE,
    control_share_per_example,
    translation_share_per_example,
)
from xlinfluence.explain import ReportExamples
from xlinfluence.explain_join import examples_from_topk, strongest_rows

from .cases import TRAIN_LANGS, K

NAN = math.nan
CELL = re.compile(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]")


def _share_rows() -> pd.DataFrame:
    columns = ["checkpoint", "kind", "test_language", "train_language", "share", "ci_low",
               "ci_high", "null_share", "excess", "excess_ci_low", "excess_ci_high"]  # fmt: skip
    rows = [
        ("total", "proponent", "en", "en", 0.60, 0.50, 0.70, 0.50, 0.10, 0.02, 0.18),
        ("total", "proponent", "en", "de", 0.40, 0.30, 0.50, 0.50, -0.10, -0.20, -0.02),
        ("total", "proponent", "de", "en", 0.25, 0.15, 0.35, 0.50, -0.25, -0.35, -0.15),
        ("total", "proponent", "de", "de", 0.75, 0.65, 0.85, 0.50, 0.25, 0.15, 0.35),
        ("total", "opponent", "en", "de", 0.90, 0.80, 0.95, 0.50, 0.40, 0.30, 0.45),
        ("epoch-1", "proponent", "de", "en", 0.95, 0.90, 0.99, 0.50, 0.45, 0.40, 0.49),
    ]
    return pd.DataFrame(rows, columns=columns)


def _own_rows(checkpoints=("epoch-1", "epoch-2")) -> pd.DataFrame:
    values = {"epoch-1": {"en": 0.40, "de": 0.70}, "epoch-2": {"en": 0.60, "de": 0.65}}
    rows = []
    for checkpoint in (*checkpoints, "total"):
        for language in ("en", "de"):
            value = values.get(checkpoint, {}).get(language, 0.5)
            rows.append((checkpoint, "proponent", language, value, False, value - 0.1, value + 0.1))
            rows.append((checkpoint, "opponent", language, 0.99, False, 0.9, 1.0))
        rows.append((checkpoint, "proponent", "sw", NAN, True, NAN, NAN))  # zero-shot
    columns = ["checkpoint", "kind", "test_language", "self_share", "zero_shot",
               "self_share_ci_low", "self_share_ci_high"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _translation_rows() -> pd.DataFrame:
    return pd.DataFrame(
        [("epoch-1", "en", 0.90, 0.80, 0.95, 0.001, 0.002),
         ("total", "en", 0.20, 0.10, 0.30, 0.004, 0.008),
         ("total", "de", -0.05, -0.15, 0.05, 0.500, 0.500)],
        columns=["checkpoint", "test_language", "translation_minus_control", "ci_low", "ci_high",
                 "p", "p_holm"],
    )  # fmt: skip


def test_summary_sentences_from_a_hand_made_table():
    got = summary_sentences(_share_rows(), _own_rows(), _translation_rows(), top_k=5)
    assert got == [
        "At the summed checkpoint (total), the strongest cross-language reliance is en on de: "
        "0.40 [0.30, 0.50] of en's top-5 proponents are de, beside 0.50 from a language-blind "
        "attribution (excess \u22120.10 [\u22120.20, \u22120.02]).",
        "The weakest is de on en: 0.25 [0.15, 0.35], beside 0.50 from a language-blind "
        "attribution (excess \u22120.25 [\u22120.35, \u22120.15]).",
        "From epoch-1 to epoch-2, the own-language share of proponents rose for 1 of 2 test "
        "languages and fell for 1 (en 0.40 \u2192 0.60, de 0.70 \u2192 0.65; the paired change "
        "with its interval: table self_share_change).",
        "The translation share (cross-language proponents that translate an own-language one) "
        "minus its within-label shuffled control ranges from de's \u22120.05 [\u22120.15, +0.05] "
        "to en's +0.20 [+0.10, +0.30]: above the control for 1 of 2 test languages, below it "
        "for 0 (interval excluding 0, Holm-adjusted p < 0.05).",
        CAVEAT,
    ]
    assert "language-datamodel" in CAVEAT and "findings.md" in CAVEAT


def test_summary_sentences_name_ties_at_two_decimals():
    shares = _share_rows()
    shares.loc[2, "share"] = 0.399  # de on en now reads 0.40 too
    first, second = summary_sentences(shares, _own_rows(), None)[:2]
    assert first.endswith(
        "(excess \u22120.10 [\u22120.20, \u22120.02]); 1 other pair also read 0.40."
    )
    assert second.startswith("The weakest is de on en: 0.40 [0.15, 0.35]")
    assert second.endswith("; 1 other pair also read 0.40.")


def test_summary_sentences_with_one_checkpoint_and_no_translations():
    no_pairs = _translation_rows().assign(translation_minus_control=NAN)
    got = summary_sentences(_share_rows(), _own_rows(("epoch-1",)), no_pairs)
    assert "top-k proponents" in got[0]
    assert got[2].startswith("The run scored one checkpoint (epoch-1)")
    assert got[3].startswith("No translation share could be set against its control")
    assert got[-1] == CAVEAT
    assert summary_sentences(_share_rows(), _own_rows(), None)[-2].startswith("From epoch-1")


@pytest.fixture
def case(table, train, test_frame):
    """The analyze step's tables of the hand-built case, with texts that need escaping."""
    train = train.copy()
    train.loc[4, "text"] = "<script>alert('x')</script> Fish & Chips"  # de, test 0's first
    test = test_frame.copy()
    test.loc[0, "text"] = "Is 1 < 2 & 3 > 2?"
    per_example = example_shares(table, TRAIN_LANGS)
    shares = share_intervals(language_shares(table, TRAIN_LANGS), per_example, n_resamples=200)
    shares = with_null(shares, per_example, train, test, K)
    own = self_share_intervals(self_shares(shares), per_example, n_resamples=200)
    translation = translation_share_per_example(table, train)
    translation[CONTROL_SHARE] = control_share_per_example(table, train).to_numpy()
    tables = {
        "shares": shares,
        "example_shares": per_example,
        "self_shares": own,
        "translation_excess": translation_excess(translation, n_resamples=200),
    }
    figures = {
        f"heatmap_proponent_{name}": share_heatmap(share_matrix(shares, name, "proponent"), name)
        for name in ("epoch-1", "epoch-2", "total")
    } | {"self_share": self_share_curve(own), "extra": Figure()}
    examples = ReportExamples(train, test, table, pd.Series([1, 0, 1, 1, 1]), ["neg", "pos"])
    return tables, figures, examples


def _page(case, **kwargs) -> str:
    tables, figures, examples = case
    return report.render(
        title="analysis <run>", lineage={"analyze run": "abc"}, params={"top_k": str(K)},
        figures=figures, tables=tables, examples=examples, top_k=K, **kwargs,
    )  # fmt: skip


def test_the_page_escapes_texts_and_requests_nothing(case):
    page = _page(case)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; Fish &amp; Chips" in page
    assert "Is 1 &lt; 2 &amp; 3 &gt; 2?" in page
    assert "analysis &lt;run&gt;" in page
    assert not re.findall(r"(?:src|href)=['\"](?!data:)", page)  # every figure inline
    assert "http://" not in page and "https://" not in page


def test_the_page_leads_with_sentences_then_the_matrix_curves_and_examples(case):
    page = _page(case)
    order = [page.index(f"id='{name}'") for name in ("summary", "shares", "epochs",
                                                      "examples", "more")]  # fmt: skip
    assert order == sorted(order)
    assert html.escape(CAVEAT) in page
    tables = case[0]
    for sentence in summary_sentences(tables["shares"], tables["self_shares"],
                                      tables["translation_excess"], top_k=K):  # fmt: skip
        assert html.escape(sentence) in page

    matrix = page[page.index("id='matrix'") : page.index("</table>", page.index("id='matrix'"))]
    cells = CELL.findall(matrix)
    assert len(cells) == 3 * len(TRAIN_LANGS)  # test languages de, en, sw x training languages
    expected = tables["shares"].query("checkpoint == 'total' and kind == 'proponent'").iloc[0]
    first = f"{expected.share:.2f} [{expected.ci_low:.2f}, {expected.ci_high:.2f}]"
    assert cells[0] == first  # de on en, the first row's first cell
    assert matrix.count("class='own'") == 2  # de and en; sw is zero-shot
    assert "null 0." in matrix


def test_the_examples_section_shows_each_languages_strongest_cases(case):
    page = _page(case, cases=2, top=3)
    examples = page[page.index("id='examples'") : page.index("id='more'")]
    for language in ("de", "en", "sw"):
        assert f"test language {language}</summary>" in examples
    assert examples.count("class='case'") == 2 + 2 + 1  # sw has one test example
    assert "label pos, predicted neg (wrong)" in examples  # test-1, gold 1, predicted 0
    assert "Fish &amp; Chips" in examples and "text 5" in examples
    assert "(translates train-" in examples  # the case is parallel
    assert "xlinfluence explain --run abc --test-id &lt;id&gt;" in examples


def test_toggles_hold_every_figure_and_whole_tables(case):
    tables, figures, _ = case
    big = pd.concat([tables["example_shares"]] * 30, ignore_index=True)
    page = _page((tables | {"example_shares": big}, figures, case[2]))
    more = page[page.index("id='more'") :]
    assert more.count("<details>") == 2 + len(tables) + 1  # figures, others, tables, lineage
    for name in ("heatmap_proponent_epoch-1", "heatmap_proponent_epoch-2",
                 "heatmap_proponent_total", "extra"):  # fmt: skip
        assert f"<figcaption>{name}</figcaption>" in more
    shares = tables["shares"]
    assert f"Table shares ({len(shares)} rows)</summary>" in more
    assert f"Table example_shares ({len(big)} rows, first 200 of {len(big)} rows)" in more
    assert "analysis/example_shares.parquet and .csv hold it whole" in more


def test_strongest_rows_break_ties_by_manifest_order():
    assert strongest_rows([(3, 1.0), (1, 2.0), (0, 1.0), (2, 0.5)], 3) == [1, 0, 3]


def test_examples_from_topk_take_the_largest_summed_proponent_scores(table, train, test_frame):
    table = table.copy()
    boost = (table["test_index"] == 1) & (table["kind"] == "proponent") & (table["rank"] == 0)
    table.loc[boost & (table["checkpoint"] == "total"), "score"] = 100.0
    found = examples_from_topk(train, test_frame, table, top=2, cases=1)
    assert list(found) == ["de", "en", "sw"]  # test order
    assert [e["test"]["id"] for e in found["de"]] == ["test-1"]  # 100 + 9 beats 10 + 9
    (first,) = found["de"]
    assert [p["score"] for p in first["proponents"]] == [100.0, 9.0]
    assert [p["score"] for p in first["opponents"]] == [-10.0, -9.0]
    assert first["test"]["prediction"] is None
