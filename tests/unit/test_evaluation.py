"""Metrics, citizen bootstrap, fairness and importance of `training.evaluation` on hand-made data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from training.evaluation import (
    BASELINE_FAMILY,
    METRICS,
    age_band,
    champion_doubts,
    expected_calibration_error,
    fairness_table,
    flatten_metrics,
    importance_by_group,
    importance_by_indicator,
    metric_table,
    metric_values,
    reliability_plot,
    reliability_table,
    threshold_for_top_share,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TWO_BINS_P = [0.2] * 5 + [0.8] * 5


def simulated(n_citizens: int, rows_per_citizen: int, seed: int) -> tuple[np.ndarray, ...]:
    """Outcomes drawn from the predictions, with citizen ids; each citizen's rows share p and y."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, n_citizens)
    y = (rng.uniform(size=n_citizens) < p).astype(float)
    citizen = np.arange(n_citizens)
    return tuple(np.repeat(a, rows_per_citizen) for a in (y, p, citizen))


# --- expected calibration error and reliability table ---------------------------------------------


def test_ece_is_zero_when_each_bin_is_calibrated() -> None:
    y = [1, 0, 0, 0, 0, 1, 1, 1, 1, 0]  # 1 of 5 at p=0.2, 4 of 5 at p=0.8
    assert expected_calibration_error(y, TWO_BINS_P, bins=2) == pytest.approx(0.0)


def test_ece_of_a_miscalibrated_case_by_hand() -> None:
    y = [0] * 5 + [1] * 5  # observed 0 vs predicted 0.2, observed 1 vs predicted 0.8
    assert expected_calibration_error(y, TWO_BINS_P, bins=2) == pytest.approx(0.2)


def test_ece_is_weighted() -> None:
    # One bin: weighted observed rate 3/4, mean prediction 0.5.
    assert expected_calibration_error([1, 0], [0.5, 0.5], w=[3, 1], bins=1) == pytest.approx(0.25)
    assert expected_calibration_error([1, 0], [0.5, 0.5], bins=1) == pytest.approx(0.0)


def test_reliability_table_has_equal_frequency_bins() -> None:
    table = reliability_table([0, 0, 1, 1], [0.01, 0.02, 0.03, 0.9], w=[1, 1, 1, 3], bins=2)
    assert table["n"].tolist() == [2, 2]
    assert table["p_low"].tolist() == [0.01, 0.03]
    assert table["mean_predicted"].tolist() == pytest.approx([0.015, (0.03 + 3 * 0.9) / 4])
    assert table["observed_rate"].tolist() == pytest.approx([0.0, 1.0])
    assert table["weight"].tolist() == [2, 4]


# --- metric values -------------------------------------------------------------------------------


