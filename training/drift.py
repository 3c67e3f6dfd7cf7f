"""Distribution shift between the data a model was trained on and a new measurement round.

The population stability index (PSI) per indicator answer: the 1-5 scale and "not answered" are the
categories, so a rise in unanswered questions shows as drift too. PSI above 0.1 is usually read as a
moderate shift and above 0.25 as a large one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

MODERATE, LARGE = 0.1, 0.25
# Fewer citizens than this in the new rounds and the means and shares would describe those few people
# (a small late ingest): no drift table is made, as for no new rounds at all.
MIN_DRIFT_CITIZENS = 20


def category_shares(values: pd.Series, categories: Sequence[float]) -> np.ndarray:
    """Share of each category and, last, of missing values; a small floor keeps the logarithm finite."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    counts = np.array([(numbers == c).sum() for c in categories] + [np.isnan(numbers).sum()], dtype=float)
    shares = counts / max(counts.sum(), 1.0)
    return np.maximum(shares, 1e-4)


def population_stability_index(reference: pd.Series, current: pd.Series, categories: Sequence[float]) -> float:
    """PSI = sum over categories of (current - reference) * ln(current / reference)."""
    ref, cur = category_shares(reference, categories), category_shares(current, categories)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    categories: Sequence[float] = (1, 2, 3, 4, 5),
) -> pd.DataFrame:
    """One row per column: PSI, mean answer before and now, and a plain-language level."""
    rows = []
    for column in columns:
        psi = population_stability_index(reference[column], current[column], categories)
        rows.append(
            {
                "column": column,
                "psi": psi,
                "reference_mean": pd.to_numeric(reference[column], errors="coerce").mean(),
                "current_mean": pd.to_numeric(current[column], errors="coerce").mean(),
                "level": "large" if psi > LARGE else "moderate" if psi > MODERATE else "none",
            }
        )
    return pd.DataFrame(rows).sort_values("psi", ascending=False, ignore_index=True)
