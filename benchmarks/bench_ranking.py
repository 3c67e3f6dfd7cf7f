"""How reliably the model's mean |SHAP| ranks the indicators as planted, by data size and seed.

`tests/model/test_model_behaviour.py` fits the champion's recipe (monotone XGBoost, fixed
hyperparameters, censoring weights) on simulated worlds of 16,000 citizens and checks the
Spearman correlation between the indicators' mean |SHAP| and the planted effects in the default world,
and, in a world where three indicators have no effect (`simulator/scenarios/zero_weakest.yaml`), whether
they are the bottom three. This benchmark repeats those fits over seeds and sizes, so that the test's
single seed can be read against the spread (`benchmarks/RESULTS-ranking.md` holds one run per world):

    nice -n 10 .venv/bin/python benchmarks/bench_ranking.py --citizens 16000 64000 --seeds 5 6 7 8 9 \\
        [--scenario simulator/scenarios/zero_weakest.yaml] --write /tmp/ranking.md

Per fit: Spearman(mean |SHAP|, planted), the bottom three, whether the three weakest indicators (0.03
in the default world, exactly 0 with `--scenario simulator/scenarios/zero_weakest.yaml`) are the bottom
three, and whether the indicators planted at 0.05 or less are the bottom four. Only this benchmark and
the tests read the planted values (from the simulator's scenario).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from bench_training import markdown  # this folder is on the path when run as a script

from features.build import build_features
from features.catalogue import INDICATOR_CODES
from simulator.simulation import load_scenario, simulate
from training.config import TrainConfig
from training.data import with_weights
from training.evaluation import importance_by_indicator
from training.train import fit_job_chance_model

PARAMS = {"max_depth": 3, "learning_rate": 0.1, "n_estimators": 150}  # as the behaviour tests


def planted_strengths(scenario: dict) -> pd.Series:
    """Planted effect per indicator on the quarterly log-odds, per step (from the scenario)."""
    hazard = scenario["hazard"]
    return pd.Series({**hazard["indicators"], "caseworker_belief": hazard["caseworker_belief"]})


def indicator_importance(citizens: int, seed: int, scenario: dict) -> pd.Series:
    """Mean |summed SHAP| per indicator of the recipe fitted on one simulated world, descending."""
    # truth_draws=0 as the test: the truth's draws come from the same random stream, so this keeps seed 5
    # at 16,000 citizens the test's own world.
    world = simulate(citizens, seed=seed, scenario=scenario, truth_draws=0)
    frame = with_weights(build_features(world.dataset), 12, "dropout")
    model = fit_job_chance_model(frame, PARAMS, (1.0, 0.0), TrainConfig())
    contributions = model.contributions(model.matrix(frame))[:, :-1]
    belongs_to = dict(zip(model.catalogue["name"], model.catalogue["belongs_to"], strict=True))
    importance = importance_by_indicator(contributions, model.feature_names, belongs_to)
    return importance[[code for code in importance.index if code in INDICATOR_CODES]]


def ranking_row(citizens: int, seed: int, importance: pd.Series, planted: pd.Series, seconds: float) -> dict:
    ranking = list(importance.index)
    near_zero = set(planted.index[planted == planted.min()])
    small = set(planted.index[planted <= 0.05])
    return {
        "citizens": citizens,
        "seed": seed,
        "spearman": round(importance.corr(planted.reindex(importance.index), method="spearman"), 3),
        "bottom three": ", ".join(ranking[-3:]),
        "weakest three are the bottom three": near_zero == set(ranking[-3:]),
        "<= 0.05 ones are the bottom four": small == set(ranking[-len(small) :]),
        "seconds": round(seconds),
    }


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    by_size = rows.groupby("citizens")
    return pd.DataFrame(
        {
            "fits": by_size.size(),
            "spearman min": by_size["spearman"].min(),
            "spearman median": by_size["spearman"].median(),
            "spearman >= 0.7": by_size["spearman"].apply(lambda s: f"{(s >= 0.7).sum()} of {len(s)}"),
            "weakest three bottom three": by_size["weakest three are the bottom three"].apply(
                lambda s: f"{s.sum()} of {len(s)}"
            ),
            "<= 0.05 ones bottom four": by_size["<= 0.05 ones are the bottom four"].apply(
                lambda s: f"{s.sum()} of {len(s)}"
            ),
        }
    )


def report(rows: pd.DataFrame, planted: pd.Series, command: str) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return "\n".join(
        [
            "# Ranking of the indicators by mean |SHAP|, over seeds and sizes",
            "",
            f"`{command}`, {datetime.now(UTC).isoformat(timespec='seconds')}. Machine: {machine}.",
            "",
            "Planted per-step effects: "
            + ", ".join(f"{k} {v:g}" for k, v in planted.sort_values(ascending=False).items())
            + ".",
            "",
            markdown(summary(rows).reset_index()),
            "",
            markdown(rows),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--citizens", type=int, nargs="+", default=[16_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 6, 7, 8, 9])
    parser.add_argument("--write", type=Path, default=None, help="Write the markdown table here.")
    parser.add_argument(
        "--scenario", type=Path, default=None, help="A partial scenario merged over the default (as `bip simulate`)."
    )
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    planted = planted_strengths(scenario)
    rows = []
    for citizens in args.citizens:
        for seed in args.seeds:
            started = time.perf_counter()
            importance = indicator_importance(citizens, seed, scenario)
            rows.append(ranking_row(citizens, seed, importance, planted, time.perf_counter() - started))
            print(rows[-1], flush=True)
    scenario_option = f" --scenario {args.scenario}" if args.scenario else ""
    command = "benchmarks/bench_ranking.py --citizens {} --seeds {}{}".format(
        " ".join(map(str, args.citizens)), " ".join(map(str, args.seeds)), scenario_option
    )
    text = report(pd.DataFrame(rows), planted, command)
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
