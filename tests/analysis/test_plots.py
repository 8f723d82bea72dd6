import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from xlinfluence.analysis.bootstrap import self_share_intervals, share_intervals
from xlinfluence.analysis.plots import (
    self_share_curve,
    share_bars,
    share_heatmap,
    translation_share_bars,
)
from xlinfluence.analysis.shares import example_shares, language_shares, self_shares, share_matrix
from xlinfluence.analysis.translation import translation_share
from xlinfluence.errors import ConfigError

from .cases import TRAIN_LANGS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def shares(table):
    return language_shares(table, TRAIN_LANGS)


def test_share_heatmap(shares, tmp_path):
    matrix = share_matrix(shares, "epoch-1", "proponent")
    fig = share_heatmap(matrix, "Top-4 proponents, epoch 1")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # heatmap + colorbar
    ax = fig.axes[0]
    cell_texts = [t.get_text() for t in ax.texts]
    assert len(cell_texts) == matrix.size and "38%" in cell_texts  # 0.375
    assert [t.get_text() for t in ax.get_xticklabels()] == TRAIN_LANGS
    assert ax.get_xlabel() == "training language" and ax.get_ylabel() == "test language"
    path = tmp_path / "heatmap.png"
    fig.savefig(path, dpi=80)
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_self_share_curve(shares, tmp_path):
    fig = self_share_curve(self_shares(shares))
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["de", "en"]  # sw: zero-shot
    assert [t.get_text() for t in ax.get_xticklabels()] == ["epoch-1", "epoch-2"]  # no total
    assert ax.get_lines()[0].get_ydata().tolist() == [0.375, 1.0]
    fig.savefig(tmp_path / "curve.png", dpi=80)


def test_cross_share_curve_includes_zero_shot(shares):
    fig = self_share_curve(self_shares(shares), kind="opponent", column="cross_share")
    assert len(fig.axes[0].get_lines()) == 3


def test_self_share_curve_needs_checkpoints(shares):
    only_total = self_shares(shares)
    only_total = only_total[only_total["checkpoint"] == "total"]
    with pytest.raises(ConfigError, match="per-checkpoint"):
        self_share_curve(only_total)


def test_translation_share_bars(table, train, tmp_path):
    fig = translation_share_bars(translation_share(table, train), checkpoint="epoch-1")
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 2 * 3
    fig.savefig(tmp_path / "bars.png", dpi=80)


def test_translation_share_labels_stay_clear_of_the_control_mark():
    """A share label sat on the control's mark where the two are close (SIB-200: 85%
    against a 76% control); it now moves under the mark, or stays at the top if clear."""
    import pandas as pd

    from xlinfluence.analysis.bootstrap import high_column, low_column
    from xlinfluence.analysis.translation import CONTROL_SHARE, N_EXAMPLES, TRANSLATION_SHARE

    control = np.array([0.76, 0.30])
    rows = pd.DataFrame({
        "checkpoint": "total", "test_language": ["en", "de"],
        TRANSLATION_SHARE: [0.85, 0.85], CONTROL_SHARE: control,
        low_column(CONTROL_SHARE): control - 0.03, high_column(CONTROL_SHARE): control + 0.03,
        N_EXAMPLES: [100, 100],
    })  # fmt: skip
    labels = [t for t in translation_share_bars(rows).axes[0].texts if "%" in t.get_text()]
    tops = [t.get_position()[1] for t in labels]
    close, clear = tops
    assert close <= 0.73 - 0.01 and close - 0.09 > 0.0  # under the mark, inside the bar
    assert clear == pytest.approx(0.83)  # the usual place, under the bar's top
    for top, (low, high) in zip(
        tops, zip(control - 0.03, control + 0.03, strict=True), strict=True
    ):
        assert top < low or top - 0.09 > high  # the label's span misses the mark's


@pytest.fixture
def shares_with_ci(table, shares):
    return share_intervals(shares, example_shares(table, TRAIN_LANGS), n_resamples=200)


def test_share_bars_with_error_bars(shares_with_ci, tmp_path):
    fig = share_bars(shares_with_ci, checkpoint="epoch-1", kind="proponent")
    ax = fig.axes[0]
    assert len(ax.patches) == 3 * 4  # test languages x training languages
    assert [t.get_text() for t in ax.get_xticklabels()] == ["de", "en", "sw"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == TRAIN_LANGS
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 4 and all(c.errorbar is not None for c in bars)
    # error bar of (de test, en train): the interval [0.25, 0.75] around 0.5
    segments = bars[0].errorbar.lines[2][0].get_segments()
    np.testing.assert_allclose([segments[0][0][1], segments[0][1][1]], [0.25, 0.75])
    path = tmp_path / "share_bars.png"
    fig.savefig(path, dpi=80)
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_share_bars_without_intervals(shares):
    fig = share_bars(shares, checkpoint="total", kind="opponent")
    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert len(bars) == 4 and all(c.errorbar is None for c in bars)
    with pytest.raises(ConfigError, match="epoch-9"):
        share_bars(shares, checkpoint="epoch-9")


def test_self_share_curve_with_bands(table, shares, tmp_path):
    own = self_share_intervals(self_shares(shares), example_shares(table, TRAIN_LANGS))
    fig = self_share_curve(own)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["de", "en"]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    assert not any(
        isinstance(c, PolyCollection)
        for c in self_share_curve(own, bands=False).axes[0].collections
    )
    fig.savefig(tmp_path / "curve_bands.png", dpi=80)
