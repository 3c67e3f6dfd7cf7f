"""Citizen folds and held-out citizens of `training.validation`: on hashed codes, the same citizens as
scikit-learn's GroupKFold and `rng.choice` on the ids themselves, so predictions do not move."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupKFold

from training.validation import citizen_codes, citizen_folds, held_out_citizens


def string_ids(citizens: int, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    names = np.array([f"{value:012x}" for value in rng.integers(0, 2**40, citizens)], dtype=object)
    return names[rng.integers(0, citizens, rows)]


def test_citizen_codes_follow_sorted_ids() -> None:
    ids = np.array(["b", "a", "c", "a", "b"], dtype=object)
    codes, citizens = citizen_codes(ids)
    assert citizens.tolist() == ["a", "b", "c"]
    assert codes.tolist() == [1, 0, 2, 0, 1]


def test_folds_are_groupkfolds_on_the_ids() -> None:
    ids = string_ids(300, 2000, seed=5)
    expected = np.empty(len(ids), dtype=int)
    for k, (_, test) in enumerate(GroupKFold(n_splits=5, shuffle=True, random_state=11).split(ids, groups=ids)):
        expected[test] = k
    fold = citizen_folds(ids, 5, 11)
    assert (fold == expected).all()
    for citizen in np.unique(ids)[:50]:
        assert len(np.unique(fold[ids == citizen])) == 1


def test_held_out_citizens_are_those_rng_choice_draws_from_the_sorted_ids() -> None:
    ids = string_ids(400, 3000, seed=6)
    citizens = np.unique(ids)
    chosen = np.random.default_rng(3).choice(citizens, size=round(0.2 * len(citizens)), replace=False)
    held = held_out_citizens(ids, 0.2, 3)
    assert (held == np.isin(ids, chosen)).all()
    assert len(np.unique(ids[held])) == len(chosen)
