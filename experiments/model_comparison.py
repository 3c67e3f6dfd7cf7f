"""Analysis 5: the model families compared on the same folds, in grouped CV and out of time.

The training stage's own functions do the work (`training.train`): the same split (an out-of-time
cutoff, citizen-grouped folds inside the training period), nested grid search, Platt calibration
and bootstrap intervals over citizens. This module only runs every family, the plain baseline among
them (`training.config.PLAIN`), and puts the metrics, calibration curves and the monotone XGBoost's
SHAP importance side by side; with the simulator's truth, also each family's level and calibration
error against the true probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from experiments.analyses import Analysis, Plot, ResearchConfig, Table, figure
from features.dataset import Dataset

VALIDATIONS: dict[str, str] = {"cv": "grouped CV (out of fold)", "oot": "out of time"}
SHOWN_METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "brier", "log_loss", "ece")
METRIC_LABELS: dict[str, str] = {"roc_auc": "ROC AUC", "brier": "Brier score"}
# With the simulator's truth: the truth's AUC on the same labels, the level and the calibration error against it.
TRUTH_METRICS: tuple[str, ...] = ("truth_roc_auc", "mean_predicted", "mean_true", "mean_abs_diff_truth", "ece_truth")


@dataclass(frozen=True)
class Comparison:
    """Analysis 5 and the SHAP importance per indicator of its monotone XGBoost (out-of-time model)."""

    analysis: Analysis
    importance: pd.Series | None
    importance_source: str


def train_config(config: ResearchConfig):
    """The TrainConfig of analysis 5: the one given, or training's defaults at the research seed; the
    plain family is always among its families."""
    from dataclasses import replace

    from training.config import PLAIN, TrainConfig

    chosen = config.train or TrainConfig(horizon_months=config.horizon_months, seed=config.seed)
    return chosen if PLAIN in chosen.models else replace(chosen, models=(*chosen.models, PLAIN))


def metric_rows(name: str, metrics: dict[str, float]) -> list[dict[str, object]]:
    rows = []
    for prefix, validation in VALIDATIONS.items():
        row: dict[str, object] = {"model": name, "validation": validation}
        for metric in SHOWN_METRICS:
            row[metric] = metrics.get(f"{prefix}_{metric}", np.nan)
            row[f"{metric}_low"] = metrics.get(f"{prefix}_{metric}_low", np.nan)
            row[f"{metric}_high"] = metrics.get(f"{prefix}_{metric}_high", np.nan)
        for metric in TRUTH_METRICS:
            if f"{prefix}_{metric}" in metrics:
                row[metric] = metrics[f"{prefix}_{metric}"]
        rows.append(row)
    return rows


def reliability_curves(curves: dict[str, dict[str, pd.DataFrame]]) -> Figure:
    """One panel per validation: observed rate against mean prediction per bin, every model."""
    fig = figure(11, 4.8)
    axes = fig.subplots(1, len(VALIDATIONS), sharey=True)
    for ax, (prefix, validation) in zip(axes, VALIDATIONS.items(), strict=True):
        top = 0.0
        for name, tables in curves.items():
            table = tables[prefix]
            ax.plot(table["mean_predicted"], table["observed_rate"], marker="o", label=name)
            top = max(top, float(table["mean_predicted"].max()), float(table["observed_rate"].max()))
        top = min(1.0, top * 1.1 + 0.02)
        ax.plot([0, top], [0, top], linestyle="--", color="grey", label="perfect calibration")
        ax.set(xlim=(0, top), ylim=(0, top), xlabel="mean predicted chance", title=f"Calibration: {validation}")
        ax.legend(loc="upper left", fontsize="small")
    axes[0].set_ylabel("observed rate (IPCW-weighted)")
    return fig


def metric_plot(table: pd.DataFrame) -> Figure:
    """ROC AUC and Brier score with their bootstrap intervals, per model and validation."""
    fig = figure(11, 2.0 + 0.5 * table["model"].nunique())
    axes = fig.subplots(1, 2)
    models = list(dict.fromkeys(table["model"]))
    at = np.arange(len(models))[::-1]
    for ax, metric in zip(axes, ("roc_auc", "brier"), strict=True):
        for shift, (validation, color) in zip(
            (-0.12, 0.12), zip(VALIDATIONS.values(), ("tab:blue", "tab:orange"), strict=True), strict=True
        ):
            part = table[table["validation"] == validation].set_index("model").reindex(models)
            ax.errorbar(
                part[metric],
                at + shift,
                xerr=[part[metric] - part[f"{metric}_low"], part[f"{metric}_high"] - part[metric]],
                fmt="o",
                color=color,
                capsize=3,
                label=validation,
            )
        ax.set_yticks(at, models)
        ax.set(xlabel=METRIC_LABELS[metric], title=f"{METRIC_LABELS[metric]} (95 % bootstrap over citizens)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize="small")
    return fig


def shap_importance(result, split) -> pd.Series:
    """Mean |SHAP contribution| per indicator (and other group) of a booster family's out-of-time
    model on the out-of-time rows, on the calibrated log-odds scale."""
    from training.evaluation import importance_by_indicator

    catalogue = split.encoding.catalogue
    names = list(catalogue["name"])
    contributions = result.oot_predictor.contributions(split.X_test) * result.calibration[0]
    return importance_by_indicator(
        contributions[:, : len(names)], names, dict(zip(names, catalogue["belongs_to"], strict=True))
    )


def with_truth_calibration(metrics: dict[str, float], split, result, truth: pd.DataFrame | None) -> dict[str, float]:
    """`metrics` with the calibration error against the truth (`<prefix>_ece_truth`) when truth is given."""
    from training.evaluation import truth_of
    from training.learning_curve import truth_calibration_error

    if truth is None:
        return metrics
    added = dict(metrics)
    for prefix, frame, p in (("cv", split.period, result.cv_probability), ("oot", split.test, result.oot_probability)):
        true_p = truth_of(frame, truth)
        if np.isfinite(true_p).any():
            added[f"{prefix}_ece_truth"] = truth_calibration_error(p, true_p)
    return added


def model_comparison_analysis(
    dataset: Dataset, config: ResearchConfig, truth: pd.DataFrame | None = None
) -> Comparison:
    """Analysis 5: every model family of training and the plain baseline, grouped CV and out of time, with
    intervals; with `truth` (the simulator's true probabilities, evaluation only) their calibration against it."""
    from training.config import CHAMPION_CANDIDATE
    from training.data import labelled_rows
    from training.evaluation import reliability_table
    from training.learners import learners
    from training.train import train_family
    from training.validation import make_split

    tc = train_config(config)
    split = make_split(dataset, tc)
    rows, curves, metrics, importance = [], {}, {}, None
    for name, learner in learners(split.encoding.catalogue, tc).items():
        result = train_family(learner, split, truth, tc)
        result.metrics = with_truth_calibration(result.metrics, split, result, truth)
        rows += metric_rows(name, result.metrics)
        metrics.update(
            {f"{name}_{k}": float(v) for k, v in result.metrics.items() if k.split("_", 1)[0] in VALIDATIONS}
        )
        curves[name] = {}
        for prefix, frame, p in (
            ("cv", split.period, result.cv_probability),
            ("oot", split.test, result.oot_probability),
        ):
            labelled = labelled_rows(frame)
            curves[name][prefix] = reliability_table(
                frame["label"].to_numpy(float)[labelled], p[labelled], frame["ipcw_weight"].to_numpy(float)[labelled]
            )
        if name == CHAMPION_CANDIDATE:
            importance = shap_importance(result, split)
    table = pd.DataFrame(rows)
    best = table[table["validation"] == VALIDATIONS["oot"]].sort_values("roc_auc", ascending=False).iloc[0]
    findings = [
        f"Training period up to {split.cutoff.date()} ({len(split.period)} measurements, {tc.folds} folds grouped by "
        f"citizen); out-of-time test from then on ({len(split.test)} measurements).",
        "ROC AUC out of time: "
        + "; ".join(
            f"{r.model} {r.roc_auc:.3f} [{r.roc_auc_low:.3f}, {r.roc_auc_high:.3f}]"
            for r in table[table["validation"] == VALIDATIONS["oot"]].itertuples()
        )
        + f". Highest: {best['model']}.",
    ]
    if "ece_truth" in table:
        findings.append(
            "Against the true probabilities, out of time: "
            + "; ".join(
                f"{r.model} mean p {r.mean_predicted:.3f} (true {r.mean_true:.3f}), ECE {r.ece_truth:.3f}"
                for r in table[table["validation"] == VALIDATIONS["oot"]].itertuples()
            )
            + "."
        )
    analysis = Analysis(
        key="model_comparison",
        title="5. Model comparison",
        question=(
            "How much do the indicators add to background, and what do boosted trees and monotone constraints add to "
            "a logit?"
        ),
        method=(
            "Each family of `bip train`, and a plain XGBoost (no weights, censored rows dropped, latest scores, "
            "their change since the previous measurement and background) as the baseline, on the same split: "
            "nested grid search in citizen-grouped folds of the training "
            "period (out-of-fold predictions), Platt calibration on them, and a refit on the whole training period "
            "scored on the later, out-of-time measurements. Labels are censoring-aware (IPCW weights). Intervals: "
            f"percentile bootstrap over citizens ({tc.n_boot} replicates)."
        ),
        findings=findings,
        params={
            "folds": tc.folds,
            "out_of_time_cutoff": str(split.cutoff.date()),
            "n_boot": tc.n_boot,
            "models": ",".join(tc.models),
        },
        metrics=metrics,
        tables=[Table("model_metrics", "Metrics with 95 % bootstrap intervals, grouped CV and out of time", table)],
        plots=[
            Plot("model_metrics", "ROC AUC and Brier score per model", metric_plot(table)),
            Plot("calibration_curves", "Calibration curves, grouped CV and out of time", reliability_curves(curves)),
        ],
    )
    source = f"{CHAMPION_CANDIDATE} of this comparison (fitted on the training period, SHAP on the out-of-time rows)"
    return Comparison(analysis, importance, source if importance is not None else "")
