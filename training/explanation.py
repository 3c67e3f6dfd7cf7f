"""SHAP explanations of the champion candidate for its MLflow run: shap's own plots and the
importance tables.

The contributions are XGBoost's `pred_contribs` (exact TreeSHAP, the values shap.TreeExplainer
gives), plus the linear part's exact terms where the champion is blended (training/linear.py), each
weighted by its share, scaled by the Platt slope and shifted by its intercept so that a row adds up to the calibrated
log-odds. They are summed per indicator (a citizen's and a caseworker's score of one indicator, their
changes) or group (`belongs_to` in the feature catalogue), as the caseworker page shows them, and
shap draws:
- a beeswarm per indicator, coloured by the indicator's level;
- a dependence (scatter) plot per indicator: its contribution against its level, where the monotone
  constraint shows as a rising cloud;
- a bar chart of mean |contribution| per indicator;
- a waterfall for a few example rows, labelled "example 1..3" and drawn without their values.

The plots use a sample of rows; no row's id, birth year or answer is written as text.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from features.catalogue import BACKGROUND_LABELS, GROUP_LABELS, INDICATOR_CODES, indicator
from training.evaluation import importance_by_indicator
from training.model import BASE, contributions_by

BEESWARM_GROUPS = 20
EXAMPLES = 3


def group_labels(catalogue: pd.DataFrame) -> dict[str, str]:
    """English labels of features and of the groups they belong to, for plots."""
    labels = dict(zip(catalogue["name"], catalogue["label_en"], strict=True))
    for code in catalogue["belongs_to"].unique():
        if code in INDICATOR_CODES:
            labels[code] = indicator(code).label_en
        elif code in GROUP_LABELS:
            labels[code] = GROUP_LABELS[code][1]
        elif code in BACKGROUND_LABELS:
            labels[code] = BACKGROUND_LABELS[code][1]
        else:
            labels[code] = str(code).replace("_", " ").capitalize()
    return labels


def group_levels(X: np.ndarray, catalogue: pd.DataFrame, groups: Sequence[str]) -> np.ndarray:
    """Per row and group, the mean of the group's monotone level columns (a citizen's and a
    caseworker's score of an indicator); NaN for a group without one or a row without an answer."""
    levels = np.full((len(X), len(groups)), np.nan)
    monotone = catalogue["monotone"].to_numpy() == 1
    for j, group in enumerate(groups):
        columns = np.flatnonzero(monotone & (catalogue["belongs_to"].to_numpy() == group))
        if len(columns):
            values = X[:, columns].astype(float)
            answered = (~np.isnan(values)).sum(axis=1)
            total = np.where(np.isnan(values), 0.0, values).sum(axis=1)
            levels[:, j] = np.where(answered > 0, total / np.maximum(answered, 1), np.nan)
    return levels


def grouped_explanation(contributions: np.ndarray, X: np.ndarray, catalogue: pd.DataFrame):
    """A shap.Explanation of `contributions` (rows x features + base) summed per `belongs_to` group,
    with each group's level as its data; features are named by group code."""
    import shap

    by_group = contributions_by(contributions, catalogue)
    base = by_group.pop(BASE).to_numpy() if BASE in by_group else np.zeros(len(by_group))
    groups = list(by_group.columns)
    return shap.Explanation(
        values=by_group.to_numpy(), base_values=base, data=group_levels(X, catalogue, groups), feature_names=groups
    )


def labelled(explanation, labels: Mapping[str, str]):
    """The explanation with its features named by their English labels."""
    import shap

    return shap.Explanation(
        values=explanation.values,
        base_values=explanation.base_values,
        data=explanation.data,
        feature_names=[labels.get(name, name) for name in explanation.feature_names],
    )


def saved(path: Path) -> Path:
    """The current pyplot figure (where shap draws) written to `path` and closed."""
    import matplotlib.pyplot as plt

    fig = plt.gcf()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def shap_plots(explanation, labels: Mapping[str, str], out_dir: Path, seed: int = 0) -> list[Path]:
    """shap's beeswarm, bar chart, a dependence plot per indicator and waterfalls of `EXAMPLES` rows
    of a grouped explanation (`grouped_explanation`), as PNG files in `out_dir`."""
    import matplotlib.pyplot as plt
    import shap

    out, shown = Path(out_dir), labelled(explanation, labels)
    paths = []
    plt.figure()
    with warnings.catch_warnings():
        # shap takes percentiles of each group's level for the colours: all NaN for a group without one.
        warnings.simplefilter("ignore", RuntimeWarning)
        shap.plots.beeswarm(
            shown, max_display=BEESWARM_GROUPS, show=False, color_bar_label="level of the indicator (grey: none)"
        )
    paths.append(saved(out / "shap_beeswarm.png"))
    plt.figure()
    shap.plots.bar(shown, max_display=BEESWARM_GROUPS, show=False)
    paths.append(saved(out / "importance_by_indicator.png"))
    for j, code in enumerate(explanation.feature_names):
        if code in INDICATOR_CODES and not np.isnan(explanation.data[:, j]).all():
            fig, ax = plt.subplots(figsize=(6, 4))
            shap.plots.scatter(shown[:, j], ax=ax, show=False, title=labels.get(code, code), ylabel="contribution")
            ax.set_xlabel("level (mean of the citizen's and the caseworker's score)")
            paths.append(saved(out / f"shap_dependence_{code}.png"))
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(shown.values), size=min(EXAMPLES, len(shown.values)), replace=False)
    for k, row in enumerate(sorted(rows), start=1):
        # Without data: a waterfall would print the row's answers beside the indicator names.
        example = shap.Explanation(
            values=shown.values[row], base_values=float(shown.base_values[row]), feature_names=shown.feature_names
        )
        plt.figure()
        shap.plots.waterfall(example, max_display=12, show=False)
        plt.title(f"example {k}")
        paths.append(saved(out / f"shap_waterfall_example_{k}.png"))
    return paths


def explanation_artifacts(
    contributions: np.ndarray, X: np.ndarray, catalogue: pd.DataFrame, out_dir: Path, seed: int = 0
) -> tuple[pd.Series, list[Path]]:
    """SHAP plots and importance tables (per indicator/group and per feature) written to `out_dir`, from
    the contributions (rows x features + base, on the calibrated log-odds) of the sampled rows `X`."""
    names = list(catalogue["name"])
    belongs_to = dict(zip(names, catalogue["belongs_to"], strict=True))
    features = contributions[:, : len(names)]
    paths = shap_plots(grouped_explanation(contributions, X, catalogue), group_labels(catalogue), out_dir, seed)
    importance = importance_by_indicator(features, names, belongs_to)
    importance.to_csv(out_dir / "importance_by_indicator.csv")
    per_feature = pd.Series(np.abs(features).mean(axis=0), index=pd.Index(names, name="feature"), name="importance")
    per_feature.sort_values(ascending=False).to_csv(out_dir / "importance_by_feature.csv")
    return importance, [*paths, out_dir / "importance_by_indicator.csv", out_dir / "importance_by_feature.csv"]
