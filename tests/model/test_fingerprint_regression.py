"""The feature frame and the champion family's predictions are unchanged by refactoring.

A small simulated dataset (fixed seed) goes through `build_features` and the training weights, and
the champion family is cross-validated, calibrated, fitted out of time and refitted on everything
with a tiny fixed configuration: the trees alone, and apart from them the trees blended with the
linear part (training/linear.py) as the default recipe does. Every column of the feature frame is
hashed bit for bit and the trees' predictions are hashed after rounding to 1e-9 (far below any real
change, above the last-bit noise a reordered sum could add). The blend's linear part is an iterative
fit whose last digits follow the machine's BLAS, so its predictions are compared by their mean, first
values and deciles to 1e-6, and its choices (trees, share, penalty) exactly. The stored values in
`fingerprint_regression.json` were made by the code before the refactor of issue #16 (the blend's
when it was added, issue #18); a change that moves code must keep them.

A deliberate change of features or model regenerates them, with the reason in the commit:
    .venv/bin/python tests/model/test_fingerprint_regression.py
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.build import build_features
from features.dataset import Dataset
from simulator.simulation import simulate
from training.config import LINEAR_CS, LINEAR_SHARES, TrainConfig
from training.data import with_weights
from training.learners import learners
from training.train import fit_job_chance_model, train_family
from training.validation import split_at

STORED = Path(__file__).with_name("fingerprint_regression.json")
CITIZENS, SEED = 1000, 1613
DECIMALS = 9
CONFIG = TrainConfig(
    folds=2,
    n_boot=5,
    models=("xgboost_monotone",),
    xgboost_grid=({"max_depth": 3, "learning_rate": 0.1},),
    max_rounds=60,
    early_stopping_rounds=10,
    shap_rows=100,
    seed=SEED,
    linear_shares=(0.0,),  # the trees alone, as before the linear part; the blend is fingerprinted apart
)
BLENDED = replace(CONFIG, linear_shares=LINEAR_SHARES, linear_cs=LINEAR_CS)
CUTOFF = pd.Timestamp("2015-07-01")  # fixed, so that a change of the cutoff rule shows in its own test


def column_hashes(frame: pd.DataFrame) -> dict[str, str]:
    """Per column: its dtype and a hash of its values (pandas' value hash, bit for bit for floats)."""
    return {
        name: f"{frame[name].dtype}:" + sha(pd.util.hash_pandas_object(frame[name], index=False).to_numpy())
        for name in frame.columns
    }


def sha(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()[:24]


def rounded(p: np.ndarray) -> dict[str, Any]:
    """A hash of the predictions rounded to DECIMALS, with a few values to read when it differs."""
    p = np.asarray(p, dtype=float)
    return {
        "rows": len(p),
        "mean": float(np.mean(p)),
        "first": [float(v) for v in p[:3]],
        "deciles": [float(v) for v in np.quantile(p, np.linspace(0.1, 0.9, 9))],
        "hash": sha(np.round(p, DECIMALS)),
    }


def dataset_hashes(dataset: Dataset) -> dict[str, str]:
    """Every table of the simulated dataset, so that a change of the simulator shows apart from features."""
    return {
        name: sha(pd.util.hash_pandas_object(getattr(dataset, name), index=False).to_numpy())
        for name in ("citizens", "caseworkers", "measurements", "interventions", "outcomes")
    }


def current() -> dict[str, Any]:
    """The fingerprint of the code as it is now."""
    dataset = simulate(CITIZENS, seed=SEED, truth_draws=0).dataset
    frame = with_weights(build_features(dataset, horizon_months=CONFIG.horizon_months), 12, CONFIG.weighting)
    split = split_at(frame, CUTOFF, CONFIG)
    return {
        "dataset": dataset_hashes(dataset),
        "feature_columns": column_hashes(frame),
        "encoded_features": split.encoding.feature_names,
        **champion_family(frame, split, CONFIG),
        "blended": champion_family(frame, split, BLENDED),
    }


def champion_family(frame: pd.DataFrame, split, config: TrainConfig) -> dict[str, Any]:
    """The champion family's choice, calibration and predictions under `config`."""
    learner = learners(split.encoding.catalogue, config)["xgboost_monotone"]
    family = train_family(learner, split, None, config)
    model = fit_job_chance_model(frame, family.params, family.calibration, config)
    return {
        "chosen": family.params,
        "calibration": [round(v, DECIMALS) for v in family.calibration],
        "cv_probability": rounded(family.cv_probability),
        "oot_probability": rounded(family.oot_probability),
        "model_probability": rounded(model.probability(model.matrix(frame))),
    }


@pytest.fixture(scope="module")
def fingerprints() -> tuple[dict[str, Any], dict[str, Any]]:
    return json.loads(STORED.read_text()), json.loads(json.dumps(current()))


def test_the_simulated_dataset_is_unchanged(fingerprints):
    stored, now = fingerprints
    assert now["dataset"] == stored["dataset"]


def test_every_feature_column_is_unchanged_bit_for_bit(fingerprints):
    stored, now = fingerprints
    assert list(now["feature_columns"]) == list(stored["feature_columns"]), "columns or their order changed"
    changed = [c for c, h in stored["feature_columns"].items() if now["feature_columns"][c] != h]
    assert not changed, f"feature columns changed: {changed}"
    assert now["encoded_features"] == stored["encoded_features"]


@pytest.mark.parametrize("recipe", ["trees", "blended"])
@pytest.mark.parametrize("part", ["cv_probability", "oot_probability", "model_probability"])
def test_the_champion_familys_predictions_are_unchanged(fingerprints, part, recipe):
    stored, now = (f if recipe == "trees" else f["blended"] for f in fingerprints)
    assert now["chosen"] == stored["chosen"]
    if recipe == "blended":
        assert now[part]["rows"] == stored[part]["rows"]
        summary = [now[part]["mean"], *now[part]["first"], *now[part]["deciles"]]
        expected = [stored[part]["mean"], *stored[part]["first"], *stored[part]["deciles"]]
        np.testing.assert_allclose(summary, expected, rtol=0, atol=1e-6, err_msg=part)
        return
    assert now["calibration"] == stored["calibration"]
    # The hash decides; mean and first values only say by how much it moved.
    assert (now[part]["rows"], now[part]["hash"]) == (stored[part]["rows"], stored[part]["hash"]), (
        f"{part}: now mean {now[part]['mean']}, first {now[part]['first']}; "
        f"stored mean {stored[part]['mean']}, first {stored[part]['first']}"
    )


if __name__ == "__main__":
    STORED.write_text(json.dumps(current(), indent=1) + "\n")
    print(f"written {STORED}")
