"""How good and how fair a model's predicted chances are: metrics, bootstrap intervals, plots.

Pure functions the training stage calls on out-of-fold or test predictions. Every metric takes
row weights because training rows carry IPCW weights (censored follow-up is re-weighted), and
every interval resamples citizens, not rows, because one citizen's measurements are correlated.

Decisions that hold throughout:
- Calibration bins are equal-frequency: edges are unweighted quantiles of the predictions, so each
  bin holds about the same number of rows even when predictions are skewed.
- Metrics are computed for many weight vectors at once (`_metrics_for_weights`), so the point
  estimate and every bootstrap replicate run through the same code.
- A metric that needs both classes (AUC, PR-AUC) is NaN when one class has no weight.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bip.errors import TooFewData
from bip.progress import QUIET, Progress
from training.config import TrainConfig

METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "brier", "log_loss", "ece")
AGE_BANDS: tuple[str, ...] = ("<30", "30-39", "40-49", "50-59", "60+")
SENSITIVE_COLUMNS: tuple[str, ...] = ("gender", "origin", "age_band", "education")
FAIRNESS_COLUMNS: tuple[str, ...] = (
    "n",
    "roc_auc",
    "brier",
    "ece",
    "mean_predicted",
    "observed_rate",
    "calibration_in_the_large",
    "false_negative_rate",
)
# A fairness group of fewer citizens gets no metrics: its observed rate would be those people's outcomes.
MIN_GROUP_CITIZENS = 10
# Headline gap -> the fairness-table column whose max - min across groups it is.
FAIRNESS_GAPS: dict[str, str] = {
    "auc_gap": "roc_auc",
    "calibration_gap": "calibration_in_the_large",
    "ece_gap": "ece",
    "fnr_gap": "false_negative_rate",
}
# Bootstrap replicates are processed in chunks so that (replicates x rows) stays below this size.
_MAX_CELLS = 4_000_000

ArrayLike = np.ndarray | pd.Series | Sequence[float]


def _validated(y: ArrayLike, p: ArrayLike, w: ArrayLike | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outcomes, predictions and weights as float arrays, checked so that errors say what is wrong."""
    y_arr = np.asarray(y, dtype=float).ravel()
    p_arr = np.asarray(p, dtype=float).ravel()
    w_arr = np.ones_like(p_arr) if w is None else np.asarray(w, dtype=float).ravel()
    if not (len(y_arr) == len(p_arr) == len(w_arr)):
        raise ValueError(f"y, p and w must have one value per row; got {len(y_arr)}, {len(p_arr)}, {len(w_arr)}")
    if len(y_arr) == 0:
        raise ValueError("no rows to evaluate: y and p are empty")
    if not np.isin(y_arr, (0.0, 1.0)).all():
        raise ValueError("y must be 0/1 outcomes; drop or impute rows with a missing label first")
    if np.isnan(p_arr).any() or (p_arr < 0).any() or (p_arr > 1).any():
        raise ValueError("p must be probabilities in [0, 1] without NaN")
    if np.isnan(w_arr).any() or (w_arr < 0).any():
        raise ValueError("w must be non-negative weights without NaN (e.g. IPCW weights, 0 for excluded rows)")
    return y_arr, p_arr, w_arr


def _bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    """Equal-frequency bin (0..bins-1) of each prediction; ties at an edge go to the upper bin."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    inner_edges = np.quantile(p, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(inner_edges, p, side="right")


def _tie_starts(values: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array (for `np.add.reduceat`)."""
    return np.flatnonzero(np.r_[True, np.diff(values) != 0])


