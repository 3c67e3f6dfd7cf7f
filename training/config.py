"""What a training run is parametrised by (`TrainConfig`) and the model families it can fit."""

from __future__ import annotations

from dataclasses import dataclass

MODEL_NAMES: tuple[str, ...] = ("xgboost_monotone", "xgboost", "logit", "background_only", "hist_gradient_boosting")
CHAMPION_CANDIDATE = "xgboost_monotone"
# The baseline every comparison carries (`bip report`, `bip evaluate --learning-curve`): what most teams
# start with (training/learners.py `plain_learner`). Not fitted by `bip train`.
PLAIN = "plain"
COMPARISON_NAMES: tuple[str, ...] = (*MODEL_NAMES, PLAIN)
XGBOOST_GRID: tuple[dict[str, float], ...] = tuple(
    {"max_depth": depth, "learning_rate": rate} for depth in (3, 4) for rate in (0.05, 0.1)
)

# At 10x BIP's size the blend ranks better than the trees alone on every split tried; at BIP size the
# held-out citizens choose 0.25-0.5 and it ranks level with the trees (docs/training.md, issue 18).
LINEAR_SHARES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
# The linear part's penalty: 0.001 was chosen on every split at 1x and 10x from grids between 1e-5 and 0.1,
# so one value is fitted (a grid costs a fit per value and fold; a longer tuple is chosen from as well).
LINEAR_CS: tuple[float, ...] = (0.001,)


@dataclass(frozen=True)
class TrainConfig:
    """Everything training is parametrised by; the CLI fills it from its options."""

    horizon_months: int = 12
    seed: int = 2013
    folds: int = 5
    out_of_time_share: float = 0.2
    inner_share: float = 0.2
    max_rounds: int = 600
    early_stopping_rounds: int = 30
    n_boot: int = 200
    n_jobs: int = 1
    shap_rows: int = 2000
    fairness_top_share: float = 0.2
    models: tuple[str, ...] = MODEL_NAMES
    xgboost_grid: tuple[dict[str, float], ...] = XGBOOST_GRID
    weighting: str = "dropout"  # "dropout": `follow_up_weights`; "pooled": build_features' ipcw_weight
    # The boosters fit on ipcw_weight ** tree_weight_power (1: the censoring weights; 0: unweighted); the
    # Platt calibration always uses the censoring weights, so it sets the level whatever the trees saw.
    tree_weight_power: float = 1.0
    # The champion candidate's trees are blended on the log-odds with a monotone logistic regression
    # (training/linear.py): the share of the linear part and its penalty C are chosen on the held-out
    # citizens with the grid point. (0.0,) fits the trees alone.
    linear_shares: tuple[float, ...] = LINEAR_SHARES
    linear_cs: tuple[float, ...] = LINEAR_CS
