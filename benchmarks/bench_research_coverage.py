"""Coverage of the research estimators: how often their 95 % intervals hold the planted values.

For each seed it simulates a scenario, runs the estimators of `bip report` (analyses 1-4) exactly as
the report does, and compares each estimate with the value the simulator planted; the estimators
themselves never see the planted values. Per quantity it reports the planted value, the mean
estimate, the bias (mean of estimate - planted), the sd of the estimates over seeds, the mean
standard error and the share of seeds whose 95 % interval holds the planted value. With S seeds a
true 95 % coverage is measured with a standard error of about sqrt(0.95 * 0.05 / S).

    .venv/bin/python benchmarks/bench_research_coverage.py                 # 100 seeds, both scenarios
    nice -n 10 .venv/bin/python benchmarks/bench_research_coverage.py --seeds 100 \\
        --write benchmarks/RESULTS-research-coverage.md

Scenarios: `default` (simulator/scenarios/default.yaml) and `changed` (`simulator.planted.CHANGED`),
the two that `tests/model/test_research.py` uses.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from experiments.analyses import (
    ResearchConfig,
    caseworker_practice_analysis,
    fit_hazard_models,
    indicator_analysis,
    practice_spec,
    research_data,
)
from experiments.caseworker_effects import caseworker_effect_analysis
from experiments.mixed import LOG_SD
from experiments.person_rounds import LATENT_INDICATORS
from experiments.progression import progression_analysis
from features.catalogue import PATTERNS
from simulator.calibration import effective_caseworker_scenario
from simulator.planted import CHANGED, PRACTICE_PLANTED, planted_progression
from simulator.simulation import load_scenario, merge, simulate

LEVEL = 0.95
CONFIG = ResearchConfig(draws=50)  # as the tests: the draws only set the intervals of derived shares


def scenarios() -> dict[str, dict[str, Any]]:
    return {"default": load_scenario(), "changed": merge(load_scenario(), CHANGED)}


def estimates_of_seed(scenario: dict[str, Any], citizens: int, seed: int) -> list[dict[str, Any]]:
    """Each quantity's estimate, standard error and planted value on one simulated dataset."""
    hazard = scenario["hazard"]
    sim = simulate(citizens=citizens, seed=seed, scenario=scenario, truth_draws=0)
    data = research_data(sim.dataset)
    models = fit_hazard_models(data, practice_spec(CONFIG), nodes=CONFIG.quadrature_nodes)
    rows: list[dict[str, Any]] = []

    def add(quantity: str, estimate: float, se: float, planted: float, planted_se: float = 0.0) -> None:
        rows.append(
            {"quantity": quantity, "estimate": estimate, "se": se, "planted": planted, "planted_se": planted_se}
        )

    metrics = indicator_analysis(data, models, CONFIG).metrics
    for code in LATENT_INDICATORS:
        add(f"indicator {code}", metrics[f"log_odds_{code}"], metrics[f"se_{code}"], hazard["indicators"][code])
    practice = caseworker_practice_analysis(data, models, CONFIG).table("practice_effects").set_index("term")
    for term, key in PRACTICE_PLANTED.items():
        add(term, practice.loc[term, "log_odds"], practice.loc[term, "se"], hazard[key])
        add(f"{term} (random intercept)", *practice.loc[term, ["random_intercept_log_odds", "random_intercept_se"]],
            hazard[key])  # fmt: skip
    fit = models.mixed
    add("log caseworker sd (REML)", float(fit.params[LOG_SD]), float(np.sqrt(fit.cov.loc[LOG_SD, LOG_SD])),
        math.log(hazard["caseworker_effect_sd"]))  # fmt: skip
    progression = progression_analysis(data, CONFIG).metrics
    planted = planted_progression(scenario, data.features, data.window_days)
    for p in PATTERNS:
        add(f"progression {p}", progression[f"change_{p}"], progression[f"change_{p}_se"], planted[p])
    effects = caseworker_effect_analysis(data, models, CONFIG).metrics
    what_if = simulate(
        citizens=citizens,
        seed=seed,
        scenario=effective_caseworker_scenario(scenario, CONFIG.effective_quantile),
        truth_draws=0,
    ).dataset.outcomes
    share = float((what_if["event"] != "none").mean())
    # The what-if run is itself a sample of `citizens`: its share has a binomial error of its own.
    add(
        "effective-caseworker share (vs the simulated what-if)",
        effects["effective_share"],
        effects["effective_share_se"],
        share,
        math.sqrt(share * (1 - share) / citizens),
    )
    return [{**row, "seed": seed} for row in rows]


