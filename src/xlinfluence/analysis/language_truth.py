"""The language-level ground truth from a designed retraining experiment, and how well each
attribution's language answer agrees with it.

Ground truth. Per target (mean test loss, and mean margin negated, so that positive always
means worse) the outcomes of all test languages are fitted at once, one multivariate OLS
over the retrainings: Y = [1, cut indicators, seed indicators] B + E. beta(L, X), the
coefficient of X's cut indicator in L's column, is what test language L loses when
training language X is cut to the design's fraction, with seeds as blocks. Its interval
is the t interval of that coefficient; vec(B) has covariance Sigma (x) (X'X)^-1 (Sigma:
the residual covariance across test languages, which share retrainings), which the
agreement's interval draws from.

Own-language premium. For a test language L that is also trained on, beta(L, L) minus the
mean of beta(L, X) over X != L: the pre-registered contrast behind "a language learns
most from itself". Tested two-sided (Holm over the test languages), and for equivalence
by TOST within +-margin (Holm again), so "no premium" can be a result. The margin is fixed
by the pilot before the design is run: half the average single-language effect, (mean
over test languages of loss(all cut) - loss(none)) / k / 2.

Agreement. An attribution predicts beta(L, X) by the summed scores of L's test examples
over X's rows, times the fraction removed (TracIn's first-order loss change; positive
scores are proponents), or by X's top-k share. Predicted and measured matrices are both
double-centred (row and column means removed: a method that knows only that some test
languages are harder, or that some training languages help everyone, gets no credit) and
correlated (`centring=double`, the pre-registered agreement). Beside it `centring=rows`
removes only the row means: within each test language, which training languages matter
more, so a training language that helps every test language counts. The interval carries
beta's own uncertainty (draws of B from its sampling
distribution); it does not resample test examples. Baselines that know nothing of
examples: random scores (the null spread of many draws), label-only (+1 for a training
row of the test example's label, -1/(C-1) otherwise) and language-only (own language 1,
others 0).

The example-level LDS over the same retrainings, with the language amounts partialled
out, is analysis/partialled_lds.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from xlinfluence.analysis import ablation, lds
from xlinfluence.analysis.bootstrap import finite_quantile
from xlinfluence.analysis.holm import holm
from xlinfluence.attribution.label_only import label_only_matrix
from xlinfluence.errors import DataError

TARGETS = ("loss", "margin")  # margin negated: positive beta = worse
ALPHA = 0.05
POWER_GOAL = 0.8
LANGUAGE_ONLY, LABEL_ONLY, RANDOM = "language-only", "label-only", "random"
PREDICTIONS = ("summed", "top-k share")


class DesignError(DataError):
    """The retrainings do not form the design they were asked for."""


def oriented(frame: pd.DataFrame, target: str) -> pd.Series:
    """Outcome with larger = worse (loss as is, margin negated)."""
    return frame[target] if target == "loss" else -frame[target]


@dataclass
class TargetFit:
    beta: pd.DataFrame  # test language x training language
    se: pd.DataFrame
    sigma: np.ndarray  # residual covariance across test languages (nL, nL)
    v_cut: np.ndarray  # (X'X)^-1 block of the cut coefficients (k, k)
    df: int
    n_runs: int


@dataclass
class Fit:
    targets: dict[str, TargetFit]
    table: pd.DataFrame


def fit_truth(outcomes: pd.DataFrame, languages: list[str]) -> Fit:
    """beta(L, X) per target from the retrainings' per-language outcomes (one row per
    composition, seed and test language, with cut.<X> indicators)."""
    rows = []
    fits = {}
    for target in TARGETS:
        wide = outcomes.assign(value=oriented(outcomes, target)).pivot_table(
            index=["composition", "seed"], columns="test_language", values="value", sort=False
        )
        tests = list(pd.unique(outcomes["test_language"]))
        wide = wide[tests]
        if wide.isna().any().any():
            raise DesignError("some retraining has no outcome for some test language.")
        keys = wide.index.to_frame(index=False)
        cuts = (
            outcomes.drop_duplicates("composition")
            .set_index("composition")
            .loc[keys["composition"], [f"cut.{x}" for x in languages]]
            .to_numpy(dtype=float)
        )
        seeds = pd.get_dummies(keys["seed"], drop_first=True, dtype=float).to_numpy()
        design = np.column_stack([np.ones(len(keys)), cuts, seeds])
        n, p = design.shape
        if np.linalg.matrix_rank(design) < p or n <= p:
            raise DesignError(
                f"{n} retrainings cannot estimate {p} coefficients (cuts and seeds); every "
                "composition needs every seed."
            )
        xtx_inv = np.linalg.inv(design.T @ design)
        coef = xtx_inv @ design.T @ wide.to_numpy()
        residual = wide.to_numpy() - design @ coef
        df = n - p
        sigma = residual.T @ residual / df
        k = len(languages)
        v_cut = xtx_inv[1 : 1 + k, 1 : 1 + k]
        beta = pd.DataFrame(coef[1 : 1 + k].T, index=tests, columns=languages)
        se = pd.DataFrame(
            np.sqrt(np.outer(np.diag(sigma), np.diag(v_cut))), index=tests, columns=languages
        )
        fits[target] = TargetFit(beta, se, sigma, v_cut, df, n)
        crit = stats.t.ppf(1 - ALPHA / 2, df)
        for lang in tests:
            for x in languages:
                b, s = beta.loc[lang, x], se.loc[lang, x]
                rows.append({"target": target, "test_language": lang, "train_language": x,
                             "beta": b, "low": b - crit * s, "high": b + crit * s, "se": s,
                             "p": 2 * stats.t.sf(abs(b / s), df) if s > 0 else np.nan,
                             "df": df, "n_runs": n})  # fmt: skip
    table = pd.DataFrame(rows)
    for target in TARGETS:  # Holm over the target's cells
        mask = table["target"] == target
        table.loc[mask, "p_holm"] = holm(table.loc[mask, "p"].to_numpy())
    return Fit(fits, table)


def equivalence_margins(pilot: pd.DataFrame, k: int) -> dict[str, float]:
    """The pre-registered TOST margin per target, from the pilot (module doc): half the
    average single-language effect, (mean over test languages of all-cut minus none) / k / 2."""
    out = {}
    cut_all = pilot.filter(like="cut.").sum(axis=1) == k
    for target in TARGETS:
        value = oriented(pilot, target)
        by_language = (
            value[cut_all].groupby(pilot["test_language"][cut_all]).mean()
            - value[~cut_all].groupby(pilot["test_language"][~cut_all]).mean()
        )
        out[target] = float(abs(by_language.mean()) / k / 2)
    return out


def premium(fit: Fit, languages: list[str], margins: dict[str, float]) -> pd.DataFrame:
    """The own-language premium per test language that is also trained on (module doc)."""
    rows = []
    k = len(languages)
    for target, tf in fit.targets.items():
        crit = stats.t.ppf(1 - ALPHA / 2, tf.df)
        margin = margins[target]
        for lang in [t for t in tf.beta.index if t in languages]:
            w = np.full(k, -1 / (k - 1))
            w[languages.index(lang)] = 1.0
            i = list(tf.beta.index).index(lang)
            value = float(w @ tf.beta.loc[lang].to_numpy())
            se = float(np.sqrt(tf.sigma[i, i] * w @ tf.v_cut @ w))
            p_lower = stats.t.sf((value + margin) / se, tf.df)  # H0: premium <= -margin
            p_upper = stats.t.cdf((value - margin) / se, tf.df)  # H0: premium >= +margin
            rows.append({"target": target, "test_language": lang, "premium": value,
                         "low": value - crit * se, "high": value + crit * se, "se": se,
                         "p": float(2 * stats.t.sf(abs(value) / se, tf.df)),
                         "margin": margin, "p_tost": float(max(p_lower, p_upper)),
                         "df": tf.df})  # fmt: skip
    table = pd.DataFrame(rows)
    for target in TARGETS:
        mask = table["target"] == target
        table.loc[mask, "p_holm"] = holm(table.loc[mask, "p"].to_numpy())
        table.loc[mask, "p_tost_holm"] = holm(table.loc[mask, "p_tost"].to_numpy())
    table["verdict"] = np.select(
        [
            (table["p_holm"] < ALPHA) & (table["premium"] > 0),
            (table["p_holm"] < ALPHA) & (table["premium"] < 0),
            table["p_tost_holm"] < ALPHA,
        ],
        ["premium", "discount", "equivalent (no premium beyond the margin)"],
        "inconclusive",
    )
    return table


def power_table(
    pilot: pd.DataFrame, *, n_languages: int, n_compositions: int, seeds=range(2, 13)
) -> pd.DataFrame:
    """From the pilot's seed spread: for each number of seeds, the standard errors of a
    beta cell and of the premium in the design, and the power (normal approximation,
    Holm's worst case: alpha / m) to detect a premium as large as the margin, to declare
    equivalence when there is none, and to detect an average single-language effect in
    one cell (alpha / cells). `chosen` marks the fewest seeds (at least 3) reaching
    POWER_GOAL for both premium tests."""
    k, r = n_languages, n_compositions
    margins = equivalence_margins(pilot, k)
    m_premium = pilot.loc[:, "test_language"].isin(
        [c.removeprefix("cut.") for c in pilot.filter(like="cut.").columns]
    )
    m = int(pilot.loc[m_premium, "test_language"].nunique())
    n_cells = k * pilot["test_language"].nunique()
    rows = []
    for target in TARGETS:
        sigma = _pilot_sigma(pilot, target)
        effect = 2 * margins[target]
        chosen_done = False
        for s in seeds:
            se_beta = 2 * sigma / np.sqrt(r * s)
            se_premium = se_beta * np.sqrt(1 + 1 / (k - 1))
            z_two = stats.norm.ppf(1 - ALPHA / (2 * max(m, 1)))
            z_one = stats.norm.ppf(1 - ALPHA / max(m, 1))
            delta = margins[target]
            detect = stats.norm.cdf(delta / se_premium - z_two)
            equivalent = max(0.0, 2 * stats.norm.cdf(delta / se_premium - z_one) - 1)
            cell = stats.norm.cdf(effect / se_beta - stats.norm.ppf(1 - ALPHA / (2 * n_cells)))
            ok = s >= 3 and detect >= POWER_GOAL and equivalent >= POWER_GOAL
            rows.append({"target": target, "seeds": s, "retrainings": r * s,
                         "seed_sd": sigma, "single_language_effect": effect,
                         "margin": delta, "se_beta": se_beta, "se_premium": se_premium,
                         "power_premium": detect, "power_equivalence": equivalent,
                         "power_cell": cell, "chosen": ok and not chosen_done})  # fmt: skip
            chosen_done |= ok
    return pd.DataFrame(rows)


def _pilot_sigma(pilot: pd.DataFrame, target: str) -> float:
    """Residual SD of a test language's mean outcome after composition and seed effects,
    pooled over test languages (the pilot's seed spread)."""
    ss, df = 0.0, 0
    for _, group in pilot.groupby("test_language"):
        y = oriented(group, target).to_numpy()
        x = np.column_stack([
            np.ones(len(group)),
            pd.get_dummies(group["composition"], drop_first=True, dtype=float).to_numpy(),
            pd.get_dummies(group["seed"], drop_first=True, dtype=float).to_numpy(),
        ])  # fmt: skip
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        ss += float(((y - x @ coef) ** 2).sum())
        df += len(y) - np.linalg.matrix_rank(x)
    if df < 1:
        raise DesignError("the pilot has no residual degrees of freedom; give it more seeds.")
    return float(np.sqrt(ss / df))


CENTRINGS = ("double", "rows")


def double_centred_correlation(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Pearson correlation of two (L, X) matrices after removing row and column means."""
    return centred_correlation(predicted, measured, "double")


def centred_correlation(predicted: np.ndarray, measured: np.ndarray, centring: str) -> float:
    """Pearson correlation of two (L, X) matrices after removing row and column means
    (double: what L relies on beyond how hard L is and how useful X is to everyone), or row
    means only (rows: within each test language, which training languages matter more;
    a training language useful to every test language counts)."""
    centre = _double_centre if centring == "double" else _row_centre
    a, b = centre(predicted), centre(measured)
    for centred, raw in ((a, predicted), (b, measured)):  # nothing but row/column effects
        if np.abs(centred).max() <= 1e-12 * max(np.abs(np.asarray(raw)).max(), 1e-300):
            return np.nan
    return float((a * b).sum() / np.sqrt((a**2).sum() * (b**2).sum()))


def _row_centre(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=float)
    return m - m.mean(axis=1, keepdims=True)


def _double_centre(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=float)
    return m - m.mean(axis=0, keepdims=True) - m.mean(axis=1, keepdims=True) + m.mean()


def language_predictions(
    scores: np.ndarray, train: pd.DataFrame, test: pd.DataFrame, top_k: int,
    removed_fraction: float, tests: list[str], languages: list[str],
) -> dict[str, np.ndarray]:  # fmt: skip
    """prediction -> (L, X) matrix: summed scores (times the fraction removed) and top-k
    share, averaged over each test language's examples."""
    summed, share, order = ablation.attribution_cells(scores, train, test, top_k)
    columns = [order.index(x) for x in languages]
    test_language = test["language"].to_numpy()
    out = {}
    for name, per_example in (("summed", removed_fraction * summed), ("top-k share", share)):
        out[name] = np.stack(
            [per_example[test_language == lang][:, columns].mean(axis=0) for lang in tests]
        )
    return out


def label_only_scores(train: pd.DataFrame, test: pd.DataFrame, n_labels: int) -> np.ndarray:
    """+1 for a training row of the test example's label, -1/(C-1) otherwise, with the
    label-only method's tie-break (attribution/label_only.py): the scores it would log."""
    return label_only_matrix(test["label"].to_numpy(), train["label"].to_numpy(), n_labels)


def agreement(
    fit: Fit,
    scores: dict[str, np.ndarray],
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    cut_fraction: float,
    top_k: int,
    seed: int = 0,
    n_draws: int = 2000,
    n_random: int = 200,
) -> pd.DataFrame:
    """Each method's and baseline's agreement with beta per target and prediction, with an
    interval from beta's sampling distribution and the paired difference from label-only
    (module doc). `scores`: method -> (n_test, n_train)."""
    rng = np.random.default_rng([seed, 37])
    languages = list(next(iter(fit.targets.values())).beta.columns)
    tests = list(next(iter(fit.targets.values())).beta.index)
    removed = 1.0 - cut_fraction
    methods = {
        name: language_predictions(s, train, test, top_k, removed, tests, languages)
        for name, s in scores.items()
        if name != lds.RANDOM
    }
    if LABEL_ONLY not in methods:
        n_labels = int(max(train["label"].max(), test["label"].max())) + 1
        methods[LABEL_ONLY] = language_predictions(
            label_only_scores(train, test, n_labels), train, test, top_k, removed, tests,
            languages,
        )  # fmt: skip
    own = np.array([[1.0 if t == x else 0.0 for x in languages] for t in tests])
    methods[LANGUAGE_ONLY] = {p: own for p in PREDICTIONS}
    randoms = [
        language_predictions(rng.standard_normal((len(test), len(train))), train, test,
                             top_k, removed, tests, languages)
        for _ in range(n_random)
    ]  # fmt: skip
    rows = []
    for target, tf in fit.targets.items():
        draws = _beta_draws(tf, n_draws, rng)  # (D, L, X)
        measured = tf.beta.to_numpy()
        for centring in CENTRINGS:
            for prediction in PREDICTIONS:
                rows += _agreement_rows(methods, randoms, draws, measured, target, centring,
                                        prediction)  # fmt: skip
    return pd.DataFrame(rows)


def _agreement_rows(methods, randoms, draws, measured, target, centring, prediction):
    """One row per method and the random baseline, for one (target, centring, prediction)."""

    def corr(predicted, against):
        return centred_correlation(predicted, against, centring)

    drawn = {name: np.array([corr(p[prediction], d) for d in draws]) for name, p in methods.items()}
    reference = methods[LABEL_ONLY][prediction]
    rows = []
    for name, p in methods.items():
        value = corr(p[prediction], measured)
        diff = drawn[name] - drawn[LABEL_ONLY]
        rows.append({"method": name, "prediction": prediction, "target": target,
                     "centring": centring, "agreement": value,
                     "low": finite_quantile(drawn[name], ALPHA / 2),
                     "high": finite_quantile(drawn[name], 1 - ALPHA / 2),
                     "diff_vs_label_only": value - corr(reference, measured),
                     "diff_low": finite_quantile(diff, ALPHA / 2),
                     "diff_high": finite_quantile(diff, 1 - ALPHA / 2)})  # fmt: skip
    null = np.array([corr(r[prediction], measured) for r in randoms])
    rows.append({"method": RANDOM, "prediction": prediction, "target": target,
                 "centring": centring, "agreement": float(np.nanmean(null)),
                 "low": finite_quantile(null, ALPHA / 2),
                 "high": finite_quantile(null, 1 - ALPHA / 2)})  # fmt: skip
    return rows


def _beta_draws(tf: TargetFit, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draws of the (L, X) beta matrix from its matrix-normal sampling distribution:
    B* = B + A Z C' with A A' = (X'X)^-1 (cut block) and C C' = Sigma."""
    a = np.linalg.cholesky(tf.v_cut + 1e-15 * np.eye(len(tf.v_cut)))
    c = np.linalg.cholesky(tf.sigma + 1e-15 * np.eye(len(tf.sigma)))
    z = rng.standard_normal((n, a.shape[0], c.shape[0]))
    return tf.beta.to_numpy()[None] + np.einsum("ij,njk,lk->nli", a, z, c)
