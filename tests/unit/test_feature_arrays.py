"""The serving fast path equals the frame path bit for bit: pydantic histories -> array tables ->
feature core -> model matrix gives exactly what build_features' frame -> `JobChanceModel.matrix` gives,
for many simulated citizens, one at a time and all together."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from features.build import SMALL_FACTORIZE, build_features, factorize, feature_arrays, lookback_windows
from features.feature_catalogue import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from features.tables import tables_of
from serving.core import LoadedModel, score_records, score_tables
from serving.histories import histories_from_dataset, history_tables
from simulator.simulation import simulate
from training.model import (
    JobChanceModel,
    encode,
    encoded_names,
    learn_categories,
    model_catalogue,
    model_inputs,
)

CITIZENS, SEED = 300, 2029


@pytest.fixture(scope="module")
def dataset():
    return simulate(CITIZENS, seed=SEED, truth_draws=0).dataset


@pytest.fixture(scope="module")
def frame(dataset):
    return build_features(dataset)


@pytest.fixture(scope="module")
def histories(dataset):
    return histories_from_dataset(dataset)


@pytest.fixture(scope="module")
def model(frame) -> JobChanceModel:
    """A small booster on every feature, `jobcentre` (strings) and the levelled categories one-hot."""
    numeric, categorical = model_inputs(frame.columns)
    categories = learn_categories(frame, categorical)
    assert "jobcentre" in categories and len(categories["jobcentre"]) > 1
    X = encode(frame, numeric, categories)
    y = np.nan_to_num(frame["label"].to_numpy(dtype=float))
    booster = xgb.train({"max_depth": 3, "nthread": 1}, xgb.DMatrix(X, label=y, missing=np.nan), num_boost_round=15)
    return JobChanceModel(
        booster=booster,
        feature_names=encoded_names(numeric, categories),
        categories=categories,
        calibration=(0.9, -0.1),
        catalogue=model_catalogue(numeric, categories),
    )


def last_rows(frame: pd.DataFrame) -> np.ndarray:
    ids = frame["citizen_id"].to_numpy(dtype=object)
    return np.flatnonzero(np.r_[ids[1:] != ids[:-1], True])


def without_factor_sums(record: dict) -> dict:
    factors = [
        {k: v for k, v in f.items() if k not in ("contribution", "probability_change")}
        for f in record["explanation"]["factors"]
    ]
    return {**record, "explanation": {**record["explanation"], "factors": factors}}


def factor_sums(record: dict) -> list[float]:
    return [f[k] for f in record["explanation"]["factors"] for k in ("contribution", "probability_change")]


def test_history_tables_give_the_features_of_the_frame(frame, histories):
    features = feature_arrays(history_tables(histories))
    assert features.numeric.shape == (len(NUMERIC_FEATURES), len(frame)) and len(frame) > 1000
    np.testing.assert_array_equal(features.numeric.T, frame[list(NUMERIC_FEATURES)].to_numpy(dtype=float))
    ids = features.rounds.citizen_ids[features.rounds.citizen]
    assert ids.tolist() == frame["citizen_id"].tolist()
    assert features.pattern.tolist() == frame["pattern_3m"].cat.codes.tolist()
    rows = np.arange(len(frame))
    for name in CATEGORICAL_FEATURES:
        if name == "jobcentre":
            assert features.category_values(name, rows).tolist() == frame[name].tolist()
        else:
            assert features.category_codes(name, rows).tolist() == frame[name].cat.codes.tolist()


def test_dataset_tables_give_the_same_arrays_as_history_tables(dataset, histories):
    from_dataset, from_histories = feature_arrays(tables_of(dataset)), feature_arrays(history_tables(histories))
    np.testing.assert_array_equal(from_dataset.numeric, from_histories.numeric)
    np.testing.assert_array_equal(from_dataset.last_rounds(), from_histories.last_rounds())


def test_last_rounds_only_equal_the_whole_build_at_those_rounds(histories):
    tables = history_tables(histories)
    whole, last = feature_arrays(tables), feature_arrays(tables, last_only=True)
    at = whole.last_rounds()
    assert len(at) == len(histories) and {0, 1, 2, 3} <= set(np.minimum(whole.rounds.rank[at], 3).tolist())
    np.testing.assert_array_equal(last.numeric, whole.numeric[:, at])
    np.testing.assert_array_equal(last.pattern, whole.pattern[at])
    for name in ("order", "citizen", "citizen_row", "day", "rank"):
        np.testing.assert_array_equal(getattr(last.rounds, name), getattr(whole.rounds, name)[at])
    np.testing.assert_array_equal(last.last_rounds(), np.arange(len(at)))


def test_lookback_windows_hold_each_row_and_its_citizens_rounds_before_it():
    rank = np.array([0, 1, 2, 3, 0, 0, 1])  # citizens of 4, 1 and 2 rounds
    rows, ends = lookback_windows(rank, np.array([3, 4, 6, 1]), lookback=2)
    assert rows.tolist() == [1, 2, 3, 4, 5, 6, 0, 1]
    assert ends.tolist() == [2, 3, 5, 7]
    rows, ends = lookback_windows(rank, np.zeros(0, dtype=int), lookback=2)
    assert rows.tolist() == [] and ends.tolist() == []


def test_matrix_of_the_arrays_equals_the_matrix_of_the_frame(frame, histories, model):
    features = feature_arrays(history_tables(histories))
    rows = np.arange(len(frame))
    X = model.matrix_of(features, rows)
    assert X.dtype == np.float32 and X.shape == (len(frame), len(model.feature_names))
    np.testing.assert_array_equal(X, model.matrix(frame))
    one_hot = X[:, len(model.numeric) :]
    assert one_hot.sum() == len(frame) * len(model.categories)  # every simulated category is known
    last = features.last_rounds()
    np.testing.assert_array_equal(last, last_rows(frame))
    np.testing.assert_array_equal(model.matrix_of(features, last), model.matrix(frame)[last])


def test_scores_one_at_a_time_equal_the_batch_and_the_frame(frame, histories, model):
    loaded = LoadedModel(model, "test", "1", alias="none")
    together = score_records(loaded, histories)
    expected = model.probability(model.matrix(frame)[last_rows(frame)])
    assert [r["probability"] for r in together] == expected.tolist()
    for history, record in zip(histories[::25], together[::25], strict=True):
        (single,) = score_records(loaded, [history])
        assert without_factor_sums(single) == without_factor_sums(record)
        # Factor sums are one matrix product: BLAS may round the last bit differently for 1 row and many.
        np.testing.assert_allclose(factor_sums(single), factor_sums(record), rtol=0, atol=1e-15)
    contributions = model.contributions(model.matrix(frame)[last_rows(frame)])
    base = [r["explanation"]["base_value"] for r in together]
    np.testing.assert_array_equal(base, contributions[:, -1])


def test_a_stored_citizens_tables_score_as_its_history(dataset, histories, model):
    loaded = LoadedModel(model, "test", "1", alias="none")
    history = histories[7]
    cid = history.citizen.citizen_id
    one = {name: t[t["citizen_id"] == cid] if "citizen_id" in t else t for name, t in dataset.tables().items()}
    from features.dataset import Dataset

    (stored,) = score_tables(loaded, tables_of(Dataset(**one)), [history])
    assert stored == score_records(loaded, [history])[0]


def test_python_dates_give_the_day_numbers_numpy_gives():
    from datetime import date

    from features.tables import date_objects_as_days, dates_as_days

    dates = [date(2014, 1, 20), None, date(1969, 12, 31), date(1970, 1, 1), date(2029, 2, 28)]
    np.testing.assert_array_equal(date_objects_as_days(dates), dates_as_days(dates))
    assert date_objects_as_days([]).shape == (0,)


def test_factor_sums_equal_the_membership_product():
    from serving.core import Factors

    catalogue = pd.DataFrame(
        {
            "name": ["a", "b", "c", "d", "e"],
            "belongs_to": ["job", "history", "job", "age", "history"],
            "kind": ["indicator", "history", "indicator", "background", "history"],
        }
    )
    factors = Factors.of(catalogue)
    assert factors.keys == ["job", "history", "age"]
    membership = np.array([[k == owner for k in factors.keys] for owner in catalogue["belongs_to"]], dtype=float)
    contributions = np.random.default_rng(0).normal(size=(7, 6))  # the last column, the base value, is left out
    np.testing.assert_allclose(factors.sums(contributions), contributions[:, :5] @ membership, rtol=0, atol=1e-12)
    assert factors.sums(contributions[:0]).shape == (0, 3)


@pytest.mark.parametrize("size", [0, 1, 7, SMALL_FACTORIZE, SMALL_FACTORIZE + 1, 300])
def test_factorize_answers_as_pandas_at_every_size(size):
    rng = np.random.default_rng(size)
    pool = np.array(["a", "b", "c-1", "Ø", "", None, np.nan, pd.NA, 3, 3.0, "3"], dtype=object)
    values = pool[rng.integers(0, len(pool), size)]
    codes, uniques = factorize(values)
    expected_codes, expected_uniques = pd.factorize(values)
    np.testing.assert_array_equal(codes, expected_codes)
    assert codes.dtype == expected_codes.dtype
    assert list(uniques) == list(expected_uniques)
    assert uniques.dtype == object
