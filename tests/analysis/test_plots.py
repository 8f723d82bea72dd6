import pytest
from matplotlib.figure import Figure

from xlinfluence.analysis.plots import self_share_curve, share_heatmap, translation_share_bars
from xlinfluence.analysis.shares import language_shares, self_shares, share_matrix
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