def _ranking_metrics(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ROC AUC and average precision for each column of `weights` (rows x replicates).

    Tied predictions form one threshold, as in scikit-learn: AUC counts a tied positive/negative
    pair as one half, and average precision steps once per distinct prediction.
    """
    order = np.argsort(p, kind="stable")
    starts = _tie_starts(p[order])
    w_sorted = weights[order]
    pos = w_sorted * y[order, None]
    if len(starts) < len(order):
        pos, w_sorted = np.add.reduceat(pos, starts, axis=0), np.add.reduceat(w_sorted, starts, axis=0)
    neg = w_sorted - pos
    # Cumulative weights up to and including each distinct prediction, in ascending order.
    pos_upto, neg_upto = np.cumsum(pos, axis=0), np.cumsum(neg, axis=0)
    total_pos, total_neg = pos_upto[-1], neg_upto[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (pos * (neg_upto - 0.5 * neg)).sum(axis=0) / (total_pos * total_neg)
        # Flagging every row at or above a prediction: true positives and all flagged weight.
        true_pos = total_pos - pos_upto + pos
        flagged = true_pos + total_neg - neg_upto + neg
        precision = np.divide(true_pos, flagged, out=np.zeros_like(true_pos), where=flagged > 0)
        average_precision = (pos * precision).sum(axis=0) / total_pos
    one_class = (total_pos <= 0) | (total_neg <= 0)
    return np.where(one_class, np.nan, auc), np.where(one_class, np.nan, average_precision)


def _metrics_for_weights(y: np.ndarray, p: np.ndarray, weights: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    """Every metric in METRICS for each column of `weights` (rows x replicates), vectorised.

    The calibration bins come from `p` alone, so they are the same for every replicate.
    """
    p_clipped = np.clip(p, np.finfo(float).eps, 1 - np.finfo(float).eps)
    row_log_loss = -(y * np.log(p_clipped) + (1 - y) * np.log1p(-p_clipped))
    # Per bin, |sum w (y - p)| is the bin's weight times |observed rate - mean prediction|.
    bin_gaps = np.eye(bins)[_bin_index(p, bins)].T * (y - p)
    # One pass over the weights for every weighted sum: total, Brier, log loss, then the bins.
    sums = np.vstack([np.ones_like(p), (p - y) ** 2, row_log_loss, bin_gaps]) @ weights
    total = sums[0]
    auc, average_precision = _ranking_metrics(y, p, weights)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "roc_auc": auc,
            "pr_auc": average_precision,
            "brier": sums[1] / total,
            "log_loss": sums[2] / total,
            "ece": np.abs(sums[3:]).sum(axis=0) / total,
        }


def expected_calibration_error(y: ArrayLike, p: ArrayLike, w: ArrayLike | None = None, bins: int = 10) -> float:
    """Weighted expected calibration error over equal-frequency bins of the predictions.

    ECE = sum over bins of (bin weight / total weight) * |weighted observed rate - weighted mean p|.
    Equal-frequency bins keep every bin populated when predictions crowd in a narrow range.
    """
    y_arr, p_arr, w_arr = _validated(y, p, w)
    return float(_metrics_for_weights(y_arr, p_arr, w_arr[:, None], bins)["ece"][0])


def metric_values(y: ArrayLike, p: ArrayLike, w: ArrayLike | None = None, bins: int = 10) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision), Brier score, log loss and ECE, each weighted by `w`.

    Weighted metrics equal the unweighted ones on rows duplicated `w` times; AUC and PR AUC are
    NaN when all weight lies on one class.
    """
    y_arr, p_arr, w_arr = _validated(y, p, w)
    values = _metrics_for_weights(y_arr, p_arr, w_arr[:, None], bins)
    return {name: float(values[name][0]) for name in METRICS}


def _citizen_multiplicities(groups: ArrayLike, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of bootstrap row multiplicities (rows x replicates) that keep each citizen's rows together.

    Each replicate draws as many citizens as there are, with replacement; a row's multiplicity is
    the number of times its citizen was drawn, so all rows of a drawn citizen come along.
    """
    codes, citizens = pd.factorize(np.asarray(groups), use_na_sentinel=False)
    n_citizens = len(citizens)
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_CELLS // max(len(codes), 1))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        # One bincount for all replicates: a draw of replicate r counts in cell r * n_citizens + citizen.
        draws = rng.integers(0, n_citizens, size=(size, n_citizens)) + n_citizens * np.arange(size)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n_citizens).reshape(size, n_citizens)
        yield counts.T[codes].astype(float)


def metric_table(
    y: ArrayLike,
    p: ArrayLike,
    w: ArrayLike | None,
    groups: ArrayLike,
    n_boot: int = 200,
    seed: int = 0,
    bins: int = 10,
    progress: Progress = QUIET,
) -> dict[str, tuple[float, float, float]]:
    """Each metric as (estimate, 2.5 %, 97.5 %) with a percentile bootstrap over citizens (`groups`).

    A replicate in which a metric is undefined (AUC and PR AUC when one class has no weight) is
    skipped for that metric; with no usable replicate the interval is NaN. Calibration bins stay
    those of the full sample, so the ECE replicates differ only in weights. ECE is an absolute
    value, so its resamples lean upwards: for a well-calibrated model the interval can lie above
    the estimate; read it then as an upper bound.
    """
    y_arr, p_arr, w_arr = _validated(y, p, w)
    if len(np.asarray(groups)) != len(y_arr):
        raise ValueError(f"groups must give the citizen id of each of the {len(y_arr)} rows")
    estimate = metric_values(y_arr, p_arr, w_arr, bins)
    replicates = []
    with progress.task("bootstrap", total=n_boot) as task:
        for multiplicity in _citizen_multiplicities(groups, n_boot, seed):
            replicates.append(_metrics_for_weights(y_arr, p_arr, multiplicity * w_arr[:, None], bins))
            task.advance(multiplicity.shape[1])
    table = {}
    for name in METRICS:
        draws = np.concatenate([values[name] for values in replicates])
        draws = draws[~np.isnan(draws)]
        low, high = np.percentile(draws, [2.5, 97.5]) if len(draws) else (np.nan, np.nan)
        table[name] = (estimate[name], float(low), float(high))
    return table


def flatten_metrics(table: Mapping[str, tuple[float, float, float]], prefix: str) -> dict[str, float]:
    """MLflow metric keys from a metric table: `cv_roc_auc`, `cv_roc_auc_low`, `cv_roc_auc_high`."""
    head = f"{prefix}_" if prefix else ""
    flat: dict[str, float] = {}
    for name, (estimate, low, high) in table.items():
        flat[f"{head}{name}"] = float(estimate)
        flat[f"{head}{name}_low"] = float(low)
        flat[f"{head}{name}_high"] = float(high)
    return flat


BASELINE_FAMILY = "background_only"  # the register alone: what the answers must add to


def champion_doubts(metrics: Mapping[str, Mapping[str, float]], candidate: str) -> list[str]:
    """Why the champion candidate may be too weak to serve, from the families' grouped-CV metrics (empty:
    none): its AUC interval reaches chance (0.5), or its AUC is not above the register-only baseline's
    (checked only where that family was trained). A first champion passes no retraining gate, so this
    is what tells an administrator that the data were too few or too noisy."""
    own = metrics[candidate]
    doubts = []
    if own["cv_roc_auc_low"] <= 0.5:
        doubts.append(
            f"its CV AUC {own['cv_roc_auc']:.3f} (95 % interval {own['cv_roc_auc_low']:.3f}-"
            f"{own['cv_roc_auc_high']:.3f}) is not surely better than chance (0.5)"
        )
    baseline = metrics.get(BASELINE_FAMILY)
    if baseline is not None and candidate != BASELINE_FAMILY and own["cv_roc_auc"] <= baseline["cv_roc_auc"]:
        doubts.append(
            f"its CV AUC {own['cv_roc_auc']:.3f} is not above {BASELINE_FAMILY}'s {baseline['cv_roc_auc']:.3f}: "
            "the answers add nothing to the register background"
        )
    return doubts


def reliability_table(y: ArrayLike, p: ArrayLike, w: ArrayLike | None, bins: int = 10) -> pd.DataFrame:
    """One row per non-empty equal-frequency bin: range of p, rows, weight, mean p, observed rate, gap.

    `gap` is observed rate minus mean prediction (positive: the model under-predicts); the ECE is
    the weight-averaged |gap|.
    """
    y_arr, p_arr, w_arr = _validated(y, p, w)
    frame = pd.DataFrame({"bin": _bin_index(p_arr, bins), "y": y_arr, "p": p_arr, "w": w_arr})
    frame["wy"], frame["wp"] = frame["w"] * frame["y"], frame["w"] * frame["p"]
    table = frame.groupby("bin").agg(
        p_low=("p", "min"),
        p_high=("p", "max"),
        n=("p", "size"),
        weight=("w", "sum"),
        wy=("wy", "sum"),
        wp=("wp", "sum"),
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        table["mean_predicted"] = table["wp"] / table["weight"]
        table["observed_rate"] = table["wy"] / table["weight"]
    table["gap"] = table["observed_rate"] - table["mean_predicted"]
    return table.drop(columns=["wy", "wp"]).reset_index()


def reliability_plot(
    y: ArrayLike, p: ArrayLike, w: ArrayLike | None, path: Path | str, title: str = "", bins: int = 10
) -> Path:
    """Save a calibration curve (binned observed vs predicted, diagonal) over a histogram of p as PNG."""
    y_arr, p_arr, w_arr = _validated(y, p, w)
    table = reliability_table(y_arr, p_arr, w_arr, bins)
    ece = expected_calibration_error(y_arr, p_arr, w_arr, bins)
    fig = Figure(figsize=(6, 6.5), layout="constrained")
    curve, histogram = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    curve.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    curve.plot(table["mean_predicted"], table["observed_rate"], marker="o", label=f"model ({bins} bins, ECE {ece:.3f})")
    curve.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed rate (weighted)", title=title)
    curve.legend(loc="upper left")
    histogram.hist(p_arr, bins=50, range=(0, 1), weights=w_arr, color="tab:blue", alpha=0.7)
    histogram.set(xlabel="predicted probability", ylabel="weight")
    return _saved(fig, path)


def _saved(fig: Figure, path: Path | str) -> Path:
    """Write a figure to a PNG file, creating its folder; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=120)
    return out


