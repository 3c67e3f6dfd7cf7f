"""Ablation of the champion recipe on the simulator, one thing changed at a time, against the truth.

Every variant is fitted and scored the way the learning curve does it (experiments/learning_curve.py):
the same citizen-grouped split (25 % test citizens) for every variant, the variant fitted on all
training citizens (20 % of them held out for the grid, early stopping and Platt calibration), scored
on the test citizens: AUC against the labels (IPCW) with its bootstrap interval, the truth's AUC on
the same labels, mean p against mean true p and ECE against the truth (every test row).

    .venv/bin/python benchmarks/bench_ablation.py --data /tmp/sim1x --json /tmp/abl1x.json
    nice -n 5 .venv/bin/python benchmarks/bench_ablation.py --data /tmp/sim10x --variants champion plain \\
        --json /tmp/abl10x.json
    .venv/bin/python benchmarks/bench_ablation.py --markdown /tmp/abl1x.json /tmp/abl10x.json

`--data` is a `bip simulate` folder with its `<data>-truth/` beside it (`bip simulate --out DIR`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.build import build_features
from features.contract import read_dataset
from training.caseworker_effect import caseworker_shifts, choose_shrinkage, level_kept, shifted
from training.config import CHAMPION_CANDIDATE, TrainConfig
from training.data import FEATURE_GROUPS, family_rows, group_columns, plain_columns, with_weights
from training.evaluation import read_truth, truth_of
from training.learners import Learner, champion_learner, logit_learner, plain_learner, xgboost_learner
from training.learning_curve import Fitted, citizen_split, encoded, fit_family, test_scores
from training.model import expit
from training.validation import held_out_citizens, learn_encoding

# A search space for more data: deeper trees with more rows per leaf, row subsampling, more rounds.
GROWN_GRID: tuple[dict[str, float], ...] = (
    {"max_depth": 4, "learning_rate": 0.05, "min_child_weight": 2.0},
    {"max_depth": 6, "learning_rate": 0.05, "min_child_weight": 10.0},
    {"max_depth": 8, "learning_rate": 0.05, "min_child_weight": 30.0, "subsample": 0.7},
)
GROWN_ROUNDS = 2000


@dataclass(frozen=True)
class Variant:
    """One change to the champion recipe: the learner it fits and the censoring weighting of its rows."""

    name: str
    change: str
    learner: Callable[[pd.DataFrame, TrainConfig], Learner]
    weighting: str = "dropout"
    config: Callable[[TrainConfig], TrainConfig] = lambda c: c
    caseworker_effect: bool = False


def champion(catalogue: pd.DataFrame, config: TrainConfig, **changes) -> Learner:
    """The champion candidate's family (trees blended with the linear part) with `changes`; without
    monotone constraints (`monotone=False`) on trees and linear part alike."""
    if changes.pop("monotone", True):
        return champion_learner(catalogue, config, **changes)
    return xgboost_learner(CHAMPION_CANDIDATE, None, list(catalogue["name"]), config, linear=True, **changes)


def without(group: str) -> Callable[[pd.DataFrame, TrainConfig], Learner]:
    def made(catalogue, config):
        kept = np.setdiff1d(np.arange(len(catalogue)), group_columns(catalogue, group))
        return champion(catalogue, config, columns=kept)

    return made


def untuned_plain(catalogue: pd.DataFrame, config: TrainConfig) -> Learner:
    """The plain family without tuning (depth 6, learning rate 0.3, 100 rounds, no early stopping)."""
    made = plain_learner(catalogue, config)

    def fit(X, y, w, params, valid):
        return made.fit(X, y, w, {"max_depth": 6, "learning_rate": 0.3, "n_estimators": 100}, None)

    return Learner("plain_untuned", ({},), fit, booster=True, rows="known")


def on_known_rows(catalogue: pd.DataFrame, config: TrainConfig) -> Learner:
    """The champion learnt from the plain family's rows: every known label, unweighted."""
    made = champion(catalogue, config, weight_power=0.0)
    return Learner(made.name, made.grid, made.fit, booster=True, rows="known")


