"""The waterfall: from the average citizen's chance to this citizen's, in probability steps."""

from __future__ import annotations

import numpy as np
import pytest

from serving.core import probability_steps
from serving.page.charts import WATERFALL_FACTORS, waterfall_chart, waterfall_steps
from serving.schemas import Explanation
from training.model import expit

LABELS = {"base": "Average", "others": "Others", "result": "This citizen"}


def explanation(base: float, contributions: list[float]) -> Explanation:
    ranked = np.array([sorted(contributions, key=abs, reverse=True)])
    steps = probability_steps(np.array([base]), ranked)[0]
    factors = [
        {
            "key": f"f{k}",
            "kind": "indicator",
            "label_da": f"f{k}",
            "label_en": f"f{k}",
            "contribution": c,
            "probability_change": s,
            "direction": "raises" if c >= 0 else "lowers",
        }
        for k, (c, s) in enumerate(zip(ranked[0], steps, strict=True))
    ]
    log_odds = base + sum(contributions)
    return Explanation(
        base_value=base,
        base_probability=float(expit(np.array(base))),
        log_odds=log_odds,
        probability=float(expit(np.array(log_odds))),
        factors=factors,
    )


def test_the_steps_add_up_to_the_difference_from_the_average():
    rng = np.random.default_rng(7)
    base, ranked = rng.normal(-1.5, 0.5, 50), rng.normal(0, 0.4, (50, 23))
    steps = probability_steps(base, ranked)
    assert np.allclose(steps.sum(axis=1), expit(base + ranked.sum(axis=1)) - expit(base), atol=1e-12)
    assert ((steps > 0) == (ranked > 0)).all()  # a step has its contribution's sign


@pytest.mark.parametrize("n", [3, WATERFALL_FACTORS, WATERFALL_FACTORS + 9])
def test_the_chart_has_a_step_per_large_factor_and_one_for_the_rest(n):
    e = explanation(-1.2, list(np.linspace(-0.6, 0.5, n)))
    steps = waterfall_steps(e, "en", LABELS)
    assert len(steps) == min(n, WATERFALL_FACTORS) + (n > WATERFALL_FACTORS)
    assert sum(change for _, _, change in steps) == pytest.approx(e.probability - e.base_probability, abs=1e-12)
    chart = waterfall_chart(e, "en", LABELS)
    assert [s.key for s in chart.steps][0] == "base" and chart.steps[-1].key == "result"
    assert chart.steps[-2].after == pytest.approx(chart.steps[-1].after, abs=1e-12)
    assert all(s.x >= chart.label_width - 1e-9 and s.width >= 1.0 for s in chart.steps)
