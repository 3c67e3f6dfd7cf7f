"""The ranking ceiling of the features on the simulator: XGBoost fitted to the true probabilities.

A model learnt from the labels can at best rank as well as one learnt from the true probabilities of
the same training citizens (soft labels, `reg:logistic`), on the same features. This fits that oracle
on the ablation's splits (benchmarks/bench_ablation.py: 25 % test citizens, seeds 2013, 2014, ...)
and scores it the same way (AUC against the labels, IPCW-weighted), beside the truth's own AUC, so that
an AUC target can be set against what the features hold. It reads the simulator's truth, as every
benchmark against the truth does; nothing in the product does.

    .venv/bin/python benchmarks/bench_ceiling.py --data /tmp/sim1x --seeds 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xgboost as xgb

from features.build import build_features
from features.contract import read_dataset
from training.config import TrainConfig
from training.data import with_weights
from training.evaluation import read_truth, truth_of
from training.learning_curve import citizen_split, encoded, test_scores
from training.validation import learn_encoding

ORACLE = {"objective": "reg:logistic", "eta": 0.05, "subsample": 0.8, "colsample_bytree": 0.8}
ROUNDS = 800


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a `bip simulate` folder (truth beside it)")
    parser.add_argument("--seeds", type=int, default=1, help="splits (seeds 2013, 2014, ...)")
    parser.add_argument("--depths", type=int, nargs="+", default=[3, 4, 6], help="tree depths of the oracle")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    dataset, _ = read_dataset(args.data)
    features = build_features(dataset, horizon_months=12)
    frame = with_weights(features, 12, "dropout")
    true_p = truth_of(features, read_truth(Path(f"{args.data}-truth") / "true_probabilities.csv"))
    citizens = features["citizen_id"].to_numpy()
    print("| seed | depth | oracle AUC | truth AUC | oracle − truth |\n|---|---|---|---|---|")
    for seed in range(2013, 2013 + args.seeds):
        config = TrainConfig(n_boot=20, seed=seed)
        split = citizen_split(citizens, 0.25, seed)
        X = encoded(features, learn_encoding(features[~split.test]))
        fit_rows = ~split.test & ~np.isnan(true_p)
        test = frame[split.test].reset_index(drop=True)
        for depth in args.depths:
            params = {**ORACLE, "max_depth": depth, "nthread": args.threads, "seed": seed}
            oracle = xgb.train(params, xgb.DMatrix(X[fit_rows], label=true_p[fit_rows]), ROUNDS)
            scores = test_scores(test, oracle.predict(xgb.DMatrix(X[split.test])), true_p[split.test], config)
            gap = scores["roc_auc"] - scores["truth_roc_auc"]
            print(
                f"| {seed} | {depth} | {scores['roc_auc']:.4f} | {scores['truth_roc_auc']:.4f} | {gap:+.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
