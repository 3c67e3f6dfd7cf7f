"""The learning curve: how much each model family gains from more citizens, on one held-out test
(`bip evaluate --learning-curve`, and analysis 6 of `bip report`, experiments/learning_curve.py).

Citizens are split once (grouped by citizen, seeded) into test citizens and training citizens; the
training citizens are shuffled once and each size is a prefix of that order, so the subsets are
nested (1/8 within 1/4 within 1/2 within all). Every family sees the same subsets and is scored on
the same test citizens. Per subset, a family is fitted the cheap way (`fit_family`): a share of its
citizens is held out to pick the grid point, stop boosting early and fit the Platt calibration; no
refit. Metrics on the test citizens: AUC, Brier and ECE against the labels (IPCW-weighted, bootstrap
intervals over test citizens) and, with the simulator's truth, the mean prediction against the mean
true probability and the calibration error against the truth.

The same fit-and-score steps are the ablation's (benchmarks/bench_ablation.py). A subset too small to
fit (too few citizens of both outcomes to hold some out) is left out of the curve.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from training.calibration import calibrated, platt
from training.config import CHAMPION_CANDIDATE, PLAIN, TrainConfig
from training.data import family_rows, labelled_rows
from training.evaluation import metric_table, metric_values
from training.learners import Learner, Predictor, Validation
from training.model import encode
from training.validation import Encoding, held_out_citizens, learn_encoding, weighted_log_loss

FRACTIONS: tuple[float, ...] = (1 / 8, 1 / 4, 1 / 2, 1.0)
CURVE_FAMILIES: tuple[str, ...] = (PLAIN, CHAMPION_CANDIDATE)
CURVE_METRICS: tuple[str, ...] = ("roc_auc", "brier", "ece")
TEST_SHARE = 0.25


@dataclass(frozen=True)
class CitizenSplit:
    """Test rows (a mask) and the training citizens in the (seeded) order the subsets take them."""

    test: np.ndarray
    order: np.ndarray


def citizen_split(citizen_ids: np.ndarray, test_share: float, seed: int) -> CitizenSplit:
    """A `test_share` of the citizens as test, the others shuffled: the same for every family."""
    test = held_out_citizens(citizen_ids, test_share, seed)
    order = np.random.default_rng(seed + 1).permutation(np.unique(citizen_ids[~test]))
    return CitizenSplit(test, order)


def subset_rows(citizen_ids: np.ndarray, split: CitizenSplit, fraction: float) -> np.ndarray:
    """Rows of the first `fraction` of the training citizens (at least one citizen): nested by fraction."""
    taken = split.order[: max(1, round(fraction * len(split.order)))]
    return np.isin(citizen_ids, taken) & ~split.test


@dataclass(frozen=True)
class Fitted:
    """A fitted family: its predictor, Platt calibration and chosen parameters."""

    predictor: Predictor
    calibration: tuple[float, float]
    params: dict[str, Any]

    def probability(self, X: np.ndarray) -> np.ndarray:
        return calibrated(self.predictor.margin(X), self.calibration)

    def log_odds(self, X: np.ndarray) -> np.ndarray:
        """The calibrated log-odds a * margin + b (what `probability` takes expit of)."""
        a, b = self.calibration
        return a * self.predictor.margin(X) + b


def fit_family(learner: Learner, frame: pd.DataFrame, X: np.ndarray, config: TrainConfig) -> Fitted:
    """Fit one family on the rows of `frame` (matrix `X`) its row policy takes: a `config.inner_share` of
    the citizens is held out to choose the grid point (weighted log loss), stop early and calibrate."""
    rows, w = family_rows(frame, learner.rows)
    y = frame["label"].to_numpy(dtype=float)
    citizens = frame["citizen_id"].to_numpy()
    check = held_out_citizens(citizens, config.inner_share, config.seed) & rows
    fit_rows = rows & ~check
    if len(np.unique(y[fit_rows])) < 2 or len(np.unique(y[check])) < 2:
        raise ValueError(f"{learner.name}: too few labelled citizens of both outcomes to fit and check")
    valid = Validation(X[check], y[check], w[check])
    best_score, best = np.inf, None
    for point in learner.grid:
        predictor, params = learner.fit(X[fit_rows], y[fit_rows], w[fit_rows], dict(point), valid)
        score = weighted_log_loss(valid.y, predictor.margin(valid.X), valid.w)
        if score < best_score:
            best_score, best = score, (predictor, params)
    predictor, params = best
    return Fitted(predictor, platt(predictor.margin(valid.X), valid.y, valid.w), params)


def truth_calibration_error(p: np.ndarray, true_p: np.ndarray, bins: int = 10) -> float:
    """ECE against the truth: over equal-frequency bins of `p`, the row share times |mean p - mean true p|."""
    known = ~np.isnan(true_p)
    p, true_p = p[known], true_p[known]
    edges = np.quantile(p, np.linspace(0, 1, bins + 1)[1:-1])
    which = np.searchsorted(edges, p, side="right")
    gaps = np.bincount(which, weights=p - true_p, minlength=bins)
    return float(np.abs(gaps).sum() / len(p))


def test_scores(frame: pd.DataFrame, p: np.ndarray, true_p: np.ndarray | None, config: TrainConfig) -> dict[str, float]:
    """Metrics of `p` on the test rows `frame`: against the labels (IPCW, bootstrap intervals over
    citizens) and, with `true_p`, against the truth (every row, censored ones included)."""
    labelled = labelled_rows(frame)
    y = frame["label"].to_numpy(dtype=float)[labelled]
    w = frame["ipcw_weight"].to_numpy(dtype=float)[labelled]
    table = metric_table(y, p[labelled], w, frame["citizen_id"].to_numpy()[labelled], config.n_boot, config.seed)
    scores: dict[str, float] = {}
    for name in CURVE_METRICS:
        scores[name], scores[f"{name}_low"], scores[f"{name}_high"] = table[name]
    scores["mean_p"] = float(np.mean(p))
    if true_p is not None:
        known = ~np.isnan(true_p)
        scores.update(
            {
                "truth_roc_auc": metric_values(y, true_p[labelled], w)["roc_auc"],
                "mean_p": float(np.mean(p[known])),
                "mean_true_p": float(np.mean(true_p[known])),
                "ece_truth": truth_calibration_error(p, true_p),
                "mean_abs_diff_truth": float(np.mean(np.abs(p[known] - true_p[known]))),
            }
        )
    return scores


def encoded(frame: pd.DataFrame, encoding: Encoding) -> np.ndarray:
    return encode(frame, encoding.numeric, encoding.categories)


def learning_curve(
    features: pd.DataFrame,
    true_p: np.ndarray | None,
    config: TrainConfig,
    families: Sequence[str] = CURVE_FAMILIES,
    fractions: Sequence[float] = FRACTIONS,
    test_share: float = TEST_SHARE,
) -> pd.DataFrame:
    """One row per family and subset size: citizens and rows fitted on, then `test_scores`.

    `features` is a weighted feature frame (`training.data.with_weights`); `true_p` the true probability
    of each of its rows (NaN unknown) or None. The encoding is learnt from the training citizens.
    """
    from training.learners import learners

    citizens = features["citizen_id"].to_numpy()
    split = citizen_split(citizens, test_share, config.seed)
    train_frame = features[~split.test].reset_index(drop=True)
    encoding = learn_encoding(train_frame)
    X = encoded(features, encoding)
    test = features[split.test].reset_index(drop=True)
    test_truth = None if true_p is None else true_p[split.test]
    made = learners(encoding.catalogue, replace(config, models=tuple(families)))
    rows = []
    for fraction in sorted(fractions):
        taken = subset_rows(citizens, split, fraction)
        frame = features[taken].reset_index(drop=True)
        for name, learner in made.items():
            try:
                fitted = fit_family(learner, frame, X[taken], config)
            except ValueError:
                continue  # too few citizens of both outcomes at this size
            scores = test_scores(test, fitted.probability(X[split.test]), test_truth, config)
            rows.append(
                {
                    "model": name,
                    "fraction": fraction,
                    "citizens": int(frame["citizen_id"].nunique()),
                    "rows": int(taken.sum()),
                    **scores,
                }
            )
    return pd.DataFrame(rows)


CURVE_LABELS: dict[str, str] = {"roc_auc": "ROC AUC", "brier": "Brier score", "ece": "ECE (labels)"}


def learning_curve_plot(table: pd.DataFrame) -> Figure:
    """AUC, Brier and ECE against the number of training citizens (log scale), per family, with the
    bootstrap intervals as bands; the truth's AUC as a line where known."""
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    axes = fig.subplots(1, len(CURVE_METRICS))
    for ax, metric in zip(axes, CURVE_METRICS, strict=True):
        for name, part in table.groupby("model", sort=False):
            line = ax.plot(part["citizens"], part[metric], marker="o", label=name)[0]
            ax.fill_between(
                part["citizens"], part[f"{metric}_low"], part[f"{metric}_high"], alpha=0.2, color=line.get_color()
            )
        if metric == "roc_auc" and "truth_roc_auc" in table:
            ax.axhline(float(table["truth_roc_auc"].iloc[0]), linestyle="--", color="grey", label="true probabilities")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="training citizens", title=CURVE_LABELS[metric])
    axes[0].legend(loc="lower right", fontsize="small")
    return fig