def test_metric_values_by_hand() -> None:
    values = metric_values([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert set(values) == set(METRICS)
    assert values["roc_auc"] == pytest.approx(0.75)  # 3 of 4 positive/negative pairs ordered right
    assert values["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert values["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert values["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4)


def test_tied_predictions_count_as_half_a_pair() -> None:
    assert metric_values([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9])["roc_auc"] == pytest.approx((1 + 1 + 0.5 + 1) / 4)


def test_weighted_metrics_equal_metrics_on_duplicated_rows() -> None:
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    p = np.array([0.3, 0.6, 0.6, 0.1, 0.9, 0.7, 0.2, 0.4])
    w = np.array([2, 1, 3, 1, 0, 2, 1, 1])
    weighted = metric_values(y, p, w, bins=3)
    duplicated = metric_values(np.repeat(y, w), np.repeat(p, w), bins=3)
    assert weighted["roc_auc"] == pytest.approx(duplicated["roc_auc"])
    assert weighted["pr_auc"] == pytest.approx(duplicated["pr_auc"])
    assert weighted["brier"] == pytest.approx(duplicated["brier"])
    assert weighted["log_loss"] == pytest.approx(duplicated["log_loss"])
    assert weighted != metric_values(y, p, bins=3)


def test_weighted_metrics_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    p = np.round(rng.uniform(size=500), 2)  # rounding makes ties
    y = (rng.uniform(size=500) < p).astype(int)
    w = rng.uniform(0, 3, 500)
    values = metric_values(y, p, w)
    assert values["roc_auc"] == pytest.approx(roc_auc_score(y, p, sample_weight=w))
    assert values["pr_auc"] == pytest.approx(average_precision_score(y, p, sample_weight=w))
    assert values["brier"] == pytest.approx(brier_score_loss(y, p, sample_weight=w))
    assert values["log_loss"] == pytest.approx(log_loss(y, p, sample_weight=w))


def test_one_class_gives_nan_ranking_metrics_but_a_brier_score() -> None:
    values = metric_values([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(values["roc_auc"]) and math.isnan(values["pr_auc"])
    assert values["brier"] == pytest.approx((0.01 + 0.04 + 0.09) / 3)


@pytest.mark.parametrize(
    ("y", "p", "w", "message"),
    [
        ([0, 1], [0.5], None, "one value per row"),
        ([0, 2], [0.5, 0.5], None, "0/1"),
        ([0, 1], [0.5, 1.5], None, r"\[0, 1\]"),
        ([0, 1], [0.5, 0.5], [1, -1], "non-negative"),
    ],
)
def test_bad_input_says_what_is_wrong(y: list, p: list, w: list | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metric_values(y, p, w)


# --- citizen bootstrap ---------------------------------------------------------------------------


def test_interval_contains_the_estimate_and_shrinks_with_more_citizens() -> None:
    # Predictions 0.1 too high, so the ECE is far from 0, where its resamples are not biased upwards.
    y, p, citizen = simulated(100, 2, seed=1)
    small = metric_table(y, np.clip(p + 0.1, 0, 1), None, citizen)
    y, p, citizen = simulated(3000, 2, seed=1)
    large = metric_table(y, np.clip(p + 0.1, 0, 1), None, citizen)
    for name in METRICS:
        estimate, low, high = large[name]
        assert low <= estimate <= high, name
        assert high - low < small[name][2] - small[name][1], name


def test_bootstrap_keeps_each_citizens_rows_together() -> None:
    # Ten identical rows per citizen: resampling rows would treat them as independent and give a
    # narrow interval; resampling citizens gives the interval of one row per citizen, weighted by ten.
    y, p, citizen = simulated(60, 10, seed=2)
    by_citizen = metric_table(y, p, None, citizen, n_boot=100)
    by_row = metric_table(y, p, None, np.arange(len(y)), n_boot=100)
    one_row_each = metric_table(y[::10], p[::10], np.full(60, 10.0), citizen[::10], n_boot=100)
    for name in METRICS:
        assert by_citizen[name] == pytest.approx(one_row_each[name]), name
    width = {name: table["roc_auc"][2] - table["roc_auc"][1] for name, table in [("c", by_citizen), ("r", by_row)]}
    assert width["c"] > 2 * width["r"]


def test_bootstrap_skips_resamples_with_one_class() -> None:
    # One positive citizen of six: many resamples miss it, and AUC is undefined there.
    y, p, citizen = [1, 0, 0, 0, 0, 0], [0.9, 0.1, 0.2, 0.3, 0.4, 0.5], [1, 2, 3, 4, 5, 6]
    table = metric_table(y, p, None, citizen, n_boot=50)
    assert all(not math.isnan(value) for value in table["roc_auc"])
    assert table["roc_auc"] == (1.0, 1.0, 1.0)


def test_bootstrap_of_one_class_gives_nan_auc_interval_without_failing() -> None:
    table = metric_table([0, 0, 0], [0.1, 0.2, 0.3], None, [1, 2, 3], n_boot=20)
    assert all(math.isnan(value) for value in table["roc_auc"])
    assert not math.isnan(table["brier"][1])


def test_flatten_metrics_gives_mlflow_keys() -> None:
    flat = flatten_metrics({"roc_auc": (0.7, 0.6, 0.8)}, "cv")
    assert flat == {"cv_roc_auc": 0.7, "cv_roc_auc_low": 0.6, "cv_roc_auc_high": 0.8}
    assert list(flatten_metrics({"brier": (0.2, 0.1, 0.3)}, "")) == ["brier", "brier_low", "brier_high"]


# --- fairness ------------------------------------------------------------------------------------


def test_fairness_table_gaps_by_hand() -> None:
    y = [0, 0, 1, 1] * 2
    # Women ranked perfectly and calibrated in the large; men ranked backwards and over-predicted by 0.05.
    p = [0.1, 0.2, 0.8, 0.9, 0.8, 0.9, 0.3, 0.2]
    sensitive = pd.DataFrame({"gender": ["f"] * 4 + ["m"] * 4, "origin": ["dk"] * 7 + ["other"]})
    table, headline = fairness_table(y, p, None, sensitive, threshold=0.5, min_rows=2, bins=1)

    gender = table[table["column"] == "gender"].set_index("group")
    assert gender.loc["f", "roc_auc"] == pytest.approx(1.0)
    assert gender.loc["m", "roc_auc"] == pytest.approx(0.0)
    assert gender.loc["m", "false_negative_rate"] == pytest.approx(1.0)  # both positives below 0.5
    assert gender.loc["m", "calibration_in_the_large"] == pytest.approx(0.05)
    assert gender["n"].tolist() == [4, 4]
    assert headline["fairness_gender_auc_gap"] == pytest.approx(1.0)
    assert headline["fairness_gender_fnr_gap"] == pytest.approx(1.0)
    assert headline["fairness_gender_calibration_gap"] == pytest.approx(0.05)
    assert headline["fairness_gender_ece_gap"] == pytest.approx(0.05)

    origin = table[table["column"] == "origin"].set_index("group")
    assert origin.loc["other", "n"] == 1
    assert origin.loc["other", ["roc_auc", "brier", "false_negative_rate"]].isna().all()  # under min_rows
    assert headline["fairness_origin_auc_gap"] == 0.0  # only one group has an AUC
    assert headline["fairness_max_auc_gap"] == pytest.approx(1.0)
    assert headline["fairness_max_calibration_gap"] == pytest.approx(0.05)


def test_fairness_groups_of_few_citizens_get_no_metrics() -> None:
    """Many rows of a few citizens pass the row minimum, but their observed rate is their own outcomes."""
    rng = np.random.default_rng(5)
    rows = 200
    y = (rng.random(rows) < 0.3).astype(float)
    p = rng.uniform(0.05, 0.6, rows)
    origin = np.array(["dk"] * 160 + ["other"] * 40)
    citizens = np.array([f"c{i % 80}" for i in range(160)] + [f"o{i % 4}" for i in range(40)])  # 80 and 4
    table, headline = fairness_table(
        y, p, None, pd.DataFrame({"origin": origin}), threshold=0.4, citizens=citizens, min_citizens=5
    )
    by = table.set_index("group")
    assert by.loc["other", "n"] == 40  # over min_rows (30)
    assert by.loc["other", ["roc_auc", "mean_predicted", "observed_rate", "false_negative_rate"]].isna().all()
    assert by.loc["dk", ["roc_auc", "observed_rate"]].notna().all()
    assert headline["fairness_origin_auc_gap"] == 0.0  # one group with metrics, no gap
    # The same rows without citizen ids: the row minimum alone lets the four citizens' group through.
    rows_only, _ = fairness_table(y, p, None, pd.DataFrame({"origin": origin}), threshold=0.4)
    assert rows_only.set_index("group").loc["other", ["roc_auc", "observed_rate"]].notna().all()
    with pytest.raises(ValueError, match="one id per prediction"):
        fairness_table(y, p, None, pd.DataFrame({"origin": origin}), threshold=0.4, citizens=citizens[:10])


def test_fairness_table_uses_weights_and_survives_a_one_class_group() -> None:
    y = [0, 1, 0, 0]
    p = [0.2, 0.6, 0.3, 0.4]
    sensitive = pd.DataFrame({"jobcentre": ["a", "a", "b", "b"]})
    table, _ = fairness_table(y, p, [1, 3, 1, 1], sensitive, threshold=0.5, min_rows=1)
    rows = table.set_index("group")
    assert rows.loc["a", "observed_rate"] == pytest.approx(0.75)
    assert rows.loc["a", "mean_predicted"] == pytest.approx((0.2 + 3 * 0.6) / 4)
    assert math.isnan(rows.loc["b", "roc_auc"]) and math.isnan(rows.loc["b", "false_negative_rate"])
    assert rows.loc["b", "brier"] == pytest.approx((0.09 + 0.16) / 2)


def test_age_band() -> None:
    bands = age_band(pd.Series([30, 39, 40, 49, 50, 59, 60, 64, 25]))
    assert bands.astype(str).tolist() == ["30-39", "30-39", "40-49", "40-49", "50-59", "50-59", "60+", "60+", "<30"]


def test_threshold_for_top_share_flags_that_share() -> None:
    p = np.arange(10) / 10
    threshold = threshold_for_top_share(p, share=0.2)
    assert (p >= threshold).sum() == 2
    with pytest.raises(ValueError, match="share"):
        threshold_for_top_share(p, share=1.5)


# --- importance and plots ------------------------------------------------------------------------


def test_importance_sums_an_indicators_features_before_the_absolute_value() -> None:
    contributions = np.array([[1.0, -1.0, 0.5, 0.1], [2.0, -1.0, -1.0, -0.3]])
    names = ["cit_self_efficacy", "cw_self_efficacy", "cit_health", "age"]
    belongs_to = {"cit_self_efficacy": "self_efficacy", "cw_self_efficacy": "self_efficacy", "cit_health": "health"}
    importance = importance_by_indicator(contributions, names, belongs_to)
    # self_efficacy: row sums 0 and 1 -> 0.5 (not (2 + 3) / 2); health: 0.75; age is its own group: 0.2.
    assert importance.to_dict() == pytest.approx({"health": 0.75, "self_efficacy": 0.5, "age": 0.2})
    assert importance.index.tolist() == ["health", "self_efficacy", "age"]
    pd.testing.assert_series_equal(importance_by_group(contributions, names, belongs_to), importance)


def test_importance_rejects_contributions_with_a_bias_column() -> None:
    with pytest.raises(ValueError, match="bias column"):
        importance_by_indicator(np.zeros((2, 3)), ["a", "b"], {})


def test_reliability_plot_writes_a_png_file(tmp_path) -> None:
    y, p, _ = simulated(200, 1, seed=4)
    path = reliability_plot(y, p, np.ones_like(p), tmp_path / "plots" / "reliability.png", title="test")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_fairness_table_gives_fairlearns_figures() -> None:
    # The per-group pass must give what fairlearn's MetricFrame gives with sample weights, group by group.
    from fairlearn.metrics import MetricFrame

    rng = np.random.default_rng(4)
    n = 3000
    p = rng.uniform(0.01, 0.99, n)
    y = (rng.uniform(size=n) < p).astype(float)
    w = rng.exponential(1.0, n) * (rng.uniform(size=n) > 0.1)
    origin = rng.choice(["dk", "west", "other"], n, p=[0.7, 0.29, 0.01])
    table, _ = fairness_table(y, p, w, pd.DataFrame({"origin": origin}), threshold=0.6, min_rows=40)

    def weighted(name: str):
        return lambda y_true, y_pred, sample_weight: metric_values(y_true, y_pred, sample_weight)[name]

    frame = MetricFrame(
        metrics={name: weighted(name) for name in ("roc_auc", "brier", "ece")},
        y_true=y,
        y_pred=p,
        sensitive_features=pd.Series(origin, name="group"),
        sample_params={name: {"sample_weight": w} for name in ("roc_auc", "brier", "ece")},
    )
    ours = table.set_index("group")
    for group in ("dk", "west"):
        for name in ("roc_auc", "brier", "ece"):
            assert ours.loc[group, name] == frame.by_group.loc[group, name], (group, name)
    assert ours.loc["other", "n"] < 40 and ours.loc["other", ["roc_auc", "brier", "ece"]].isna().all()
    assert ours.index.tolist() == sorted(ours.index)


def cv_auc(estimate: float, low: float, high: float) -> dict[str, float]:
    return {"cv_roc_auc": estimate, "cv_roc_auc_low": low, "cv_roc_auc_high": high}


def test_a_champion_surely_better_than_chance_and_the_baseline_has_no_doubts() -> None:
    metrics = {"xgboost_monotone": cv_auc(0.76, 0.74, 0.78), BASELINE_FAMILY: cv_auc(0.66, 0.63, 0.69)}
    assert champion_doubts(metrics, "xgboost_monotone") == []


def test_a_champion_whose_interval_reaches_chance_is_doubted() -> None:
    metrics = {"xgboost_monotone": cv_auc(0.56, 0.49, 0.63), BASELINE_FAMILY: cv_auc(0.52, 0.45, 0.59)}
    [doubt] = champion_doubts(metrics, "xgboost_monotone")
    assert "0.560" in doubt and "0.490-0.630" in doubt and "chance" in doubt


def test_a_champion_not_above_the_register_baseline_is_doubted() -> None:
    metrics = {"xgboost_monotone": cv_auc(0.64, 0.61, 0.67), BASELINE_FAMILY: cv_auc(0.65, 0.62, 0.68)}
    [doubt] = champion_doubts(metrics, "xgboost_monotone")
    assert BASELINE_FAMILY in doubt and "0.640" in doubt and "0.650" in doubt


def test_without_the_baseline_family_only_chance_is_checked() -> None:
    assert champion_doubts({"xgboost_monotone": cv_auc(0.70, 0.66, 0.74)}, "xgboost_monotone") == []
    assert len(champion_doubts({"xgboost_monotone": cv_auc(0.50, 0.40, 0.60)}, "xgboost_monotone")) == 1
