"""The retrain gates and the window start, as pure pieces (the locks: tests/integration/test_locks.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from training.lifecycle import (
    Gates,
    RetrainError,
    check_gates,
    decision_of,
    gate_auc,
    gate_auc_drop,
    gate_ece,
    gate_fairness,
    window_start,
)

GATES = Gates(auc_margin=0.02, max_auc_drop=0.08, max_ece=0.05, fairness_margin=0.05)


def window(auc: float, ece: float = 0.01, auc_gap: float = 0.1, calibration_gap: float = 0.02) -> dict[str, float]:
    return {
        "window_roc_auc": auc,
        "window_ece": ece,
        "window_fairness_max_auc_gap": auc_gap,
        "window_fairness_max_calibration_gap": calibration_gap,
    }


def test_auc_gate_allows_the_margin_and_no_more():
    assert gate_auc(0.79, 0.80, margin=0.02).passed
    assert gate_auc(0.80, 0.80, margin=0.0).passed
    failed = gate_auc(0.77, 0.80, margin=0.02)
    assert not failed.passed and "beyond the allowed 0.020" in failed.reason
    assert failed.value == pytest.approx(-0.03)


def test_auc_drop_gate_against_the_validated_auc_and_without_one():
    assert not gate_auc_drop(0.52, 0.80, max_drop=0.08).passed
    assert gate_auc_drop(0.75, 0.80, max_drop=0.08).passed
    unknown = gate_auc_drop(0.52, None, max_drop=0.08)
    assert unknown.passed and math.isnan(unknown.value) and "not checked" in unknown.reason


def test_ece_gate_is_a_bound():
    assert gate_ece(0.049, 0.05).passed and not gate_ece(0.051, 0.05).passed


def test_fairness_gate_takes_the_largest_growth_and_ignores_unmeasured_gaps():
    champion = window(0.8, auc_gap=0.10, calibration_gap=0.02)
    grown = gate_fairness(window(0.8, auc_gap=0.11, calibration_gap=0.09), champion, margin=0.05)
    assert not grown.passed and "calibration gap" in grown.reason and grown.value == pytest.approx(0.07)
    assert gate_fairness(window(0.8, auc_gap=0.14, calibration_gap=0.0), champion, margin=0.05).passed
    nan = window(0.8, auc_gap=math.nan, calibration_gap=math.nan)
    assert gate_fairness(nan, champion, margin=0.05).passed


def test_check_gates_names_every_gate_and_a_wrong_way_round_model_fails():
    results = check_gates(window(0.8), window(0.8), 0.8, slope=-0.3, gates=GATES)
    assert [g.name for g in results] == ["ordering", "auc", "auc_drop", "ece", "fairness"]
    assert [g.name for g in results if not g.passed] == ["ordering"]
    assert all(g.passed for g in check_gates(window(0.8), window(0.8), 0.8, slope=0.9, gates=GATES))


def test_decisions():
    assert decision_of(True, False) == "promoted" and decision_of(False, False) == "rejected"
    assert decision_of(True, True) == "dry run: would promote"


def test_window_starts_where_the_champion_learnt_outcomes_through():
    assert window_start({"labelled_through": "2014-09-30"}, 12) == pd.Timestamp("2014-09-30")
    # A model from before the fingerprint had it: a horizon before its last measurement.
    assert window_start({"last_measured_on": "2015-09-30"}, 12) == pd.Timestamp("2014-09-30")
    with pytest.raises(RetrainError):
        window_start({}, 12)