def age_band(age: pd.Series) -> pd.Series:
    """Age bands used in the fairness report: 30-39, 40-49, 50-59, 60+ (and <30 should it occur)."""
    bands = pd.cut(age, bins=[-np.inf, 30, 40, 50, 60, np.inf], right=False, labels=list(AGE_BANDS))
    return bands.rename("age_band")


def threshold_for_top_share(p: ArrayLike, share: float = 0.2) -> float:
    """The predicted chance at or above which the top `share` of rows lie (unweighted quantile).

    The fairness report counts a row predicted positive when p >= this threshold, so about
    `share` of rows are flagged overall; ties at the threshold can flag slightly more.
    """
    if not 0 < share < 1:
        raise ValueError(f"share must lie strictly between 0 and 1, got {share}")
    return float(np.quantile(np.asarray(p, dtype=float), 1 - share))


def _group_row(
    y: np.ndarray, p: np.ndarray, w: np.ndarray, threshold: float, min_rows: int, bins: int, few_citizens: bool
) -> dict:
    """FAIRNESS_COLUMNS but `calibration_in_the_large` for the rows of one group; NaN where the group
    cannot support a metric (under `min_rows` rows, `few_citizens`, no weight, AUC of one class, FNR
    without positives)."""
    row: dict[str, float] = {name: np.nan for name in FAIRNESS_COLUMNS if name != "calibration_in_the_large"}
    row["n"] = len(y)
    if len(y) < min_rows or few_citizens:
        return row
    values = metric_values(y, p, w, bins)  # one pass gives AUC, Brier and ECE
    row.update({name: values[name] for name in ("roc_auc", "brier", "ece")})
    if np.sum(w) > 0:
        row["mean_predicted"] = float(np.average(p, weights=w))
        row["observed_rate"] = float(np.average(y, weights=w))
    positive_weight = w * y
    if positive_weight.sum() > 0:
        row["false_negative_rate"] = float(positive_weight[p < threshold].sum() / positive_weight.sum())
    return row


