"""SHAP explanations of `training.explanation` on hand-made contributions: grouping per indicator,
the level each group is coloured by, and shap's plots written as PNG files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.explanation import explanation_artifacts, group_levels, grouped_explanation

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CATALOGUE = pd.DataFrame(
    {
        "name": ["cit_self_efficacy", "cw_self_efficacy", "cit_self_efficacy__change_prev", "origin__danish"],
        "belongs_to": ["self_efficacy", "self_efficacy", "self_efficacy", "origin"],
        "kind": ["indicator", "indicator", "indicator", "background"],
        "monotone": [1, 1, 0, 0],
        "label_en": ["Self-efficacy (citizen)", "Self-efficacy (caseworker)", "Change", "Origin: danish"],
    }
)


def made(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Levels 1-5 (a few unanswered) and contributions (+ base column) rising with the level."""
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [rng.integers(1, 6, rows), rng.integers(1, 6, rows), rng.normal(size=rows), rng.integers(0, 2, rows)]
    ).astype(float)
    X[:3, 0] = np.nan
    contributions = np.column_stack(
        [np.nan_to_num(X[:, 0] - 3) * 0.2, (X[:, 1] - 3) * 0.1, rng.normal(0, 0.05, rows), X[:, 3] * 0.3]
    )
    return X, np.column_stack([contributions, np.full(rows, -1.5)])


def test_contributions_are_summed_per_indicator_with_the_base_kept() -> None:
    X, contributions = made(40, seed=1)
    explanation = grouped_explanation(contributions, X, CATALOGUE)
    assert list(explanation.feature_names) == ["self_efficacy", "origin"]
    np.testing.assert_allclose(explanation.values[:, 0], contributions[:, :3].sum(axis=1))
    np.testing.assert_allclose(explanation.base_values, -1.5)
    np.testing.assert_allclose(explanation.values.sum(axis=1) + explanation.base_values, contributions.sum(axis=1))


def test_a_groups_level_is_the_mean_of_its_answered_levels() -> None:
    X = np.array([[2.0, 4.0, 9.0, 1.0], [np.nan, 5.0, 9.0, 0.0], [np.nan, np.nan, 9.0, 1.0]])
    levels = group_levels(X, CATALOGUE, ["self_efficacy", "origin"])
    np.testing.assert_array_equal(levels[:, 0], [3.0, 5.0, np.nan])  # the change column is no level
    assert np.isnan(levels[:, 1]).all()  # a group without a monotone level is drawn grey


def test_shap_plots_and_tables_are_written(tmp_path) -> None:
    X, contributions = made(60, seed=2)
    importance, paths = explanation_artifacts(contributions, X, CATALOGUE, tmp_path, seed=3)
    names = {path.name for path in paths}
    assert {
        "shap_beeswarm.png",
        "importance_by_indicator.png",
        "shap_dependence_self_efficacy.png",
        "shap_waterfall_example_1.png",
        "shap_waterfall_example_2.png",
        "shap_waterfall_example_3.png",
        "importance_by_indicator.csv",
        "importance_by_feature.csv",
    } == names
    for path in paths:
        if path.suffix == ".png":
            assert path.stat().st_size > 1000 and path.read_bytes().startswith(PNG_SIGNATURE)
    expected = np.abs(contributions[:, :3].sum(axis=1)).mean()
    assert importance["self_efficacy"] == pytest.approx(expected)
