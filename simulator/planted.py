"""The research analyses' estimands as the planted scenario sets them, to compare estimates with.

Read only by the research tests (`tests/model/test_research.py`) and the coverage benchmark
(`benchmarks/bench_research_coverage.py`); the analyses themselves learn from data alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from experiments.person_rounds import CONSECUTIVE_ROUNDS
from features.catalogue import GROUPS
from simulator.simulation import target_matrix

# A second scenario whose planted values differ from the default's, so that an estimate can be
# seen to move with them: belief 0.285 -> 0.6, orientation 0.278 -> 0, a change of caseworker
# -0.248 -> +0.4, caseworker sd 0.5 -> 0.9, health coping and network support swapped, and
# different progression drifts.
CHANGED: dict[str, Any] = {
    "hazard": {
        "caseworker_belief": 0.6,
        "high_job_orientation": 0.0,
        "caseworker_change": 0.4,
        "caseworker_effect_sd": 0.9,
        "indicators": {"health_coping": 0.03, "network_support": 0.30},
    },
    "progression": {"pattern": {"none": -0.10, "other_only": 0.0, "job_only": 0.10, "job_and_other": 0.02}},
}
# The practice terms of the hazard model and the scenario's hazard key each one estimates.
PRACTICE_PLANTED: dict[str, str] = {
    "caseworker_belief": "caseworker_belief",
    "orientation_high": "high_job_orientation",
    "caseworker_changed": "caseworker_change",
}


def planted_progression(scenario: dict[str, Any], features: pd.DataFrame, window_days: int) -> pd.Series:
    """The planted expected change of the mean latent indicator per round, by pattern: the pattern's
    drift plus the targeted effect of the groups active in the last 3 months, averaged over the rows
    the progression analysis uses (a previous measurement one round back)."""
    p = scenario["progression"]
    consecutive = features.loc[features["days_since_prev"] <= CONSECUTIVE_ROUNDS * window_days]
    active = np.column_stack([consecutive[f"grp_{g}__days_91"] > 0 for g in GROUPS]).astype(float)
    targeted = p["targeted"] * (active @ target_matrix(p["targets"])).mean(axis=1)
    pattern = consecutive["pattern_3m"].astype(str).to_numpy()
    expected = np.array([p["pattern"][x] for x in pattern]) + targeted
    return pd.Series(expected).groupby(pattern).mean()