def grown(config: TrainConfig) -> TrainConfig:
    return replace(config, xgboost_grid=GROWN_GRID, max_rounds=GROWN_ROUNDS)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("champion", "the recipe as it is (config defaults)", champion),
        Variant("plain", "no weights, censored rows dropped, scores + change + background", plain_learner),
        Variant("plain_untuned", "plain without tuning: depth 6, rate 0.3, 100 rounds", untuned_plain),
        Variant(
            "plain_features",
            "the champion on the plain family's columns",
            lambda c, k: champion(c, k, columns=plain_columns(c)),
        ),
        Variant("known_rows", "the champion on the plain family's rows (known labels, unweighted)", on_known_rows),
        Variant("unweighted", "trees unweighted (Platt still IPCW)", lambda c, k: champion(c, k, weight_power=0.0)),
        Variant("sqrt_weights", "trees on sqrt of the weights", lambda c, k: champion(c, k, weight_power=0.5)),
        Variant("no_monotone", "no monotone constraints", lambda c, k: champion(c, k, monotone=False)),
        *(Variant(f"no_{g}", f"without the {g} features", without(g)) for g in FEATURE_GROUPS),
        Variant("grown_grid", "grid: depth 4-8, min_child_weight, subsample, 2000 rounds", champion, config=grown),
        Variant("pooled", "rows near the extract kept with censoring weights", champion, weighting="pooled"),
        Variant(
            "unweighted_grown",
            "unweighted trees + grown grid",
            lambda c, k: champion(c, k, weight_power=0.0),
            config=grown,
        ),
        Variant(
            "logit",
            "the logit family alone (all columns, censoring weights)",
            lambda c, k: logit_learner("logit", None),
        ),
        Variant(
            "caseworker_effect",
            "the champion plus a shrunk shift per caseworker (training/caseworker_effect.py)",
            champion,
            caseworker_effect=True,
        ),
        Variant(
            "trees_only",
            "the champion's trees without the linear part",
            champion,
            config=lambda c: replace(c, linear_shares=(0.0,)),
        ),
    ]
}


def caseworker_codes(dataset, features: pd.DataFrame) -> np.ndarray:
    """Each feature row's caseworker (the one responsible at that measurement) as a code, -1 if none."""
    responsible = dataset.measurements.set_index("measurement_id")["caseworker_id"]
    return pd.factorize(responsible.reindex(features["measurement_id"]).to_numpy())[0]


def shifted_probability(
    fitted: Fitted, frame: pd.DataFrame, X: np.ndarray, codes: np.ndarray, config: TrainConfig
) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], dict[str, float]]:
    """The caseworker step on a fitted family: the shrinkage chosen on the citizens `fit_family` held out
    (shifts learnt from its fitting citizens' residuals), then the shifts learnt from every training
    row with it. Returns p(X, codes) and what was chosen."""
    rows, w = family_rows(frame, "weighted")
    y = frame["label"].to_numpy(dtype=float)
    check = held_out_citizens(frame["citizen_id"].to_numpy(), config.inner_share, config.seed) & rows
    log_odds = fitted.log_odds(X)
    shrinkage, _ = choose_shrinkage(log_odds, codes, np.nan_to_num(y), w, rows & ~check, check)
    shifts = caseworker_shifts(codes[rows], y[rows], expit(log_odds[rows]), w[rows], shrinkage)
    shifts = level_kept(shifts, log_odds[rows], codes[rows], w[rows])
    chosen = {"caseworker_shrinkage": shrinkage, "caseworkers_shifted": int(np.count_nonzero(shifts))}
    return lambda X_new, codes_new: expit(shifted(fitted.log_odds(X_new), codes_new, shifts)), chosen


