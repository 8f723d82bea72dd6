"""Leave-one-language-out: the language-level ground truth of "test language L relies on X".

For every training language X, the model is retrained without X's rows with S seeds, and
so is the full training set with the same S seeds; the effect on test language L is the
change of L's test loss (and accuracy), paired by seed and by test example. Intervals and
p-values come from a two-level bootstrap (seeds, then L's test examples within each
drawn seed); the L x X table is Holm-corrected.

Each attribution makes a language-level prediction of the same cell: the mean over L's
test examples of its summed scores over X's rows (removing helpful rows should raise the
loss by that much, to first order), and the top-k share of X among L's proponents. Their
agreement with the ablation is the Spearman over the off-diagonal cells (L != X), with an
interval from resampling seeds and test examples jointly for both sides.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from xlinfluence.analysis.holm import holm
from xlinfluence.data import schema
from xlinfluence.errors import DataError

DELTA_LOSS, DELTA_ACCURACY = "delta_loss", "delta_accuracy"
#: Seeds below which no p is printed: with two, retraining noise is barely resampled.
MIN_SEEDS = 3


def deltas(
    base: list[pd.DataFrame], removed: dict[str, list[pd.DataFrame]], column: str
) -> dict[str, np.ndarray]:
    """X -> (S, n_test) paired change of `column` (removed - full), seed by seed.

    base: S per-seed prediction frames of the full retraining (manifest order); removed:
    X -> the same S seeds' frames without X."""
    full = np.stack([f[column].to_numpy(dtype=float) for f in base])
    out = {}
    for language, frames in removed.items():
        if len(frames) != len(base):
            raise DataError(
                f"without {language}: {len(frames)} seeds, the full retraining {len(base)}; "
                "every language needs the same seeds."
            )
        out[language] = np.stack([f[column].to_numpy(dtype=float) for f in frames]) - full
    return out