def curve_metrics(table: pd.DataFrame) -> dict[str, float]:
    """MLflow metrics of a learning curve: `<model>_<metric>_at_<citizens>`."""
    shown = [c for c in table.columns if c not in ("model", "fraction", "citizens", "rows")]
    return {
        f"{r['model']}_{metric}_at_{int(r['citizens'])}": float(r[metric])
        for r in table.to_dict(orient="records")
        for metric in shown
        if np.isfinite(r[metric])
    }


def log_learning_curve(
    table: pd.DataFrame, tracking_uri: str, artifact_root: Path, experiment: str, params: dict[str, Any]
) -> str:
    """One "learning-curve" run in `experiment`: `params`, `curve_metrics`, the table (CSV) and the plot (PNG);
    returns its run id. Under `mlflow run` (MLFLOW_RUN_ID set) it logs into that run."""
    import os

    from training.tracking import experiment_id, started_run, tracking_client

    client = tracking_client(tracking_uri)
    project_run = os.environ.get("MLFLOW_RUN_ID")
    key = None if project_run else experiment_id(experiment, artifact_root, tracking_uri)
    with tempfile.TemporaryDirectory() as tmp, started_run(client, key, "learning-curve", run_id=project_run) as run:
        folder = Path(tmp)
        table.to_csv(folder / "learning_curve.csv", index=False)
        learning_curve_plot(table).savefig(folder / "learning_curve.png", dpi=110)
        run.params({k: str(v) for k, v in params.items()})
        run.metrics(curve_metrics(table))
        run.artifacts(folder, "learning_curve")
        return run.run_id