def summary(frame: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """Per quantity: planted (mean over seeds), mean estimate, bias, sd over seeds, mean se, coverage."""
    z = float(norm.ppf(0.5 + level / 2))
    frame = frame.assign(error=frame["estimate"] - frame["planted"])
    frame["covered"] = frame["error"].abs() <= z * np.sqrt(frame["se"] ** 2 + frame["planted_se"] ** 2)
    grouped = frame.groupby("quantity", sort=False)
    return pd.DataFrame(
        {
            "planted": grouped["planted"].mean(),
            "mean estimate": grouped["estimate"].mean(),
            "bias": grouped["error"].mean(),
            "sd over seeds": grouped["estimate"].std(),
            "mean se": grouped["se"].mean(),
            "coverage": grouped["covered"].mean(),
        }
    )


def machine() -> str:
    model = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    name = next((line.split(":", 1)[1].strip() for line in model.splitlines() if line.startswith("Model name")), "?")
    return f"`lscpu` model name **{name}**, **{os.cpu_count()} cores**, Python {platform.python_version()}"


def markdown(tables: dict[str, pd.DataFrame], meta: dict[str, Any]) -> str:
    seeds = meta["seeds"]
    lines = [
        "# Research estimators: coverage over simulated seeds",
        "",
        f"Measured with `{meta['command']}` on {meta['date']}: {meta['machine']}; load average "
        f"{meta['load_before']} before, {meta['load_after']} after; {meta['wall_s']:.0f} s wall "
        f"({meta['per_seed_s']:.1f} s per seed and scenario). The machine is shared: other jobs ran beside it.",
        "",
        f"{seeds} seeds ({meta['first_seed']}–{meta['first_seed'] + seeds - 1}), {meta['citizens']:,} citizens each. "
        "Log-odds per round, except the sd (log scale), the progression (change of the mean answer per round, "
        "1–5 scale; planted: the change of the mean latent indicator, averaged over the same rows) and the "
        "effective-caseworker share (planted: the share in the simulator's own what-if run; its binomial error "
        "is added to the estimate's in the coverage). Coverage: share of seeds whose 95 % interval holds the "
        "planted value; with "
        f"{seeds} seeds a true 95 % is measured to about ±{100 * 1.96 * math.sqrt(0.95 * 0.05 / seeds):.0f} points "
        "(95 %). **Bold**: coverage below 90 %.",
    ]
    for name, table in tables.items():
        lines += [
            "",
            f"## Scenario `{name}`",
            "",
            "| quantity | planted | mean estimate | bias | sd over seeds | mean se | coverage |",
        ]
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for quantity, r in table.iterrows():
            coverage = f"{100 * r['coverage']:.0f} %"
            coverage = f"**{coverage}**" if r["coverage"] < 0.9 else coverage
            lines.append(
                f"| {quantity} | {r['planted']:+.3f} | {r['mean estimate']:+.3f} | {r['bias']:+.3f} | "
                f"{r['sd over seeds']:.3f} | {r['mean se']:.3f} | {coverage} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=3000)
    parser.add_argument("--citizens", type=int, default=4000)
    parser.add_argument("--scenario", choices=["default", "changed", "both"], default="both")
    parser.add_argument("--raw", type=Path, help="also write every seed's estimates here (CSV)")
    parser.add_argument("--write", type=Path, help="write the markdown table here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # statsmodels' and the quadrature's numerical notes, seed after seed
    chosen = {k: v for k, v in scenarios().items() if args.scenario in (k, "both")}
    load_before, start = os.getloadavg()[0], time.perf_counter()
    frames = []
    for name, scenario in chosen.items():
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            t = time.perf_counter()
            frames.append(pd.DataFrame(estimates_of_seed(scenario, args.citizens, seed)).assign(scenario=name))
            print(f"{name} seed {seed}: {time.perf_counter() - t:.1f} s", flush=True)
    wall = time.perf_counter() - start
    raw = pd.concat(frames, ignore_index=True)
    if args.raw:
        raw.to_csv(args.raw, index=False)
    tables = {name: summary(raw[raw["scenario"] == name]) for name in chosen}
    meta = {
        "command": "nice -n 10 .venv/bin/python benchmarks/bench_research_coverage.py "
        f"--seeds {args.seeds} --first-seed {args.first_seed} --citizens {args.citizens} --scenario {args.scenario}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_before": f"{load_before:.1f}",
        "load_after": f"{os.getloadavg()[0]:.1f}",
        "wall_s": wall,
        "per_seed_s": wall / (args.seeds * len(chosen)),
        "seeds": args.seeds,
        "first_seed": args.first_seed,
        "citizens": args.citizens,
    }
    text = markdown(tables, meta)
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