def effect_table(
    loss: dict[str, np.ndarray],
    accuracy: dict[str, np.ndarray],
    test_languages: np.ndarray,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (L, X): mean loss/accuracy change, 95% interval, p (loss change != 0),
    Holm-adjusted over the table; is_own marks L == X. With fewer than MIN_SEEDS seeds the
    seed-to-seed variation is not resampled enough for a p, and none is given."""
    rng = np.random.default_rng(seed)
    rows = []
    for test_language in pd.unique(test_languages):
        idx = np.flatnonzero(test_languages == test_language)
        n_seeds = next(iter(loss.values())).shape[0]
        draws = _draws(rng, n_seeds, len(idx), n_resamples)
        for train_language, values in loss.items():
            block = values[:, idx]
            boot = _resample_means(block, draws)
            low, high = np.quantile(boot, [0.025, 0.975])
            below = (1 + (boot <= 0).sum()) / (1 + len(boot))
            above = (1 + (boot >= 0).sum()) / (1 + len(boot))
            rows.append(
                {
                    "test_language": test_language,
                    "train_language": train_language,
                    "is_own": test_language == train_language,
                    DELTA_LOSS: float(block.mean()),
                    "ci_low": float(low),
                    "ci_high": float(high),
                    "p": float(min(1.0, 2 * min(below, above))),
                    DELTA_ACCURACY: float(accuracy[train_language][:, idx].mean()),
                    "n_seeds": n_seeds,
                    "n_test": len(idx),
                }
            )
    table = pd.DataFrame(rows)
    if table["n_seeds"].iloc[0] < MIN_SEEDS:
        table["p"] = np.nan
    table["p_holm"] = holm(table["p"].to_numpy()) if table["p"].notna().all() else np.nan
    return table


def own_language_excess(
    loss: dict[str, np.ndarray],
    test_languages: np.ndarray,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Is L's own language special? Per test language L that is also a training language:
    the loss change without L minus the mean change without each other language, paired by
    seed and test example, with the crossed two-level bootstrap's interval and p, Holm over
    the languages (no p under MIN_SEEDS seeds). Positive: L relies on its own language more
    than on the others."""
    rng = np.random.default_rng(seed)
    rows = []
    for language in pd.unique(test_languages):
        if language not in loss or len(loss) < 2:
            continue
        idx = np.flatnonzero(test_languages == language)
        others = np.mean([v[:, idx] for x, v in loss.items() if x != language], axis=0)
        d = loss[language][:, idx] - others  # (S, n_L)
        boot = _resample_means(d, _draws(rng, d.shape[0], len(idx), n_resamples))
        below = (1 + (boot <= 0).sum()) / (1 + len(boot))
        above = (1 + (boot >= 0).sum()) / (1 + len(boot))
        rows.append(
            {
                "test_language": language,
                "own_minus_others": float(d.mean()),
                "ci_low": float(np.quantile(boot, 0.025)),
                "ci_high": float(np.quantile(boot, 0.975)),
                "p": float(min(1.0, 2 * min(below, above))),
                "n_seeds": d.shape[0],
                "n_test": len(idx),
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        if table["n_seeds"].iloc[0] < MIN_SEEDS:
            table["p"] = np.nan
        table["p_holm"] = holm(table["p"].to_numpy())
    return table


def _draws(rng, n_seeds: int, n: int, n_resamples: int) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap indices for a crossed design (every seed scores the same test examples):
    seeds (B, S) and one draw of examples (B, n) shared by the drawn seeds."""
    return rng.integers(0, n_seeds, (n_resamples, n_seeds)), rng.integers(0, n, (n_resamples, n))


def _resample_means(block: np.ndarray, draws: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    seeds, examples = draws
    return block[seeds[:, :, None], examples[:, None, :]].mean(axis=(1, 2))


def attribution_cells(
    scores: np.ndarray, train: pd.DataFrame, test: pd.DataFrame, top_k: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per test example and training language: summed score (n_test, n_X) and top-k
    proponent share (n_test, n_X), and the training languages in column order."""
    languages = list(pd.unique(train[schema.LANGUAGE]))
    train_language = train[schema.LANGUAGE].to_numpy()
    onehot = np.stack([train_language == lang for lang in languages], axis=1).astype(float)
    summed = np.asarray(scores, dtype=np.float64) @ onehot
    k = min(top_k, scores.shape[1])
    top = np.argpartition(-np.asarray(scores), k - 1, axis=1)[:, :k]
    share = onehot[top].mean(axis=1)
    return summed, share, languages


def agreement(
    effects: dict[str, np.ndarray],
    predictions: dict[str, np.ndarray],
    train_languages: list[str],
    test_languages: np.ndarray,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Spearman between each prediction and the loss change over off-diagonal (L, X) cells,
    with a bootstrap interval (seeds and test examples resampled jointly for both sides).

    effects: X -> (S, n_test) loss changes; predictions: name -> (n_test, n_X) per-example
    predicted cell values (columns in train_languages order)."""
    from scipy.stats import spearmanr

    tests = list(pd.unique(test_languages))
    cells = [(li, xi) for li, lang in enumerate(tests) for xi, x in enumerate(train_languages)
             if lang != x]  # fmt: skip
    if len(cells) < 3:
        raise DataError(f"only {len(cells)} off-diagonal cells; agreement needs 3 or more.")
    rows_of = [np.flatnonzero(test_languages == lang) for lang in tests]
    stacked = np.stack([effects[x] for x in train_languages], axis=-1)  # (S, n, n_X)
    n_seeds = stacked.shape[0]
    rng = np.random.default_rng(seed)

    def matrices(seed_idx, example_idx):
        measured = np.empty((len(tests), len(train_languages)))
        predicted = {name: np.empty_like(measured) for name in predictions}
        for li, rows in enumerate(rows_of):
            chosen = rows[example_idx[li]]
            measured[li] = stacked[seed_idx][:, chosen].mean(axis=(0, 1))
            for name, values in predictions.items():
                predicted[name][li] = values[chosen].mean(axis=0)
        return measured, predicted

    def rho(a, b):
        with warnings.catch_warnings():  # a constant resample has no rank correlation
            warnings.simplefilter("ignore")
            return spearmanr([a[c] for c in cells], [b[c] for c in cells]).statistic

    full = [np.arange(len(r)) for r in rows_of]
    measured, predicted = matrices(np.arange(n_seeds), full)
    boot = {name: [] for name in predictions}
    for _ in range(n_resamples):
        seed_idx = rng.integers(0, n_seeds, n_seeds)
        example_idx = [rng.integers(0, len(r), len(r)) for r in rows_of]
        m, p = matrices(seed_idx, example_idx)
        for name in predictions:
            boot[name].append(rho(p[name], m))
    out = []
    for name in predictions:
        values = np.asarray(boot[name], dtype=float)
        low, high = np.nanquantile(values, [0.025, 0.975])
        out.append(
            {
                "prediction": name,
                "spearman": float(rho(predicted[name], measured)),
                "ci_low": float(low),
                "ci_high": float(high),
                "n_cells": len(cells),
            }
        )
    return pd.DataFrame(out)


def figure(effects: pd.DataFrame, shares: pd.DataFrame, title: str) -> Figure:
    """The ablation matrix (loss change) beside an attribution's share matrix."""
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, 2)
    for ax, frame, value, label in (
        (axes[0], effects, DELTA_LOSS, "test-loss change when X is left out"),
        (axes[1], shares, "share", f"{title}: top-k share of X"),
    ):
        matrix = frame.pivot(index="test_language", columns="train_language", values=value)
        matrix = matrix.reindex(index=pd.unique(frame["test_language"]),
                                columns=pd.unique(frame["train_language"]))  # fmt: skip
        image = ax.imshow(matrix.to_numpy(), cmap="viridis")
        ax.set_xticks(range(matrix.shape[1]), matrix.columns)
        ax.set_yticks(range(matrix.shape[0]), matrix.index)
        ax.set_xlabel("training language X")
        ax.set_ylabel("test language L")
        ax.set_title(label, fontsize=10)
        for (i, j), v in np.ndenumerate(matrix.to_numpy()):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w", fontsize=8)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig
