"""Analysis 6 of `bip report`: the learning curve (training/learning_curve.py) as a report section."""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.analyses import Analysis, Plot, Table
from training.config import TrainConfig
from training.learning_curve import FRACTIONS, TEST_SHARE, curve_metrics, learning_curve, learning_curve_plot


def learning_curve_analysis(features: pd.DataFrame, true_p: np.ndarray | None, config: TrainConfig) -> Analysis:
    """The learning curve as a report analysis (tables, plot, metrics), for `bip report` and `bip evaluate`."""
    table = learning_curve(features, true_p, config)
    by_size = table.sort_values("citizens").groupby("model", sort=False)
    full, smallest = by_size.last(), by_size.first()
    findings = [
        f"{name}: ROC AUC {smallest.loc[name, 'roc_auc']:.3f} with {int(smallest.loc[name, 'citizens'])} citizens, "
        f"{full.loc[name, 'roc_auc']:.3f} [{full.loc[name, 'roc_auc_low']:.3f}, {full.loc[name, 'roc_auc_high']:.3f}] "
        f"with {int(full.loc[name, 'citizens'])}"
        + (
            f"; mean p {full.loc[name, 'mean_p']:.3f} against the true {full.loc[name, 'mean_true_p']:.3f}, "
            f"ECE against the truth {full.loc[name, 'ece_truth']:.3f}"
            if "ece_truth" in full
            else ""
        )
        + "."
        for name in full.index
    ]
    return Analysis(
        key="learning_curve",
        title="6. Learning curve: does pooling citizens help?",
        question=(
            "How much better do the models rank and calibrate with more citizens, e.g. when job centres pool "
            "their data, and does the full recipe gain at least as much from data as a plain model?"
        ),
        method=(
            f"Citizens split once: {TEST_SHARE:.0%} test, the rest shuffled and taken in nested subsets "
            f"({', '.join(f'{f:g}' for f in FRACTIONS)}). Each family is fitted on each subset "
            f"({config.inner_share:.0%} of its citizens held out for the grid, early stopping and Platt "
            "calibration) and scored on the same test citizens. Intervals: percentile bootstrap over test "
            f"citizens ({config.n_boot} replicates). "
            "The plain family drops censored rows and uses no weights; the others are censoring-aware (IPCW)."
        ),
        findings=findings,
        params={"fractions": ",".join(f"{f:g}" for f in FRACTIONS), "test_share": TEST_SHARE, "n_boot": config.n_boot},
        metrics=curve_metrics(table),
        tables=[Table("learning_curve", "Metrics on the test citizens by number of training citizens", table)],
        plots=[Plot("learning_curve", "AUC, Brier and ECE against training citizens", learning_curve_plot(table))],
    )