def _by_group(
    y: np.ndarray,
    p: np.ndarray,
    w: np.ndarray,
    groups: np.ndarray,
    threshold: float,
    min_rows: int,
    bins: int,
    citizens: np.ndarray | None = None,
    min_citizens: int = 0,
) -> pd.DataFrame:
    """One row per group (sorted by name, index "group") of `_group_row`: rows split once by group, so the
    cost is one pass over the rows per sensitive column, whatever the number of groups. A group of fewer
    than `min_citizens` distinct `citizens` gets no metrics."""
    codes, names = pd.factorize(groups, sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    rows = []
    for k in range(len(names)):
        at = order[bounds[k] : bounds[k + 1]]
        few = citizens is not None and len(pd.unique(citizens[at])) < min_citizens
        rows.append(_group_row(y[at], p[at], w[at], threshold, min_rows, bins, few))
    return pd.DataFrame(rows, index=pd.Index(names, name="group"), dtype=float)


def _gaps(by_group: pd.DataFrame) -> dict[str, float]:
    """Largest difference between groups (max - min, NaN groups ignored) for each gap in FAIRNESS_GAPS."""
    return {gap: float(by_group[column].max() - by_group[column].min()) for gap, column in FAIRNESS_GAPS.items()}


def fairness_table(
    y: ArrayLike,
    p: ArrayLike,
    w: ArrayLike | None,
    sensitive: pd.DataFrame,
    threshold: float,
    min_rows: int = 30,
    bins: int = 10,
    citizens: ArrayLike | None = None,
    min_citizens: int = MIN_GROUP_CITIZENS,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-group metrics for each sensitive column, and the largest gaps between groups.

    The table has one row per (column, group) with FAIRNESS_COLUMNS, groups sorted by name, metrics weighted
    by `w` (the figures fairlearn's MetricFrame gives with `sample_weight`, computed here in one pass per
    group: MetricFrame's per-metric, per-group overhead grew faster than the rows). A row counts as
    predicted positive when p >= threshold, so the false negative rate is the weighted share of positives
    below it. Groups under `min_rows` rows, or (given each row's `citizens`) of fewer than `min_citizens`
    citizens, get NaN metrics: a few citizens' observed rate is their outcomes, not a group's. AUC is NaN
    for a one-class group, and the
    false negative rate for a group without positives. Missing group values form their own group,
    "missing".

    Headline keys, per column and overall (the max over columns): `fairness_<column>_<gap>` and
    `fairness_max_<gap>` for auc_gap, ece_gap, fnr_gap and calibration_gap. The calibration gap is
    the max - min across groups of calibration-in-the-large (weighted mean p - observed rate), so a
    shared over-prediction does not count, but one group over- and another under-predicted does.
    """
    y_arr, p_arr, w_arr = _validated(y, p, w)
    if len(sensitive) != len(y_arr):
        raise ValueError(f"sensitive must have one row per prediction ({len(y_arr)}), got {len(sensitive)}")
    people = None if citizens is None else np.asarray(citizens, dtype=object)
    if people is not None and len(people) != len(y_arr):
        raise ValueError(f"citizens must have one id per prediction ({len(y_arr)}), got {len(people)}")
    tables, headline = [], {}
    for column in sensitive.columns:
        groups = sensitive[column].astype("string").fillna("missing").to_numpy(dtype=object)
        by_group = _by_group(y_arr, p_arr, w_arr, groups, threshold, min_rows, bins, people, min_citizens)
        by_group["n"] = by_group["n"].astype(int)
        by_group["calibration_in_the_large"] = by_group["mean_predicted"] - by_group["observed_rate"]
        tables.append(by_group[list(FAIRNESS_COLUMNS)].reset_index().assign(column=column))
        for gap, value in _gaps(by_group).items():
            headline[f"fairness_{column}_{gap}"] = value
    for gap in FAIRNESS_GAPS:
        per_column = [headline[f"fairness_{column}_{gap}"] for column in sensitive.columns]
        headline[f"fairness_max_{gap}"] = float(np.nanmax(per_column)) if np.any(~np.isnan(per_column)) else np.nan
    columns = ["column", "group", *FAIRNESS_COLUMNS]
    table = pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)
    return table, headline


def importance_by_indicator(
    contributions: np.ndarray, feature_names: Sequence[str], belongs_to: Mapping[str, str]
) -> pd.Series:
    """Mean |summed contribution| per group of features (an indicator, intervention group, ...), descending.

    Contributions of features in the same group are summed per row before the absolute value, so a
    citizen's and a caseworker's score of one indicator that pull opposite ways partly cancel, as
    they do in the prediction. Features missing from `belongs_to` form a group of their own.
    """
    values = np.asarray(contributions, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(feature_names):
        raise ValueError(
            f"contributions must be rows x {len(feature_names)} features, got shape {values.shape}; "
            "drop the bias column of SHAP/XGBoost contributions first"
        )
    group_of = [belongs_to.get(name, name) for name in feature_names]
    codes, group_names = pd.factorize(pd.Series(group_of))
    membership = np.zeros((len(feature_names), len(group_names)))
    membership[np.arange(len(feature_names)), codes] = 1.0
    importance = np.abs(values @ membership).mean(axis=0)
    return pd.Series(importance, index=pd.Index(group_names, name="belongs_to"), name="importance").sort_values(
        ascending=False
    )


def importance_by_group(
    contributions: np.ndarray, feature_names: Sequence[str], belongs_to: Mapping[str, str]
) -> pd.Series:
    """Same as `importance_by_indicator`, under the name that fits any grouping of features."""
    return importance_by_indicator(contributions, feature_names, belongs_to)


# --- a model's predictions on a feature frame ----------------------------------------------------


def sensitive_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns the fairness report compares groups on."""
    groups = frame[["gender", "origin", "education"]].reset_index(drop=True)
    groups.insert(2, "age_band", age_band(frame["age"].reset_index(drop=True)))
    return groups[list(SENSITIVE_COLUMNS)]


def truth_metrics(
    y: np.ndarray, w: np.ndarray, p: np.ndarray, true_p: np.ndarray, labelled: np.ndarray
) -> dict[str, float]:
    """How the predictions compare with the simulator's true probabilities.

    AUC and Brier of the truth on the same labelled rows and weights (the best any model can do),
    and over all rows, censored ones included: mean |pred - true|, mean predicted and mean true.
    """
    known = ~np.isnan(true_p)
    on_labels = metric_values(y[labelled & known], true_p[labelled & known], w[labelled & known])
    return {
        "truth_roc_auc": on_labels["roc_auc"],
        "truth_brier": on_labels["brier"],
        "truth_ece": on_labels["ece"],
        "mean_abs_diff_truth": float(np.mean(np.abs(p[known] - true_p[known]))),
        "mean_predicted": float(np.mean(p[known])),
        "mean_true": float(np.mean(true_p[known])),
    }


def evaluation_metrics(
    frame: pd.DataFrame,
    p: np.ndarray,
    true_p: np.ndarray | None,
    config: TrainConfig,
    prefix: str,
    with_fairness: bool = True,
    progress: Progress = QUIET,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Metrics with bootstrap intervals over citizens on the labelled rows (IPCW-weighted), label
    rates, fairness headline gaps and table (`with_fairness`; else an empty table) and, with truth,
    the comparison with it.

    Keys are `<prefix>_<metric>`; `p` holds a prediction for every row of `frame`.
    """
    y = frame["label"].to_numpy(dtype=float)
    w = frame["ipcw_weight"].to_numpy(dtype=float)
    labelled = ~np.isnan(y) & (w > 0)
    if labelled.sum() == 0 or len(np.unique(y[labelled])) < 2:
        raise TooFewData(
            f"{prefix}: no labelled rows of both outcomes to evaluate on (too few citizens, or outcomes "
            "not yet known): use data with more citizens and a longer follow-up"
        )
    citizens = frame["citizen_id"].to_numpy()
    table = metric_table(
        y[labelled], p[labelled], w[labelled], citizens[labelled], config.n_boot, config.seed, progress=progress
    )
    metrics = flatten_metrics(table, prefix)
    fairness = pd.DataFrame()
    if with_fairness:
        threshold = threshold_for_top_share(p[labelled], config.fairness_top_share)
        fairness, headline = fairness_table(
            y[labelled],
            p[labelled],
            w[labelled],
            sensitive_groups(frame[labelled]),
            threshold,
            citizens=citizens[labelled],
        )
        metrics.update({f"{prefix}_{k}": v for k, v in headline.items()})
    metrics.update(
        {
            f"{prefix}_rows": float(len(frame)),
            f"{prefix}_labelled_rows": float(labelled.sum()),
            f"{prefix}_observed_rate_naive": float(y[labelled].mean()),
            f"{prefix}_observed_rate_ipcw": float(np.average(y[labelled], weights=w[labelled])),
            f"{prefix}_mean_predicted_labelled": float(np.average(p[labelled], weights=w[labelled])),
        }
    )
    if true_p is not None:
        metrics.update({f"{prefix}_{k}": v for k, v in truth_metrics(y, w, p, true_p, labelled).items()})
    return metrics, fairness


def headline(metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics a model carries with it: point estimates of the main metrics, CV and out-of-time."""
    keys = [f"{split}_{m}" for split in ("cv", "oot") for m in METRICS]
    return {k: float(metrics[k]) for k in keys if k in metrics}


def read_truth(path: Path) -> pd.DataFrame | None:
    """The simulator's true probabilities (measurement_id, true_probability), or None without them."""
    if not path.exists():
        return None
    truth = pd.read_csv(path, dtype={"measurement_id": str})
    return truth if "true_probability" in truth.columns else None


def truth_of(frame: pd.DataFrame, truth: pd.DataFrame | None) -> np.ndarray | None:
    """The true probability of each row of `frame` (NaN where unknown), or None without truth."""
    if truth is None:
        return None
    lookup = truth.set_index("measurement_id")["true_probability"]
    return frame["measurement_id"].map(lookup).to_numpy(dtype=float)
