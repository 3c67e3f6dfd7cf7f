"""The caseworker step (training/caseworker_effect.py): the shrunk shifts recover planted group effects
on a synthetic world, shrink to 0 with few rows, and the held-out choice keeps the step only where it pays."""

from __future__ import annotations

import numpy as np
import pytest

from training.caseworker_effect import caseworker_shifts, choose_shrinkage, level_kept, shifted

GROUPS, ROWS = 60, 30_000


def world(effect_sd: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows with a known base log-odds, a caseworker code and an outcome drawn with a planted shift per
    caseworker: (base log-odds, codes, y, weights, planted shifts)."""
    rng = np.random.default_rng(seed)
    planted = rng.normal(0.0, effect_sd, GROUPS)
    codes = rng.integers(0, GROUPS, ROWS)
    base = rng.normal(-1.5, 1.0, ROWS)
    y = (rng.random(ROWS) < 1 / (1 + np.exp(-(base + planted[codes])))).astype(float)
    return base, codes, y, rng.uniform(0.5, 2.0, ROWS), planted


def test_shifts_recover_planted_effects() -> None:
    base, codes, y, w, planted = world(0.5)
    p = 1 / (1 + np.exp(-base))
    shifts = caseworker_shifts(codes, y, p, w, shrinkage=10.0)
    assert shifts.shape == (GROUPS,)
    assert np.corrcoef(shifts, planted)[0, 1] > 0.8
    # One Newton step from 0 and the penalty both pull towards 0: smaller than the planted spread.
    assert 0.3 < shifts.std() < planted.std()


def test_more_shrinkage_smaller_shifts_and_infinity_none() -> None:
    base, codes, y, w, _ = world(0.5)
    p = 1 / (1 + np.exp(-base))
    sizes = [np.abs(caseworker_shifts(codes, y, p, w, s)).mean() for s in (5.0, 50.0, 500.0)]
    assert sizes[0] > sizes[1] > sizes[2] > 0
    assert not caseworker_shifts(codes, y, p, w, np.inf).any()
    with pytest.raises(ValueError, match="shrinkage must be positive"):
        caseworker_shifts(codes, y, p, w, 0.0)


def test_rows_without_caseworker_and_unknown_codes_get_no_shift() -> None:
    shifts = np.array([0.5, -0.25])
    codes = np.array([0, 1, -1, 7])
    assert shifted(np.zeros(4), codes, shifts).tolist() == [0.5, -0.25, 0.0, 0.0]
    p = np.full(4, 0.5)
    # A row without a caseworker (-1) takes no part: caseworker 0's shift comes from its own row alone.
    alone = caseworker_shifts(np.array([0, -1]), np.array([1.0, 0.0]), p[:2], np.ones(2), 1.0)
    assert alone.tolist() == [0.5 / (0.25 + 1.0)]


@pytest.mark.parametrize(("effect_sd", "kept"), [(0.6, True), (0.0, False)])
def test_choice_keeps_the_step_only_where_it_pays(effect_sd: float, kept: bool) -> None:
    base, codes, y, w, _ = world(effect_sd, seed=11)
    check = np.arange(ROWS) % 5 == 0
    shrinkage, losses = choose_shrinkage(base, codes, y, w, ~check, check, (5.0, 20.0, 80.0, 1e6, np.inf))
    assert set(losses) == {5.0, 20.0, 80.0, 1e6, np.inf}
    if kept:
        assert shrinkage <= 80.0
        assert losses[shrinkage] < losses[np.inf] - 0.005
    else:  # no caseworker effect: the shifts are noise and the held-out loss says so
        assert shrinkage >= 1e6


def test_level_kept_keeps_the_weighted_mean_probability() -> None:
    base, codes, y, w, _ = world(0.8)
    p = 1 / (1 + np.exp(-base))
    shifts = caseworker_shifts(codes, y, p, w, shrinkage=5.0)
    kept = level_kept(shifts, base, codes, w)
    mean = lambda lo: np.average(1 / (1 + np.exp(-lo)), weights=w)  # noqa: E731
    assert abs(mean(shifted(base, codes, shifts)) - mean(base)) > 1e-3  # Jensen: spread shifts move the level
    assert mean(shifted(base, codes, kept)) == pytest.approx(mean(base), abs=1e-9)
    assert np.allclose(kept - shifts, (kept - shifts)[0])  # one constant for every caseworker with rows
    # A caseworker without rows keeps no shift (the marginal log-odds).
    wider = level_kept(np.append(shifts, 0.0), base, codes, w)
    assert wider[-1] == 0.0
