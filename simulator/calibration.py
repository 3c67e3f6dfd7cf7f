"""The simulator's calibration table: each BIP figure beside the value measured on simulated data.

Run `python -m simulator.calibration [--citizens 4000] [--seed 2013] [--out docs/calibration.md]`.
Only figures that the simulation produces are compared with BIP's: descriptive figures measured on
the simulated dataset through the same feature pipeline the model uses, and the "effective
caseworker" thought experiment, measured by re-running the simulation with every citizen's
caseworker at the 90th percentile of effectiveness. Sizes set in the scenario (citizens, job
centres, caseworkers) and the relative effects planted in it are listed apart, as configuration:
comparing them with BIP would only check that the YAML says what it says (estimating the effects
from data is the research report's job).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy.stats import norm

from experiments.progression import still_or_back_share
from features.build import build_features
from features.dataset import Dataset
from simulator.simulation import DEFAULT_SCENARIO, load_scenario, merge, simulate

REFERENCE_CITIZENS = 4000  # BIP's size: counts scale with --citizens from here


@dataclass(frozen=True)
class Row:
    figure: str
    bip: float
    simulated: float
    tolerance: float
    unit: str = ""

    @property
    def within(self) -> bool:
        return abs(self.simulated - self.bip) <= self.tolerance


@dataclass(frozen=True)
class Planted:
    """A figure of BIP's that the scenario sets directly, shown beside it for reference."""

    figure: str
    bip: float
    planted: float
    unit: str = ""


def event_share(dataset: Dataset) -> float:
    return float((dataset.outcomes["event"] != "none").mean())


def caseworker_change_share(dataset: Dataset) -> float:
    return float((dataset.measurements.groupby("citizen_id")["caseworker_id"].nunique() > 1).mean())


def effective_caseworker_scenario(scenario: dict[str, Any], quantile: float = 0.9) -> dict[str, Any]:
    """Every caseworker as effective as the given quantile of the planted effectiveness distribution."""
    effect = scenario["hazard"]["caseworker_effect_sd"] * float(norm.ppf(quantile))
    return merge(scenario, {"hazard": {"caseworker_effect_fixed": effect}})


def calibration_rows(citizens: int, seed: int, scenario: dict[str, Any] | None = None) -> list[Row]:
    """The BIP figures that the simulation produces, each beside its value on simulated data."""
    scenario = load_scenario() if scenario is None else scenario
    d = simulate(citizens=citizens, seed=seed, scenario=scenario, truth_draws=0).dataset
    patterns = build_features(d)["pattern_3m"].value_counts(normalize=True)
    effective = simulate(
        citizens=citizens, seed=seed, scenario=effective_caseworker_scenario(scenario), truth_draws=0
    ).dataset
    scale = citizens / REFERENCE_CITIZENS
    return [
        Row("measurements", 27000 * scale, len(d.measurements), 2000 * scale),
        Row(
            "on public support ≥80% of the last 5 years",
            63,
            100 * (d.citizens["benefit_share_5y"] >= 0.8).mean(),
            5,
            "%",
        ),
        Row("in job or education during follow-up", 14.76, 100 * event_share(d), 1.5, "%"),
        Row("last 3 months: job-oriented + other", 18, 100 * patterns.get("job_and_other", 0), 3, "%"),
        Row("last 3 months: job-oriented alone", 24, 100 * patterns.get("job_only", 0), 3, "%"),
        Row("last 3 months: only other types", 34, 100 * patterns.get("other_only", 0), 3, "%"),
        Row("last 3 months: no intervention", 23, 100 * patterns.get("none", 0), 3, "%"),
        Row("citizens who stand still or go back", 57, 100 * still_or_back_share(d), 5, "%"),
        Row("citizens with at least one caseworker change", 40, 100 * caseworker_change_share(d), 5, "%"),
        Row("in job or education with 'effective' caseworkers", 28.45, 100 * event_share(effective), 3, "%"),
    ]


def planted_rows(scenario: dict[str, Any], citizens: int) -> list[Planted]:
    """The BIP figures the scenario sets rather than produces: sizes and relative effects."""
    h = scenario["hazard"]

    def relative(log_odds: float) -> float:
        return 100 * (math.exp(log_odds) - 1)

    return [
        Planted("citizens", REFERENCE_CITIZENS, citizens),
        Planted("job centres", 10, len(scenario["jobcentres"])),
        Planted("caseworkers (300-400)", 350, scenario["caseworkers"]),
        Planted("per step of caseworker belief (relative)", 33, relative(h["caseworker_belief"]), "%"),
        Planted("high vs low job orientation (relative)", 32, relative(h["high_job_orientation"]), "%"),
        Planted("caseworker change (relative)", -22, relative(h["caseworker_change"]), "%"),
    ]


def markdown(rows: list[Row], planted: list[Planted], citizens: int, seed: int) -> str:
    scenario = DEFAULT_SCENARIO.relative_to(DEFAULT_SCENARIO.parents[2]).as_posix()
    lines = [
        "# Simulator calibration",
        "",
        f"Generated by `python -m simulator.calibration --citizens {citizens} --seed {seed}` "
        f"on the default scenario (`{scenario}`). Descriptive figures are measured "
        "on the simulated dataset (intervention patterns through the feature pipeline's `pattern_3m`); "
        "the 'effective caseworker' row re-runs the simulation with every caseworker at the 90th "
        "percentile of effectiveness. `tests/model/test_simulator_calibration.py` checks these rows.",
        "",
        "| BIP figure | BIP | simulated | tolerance | within |",
        "|---|---:|---:|---:|:---:|",
    ]
    for r in rows:
        within = "yes" if r.within else "NO"
        lines.append(f"| {r.figure} | {r.bip:g}{r.unit} | {r.simulated:.2f}{r.unit} | ±{r.tolerance:g} | {within} |")
    lines += [
        "",
        "Set in the scenario, not produced by the simulation (so not a test of it): the sizes, and the "
        "relative effects as planted (estimating them from data is the research report's job, "
        "`docs/research.md`).",
        "",
        "| BIP figure | BIP | planted |",
        "|---|---:|---:|",
    ]
    lines += [f"| {p.figure} | {p.bip:g}{p.unit} | {p.planted:.4g}{p.unit} |" for p in planted]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--citizens", type=int, default=REFERENCE_CITIZENS)
    parser.add_argument("--seed", type=int, default=2013)
    parser.add_argument("--out", type=Path, default=Path("docs/calibration.md"))
    args = parser.parse_args()
    scenario = load_scenario()
    rows = calibration_rows(args.citizens, args.seed, scenario)
    text = markdown(rows, planted_rows(scenario, args.citizens), args.citizens, args.seed)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