def run(data: Path, names: list[str], config: TrainConfig) -> list[dict]:
    dataset, _ = read_dataset(data)
    features = build_features(dataset, horizon_months=config.horizon_months)
    truth = read_truth(Path(f"{data}-truth") / "true_probabilities.csv")
    frames = {w: with_weights(features, config.horizon_months, w) for w in {VARIANTS[n].weighting for n in names}}
    citizens = features["citizen_id"].to_numpy()
    split = citizen_split(citizens, 0.25, config.seed)
    encoding = learn_encoding(features[~split.test])
    X = encoded(features, encoding)
    true_p = truth_of(features, truth)
    # Scored on the same rows and weights for every variant: the default ("dropout") weighting's test.
    test = with_weights(features, config.horizon_months, "dropout")[split.test].reset_index(drop=True)
    results = []
    for name in names:
        variant = VARIANTS[name]
        variant_config = variant.config(config)
        frame = frames[variant.weighting]
        start = time.perf_counter()
        learner = variant.learner(encoding.catalogue, variant_config)
        train = frame[~split.test].reset_index(drop=True)
        fitted = fit_family(learner, train, X[~split.test], variant_config)
        p, chosen = fitted.probability(X[split.test]), {}
        if variant.caseworker_effect:
            codes = caseworker_codes(dataset, features)
            probability, chosen = shifted_probability(fitted, train, X[~split.test], codes[~split.test], variant_config)
            p = probability(X[split.test], codes[split.test])
        scores = test_scores(test, p, true_p[split.test], variant_config)
        row = {
            "data": str(data),
            "citizens": int(dataset.citizens.shape[0]),
            "seed": config.seed,
            "variant": name,
            "change": variant.change,
            "params": {**fitted.params, **chosen},
            "seconds": time.perf_counter() - start,
            **scores,
        }
        results.append(row)
        print(
            f"{name:18s} AUC {row['roc_auc']:.4f} [{row['roc_auc_low']:.3f},{row['roc_auc_high']:.3f}] "
            f"truth {row['truth_roc_auc']:.4f}  mean p {row['mean_p']:.4f} vs {row['mean_true_p']:.4f}  "
            f"ECE-truth {row['ece_truth']:.4f}  {row['seconds']:.0f}s {row['params']}",
            flush=True,
        )
    return results


def markdown(rows: list[dict]) -> str:
    """The ablation table: per size, each variant's AUC (mean over splits; the bootstrap interval of the
    first split), its paired difference to plain and to the truth on the same split, level and ECE."""
    frame = pd.DataFrame(rows)
    plain = frame[frame["variant"] == "plain"].set_index(["citizens", "seed"])["roc_auc"]
    keys = zip(frame["citizens"], frame["seed"], strict=True)
    frame["vs_plain"] = frame["roc_auc"] - [plain.get(key, np.nan) for key in keys]
    frame["vs_truth"] = frame["roc_auc"] - frame["truth_roc_auc"]
    lines = []
    for citizens, part in frame.groupby("citizens", sort=True):
        seeds = part["seed"].nunique()
        first = part[part["seed"] == part["seed"].min()].set_index("variant")
        lines += [
            f"**{citizens:,} citizens**, {seeds} split(s) (25 % test citizens each); truth's AUC on the same labels "
            f"{part['truth_roc_auc'].mean():.3f}, mean true p {part['mean_true_p'].mean():.3f}. "
            "± is the standard error over splits of the paired difference.",
            "",
            "| variant | change | AUC | first split [95 %] | AUC − plain | AUC − truth | mean p | ECE vs truth | s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for variant, runs in part.groupby("variant", sort=False):
            spread = runs["vs_plain"].std() / np.sqrt(len(runs)) if len(runs) > 1 else np.nan
            shown = "" if np.isnan(spread) else f" ± {spread:.3f}"
            lines.append(
                f"| {variant} | {runs['change'].iloc[0]} | {runs['roc_auc'].mean():.3f} | "
                f"{first.loc[variant, 'roc_auc']:.3f} [{first.loc[variant, 'roc_auc_low']:.3f}, "
                f"{first.loc[variant, 'roc_auc_high']:.3f}] | "
                f"{runs['vs_plain'].mean():+.3f}{shown} | {runs['vs_truth'].mean():+.3f} | "
                f"{runs['mean_p'].mean():.3f} | {runs['ece_truth'].mean():.3f} | {runs['seconds'].mean():.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a `bip simulate` folder (truth beside it)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=1, help="splits (seeds 2013, 2014, ...) to average over")
    parser.add_argument("--early-stopping", type=int, default=30)
    parser.add_argument("--json", type=Path, help="append the results (JSON lines) here")
    parser.add_argument("--markdown", type=Path, nargs="+", help="print the table of these JSON-lines files")
    args = parser.parse_args()
    if args.markdown:
        rows = [json.loads(line) for path in args.markdown for line in path.read_text().splitlines() if line]
        print(markdown(rows))
        return
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, load {os.getloadavg()[0]:.1f}", flush=True)
    for seed in range(2013, 2013 + args.seeds):
        config = TrainConfig(n_boot=args.n_boot, early_stopping_rounds=args.early_stopping, seed=seed)
        results = run(args.data, args.variants, config)
        if args.json:
            with args.json.open("a") as out:
                for row in results:
                    out.write(json.dumps(row, default=float) + "\n")


if __name__ == "__main__":
    main()
