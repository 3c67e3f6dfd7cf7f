"""The research questions of BIP, answered from a dataset alone: each analysis returns its numbers,
tables and plots as an `Analysis`, which `experiments.report` logs to MLflow and renders.

1. `indicator_analysis`: indicators and job, controlled for background (odds ratios with intervals
   from a discrete-time hazard model), beside the model's SHAP importance per indicator.
2. `caseworker_practice_analysis`: caseworker belief, job orientation and a change of caseworker.
3. `experiments.progression.progression_analysis`: intervention patterns and the change of the indicators.
4. `experiments.caseworker_effects.caseworker_effect_analysis`: caseworker effects, thought experiment.
5. `experiments.model_comparison.model_comparison_analysis`: the model families compared.

Every estimate comes from the data; BIP's published figures (`BIP_REFERENCE`) are only printed
beside them. Person-round hazard models are described in `experiments.person_rounds`.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from experiments.mixed import MixedFit, NotConverged, fit_random_intercept_logit
from experiments.person_rounds import (
    BELIEF,
    LATENT_INDICATORS,
    DesignSpec,
    LogitFit,
    combined_effect,
    effect_rows,
    fit_logit,
    hazard_design,
    person_rounds,
    round_window_days,
    z_value,
)
from features.build import build_features
from features.catalogue import SCORE_COLUMNS, indicator
from features.dataset import Dataset
from training.model import expit

# BIP's published figures (Væksthusets Forskningscenter, 2019), printed beside the estimates only.
BIP_REFERENCE: dict[str, float] = {
    "caseworker_belief_pct": 33.0,
    "orientation_high_pct": 32.0,
    "caseworker_changed_pct": -22.0,
    "pattern_job_and_other_share_pct": 18.0,
    "pattern_job_only_share_pct": 24.0,
    "pattern_other_only_share_pct": 34.0,
    "pattern_none_share_pct": 23.0,
    "still_or_back_pct": 57.0,
    "event_share_pct": 14.76,
    "effective_caseworker_share_pct": 28.45,
}
PRACTICE_TERMS: dict[str, str] = {
    "caseworker_belief": "per step of the caseworker's belief in a job (1-5)",
    "orientation_high": "caseworker with high vs low job orientation",
    "caseworker_changed": "caseworker changed since the previous round",
}
INDICATOR_SCORES: tuple[str, ...] = tuple(c for c in SCORE_COLUMNS if c != BELIEF)


@dataclass(frozen=True)
class ResearchConfig:
    """What the analyses are parametrised by (the CLI and the tests fill it)."""

    horizon_months: int = 12
    level: float = 0.95
    seed: int = 2013
    quadrature_nodes: int = 7
    orientation_threshold: float = 3.0
    effective_quantile: float = 0.9
    draws: int = 200
    train: Any = None  # training.config.TrainConfig for analysis 5; None: its defaults


@dataclass(frozen=True)
class Table:
    name: str
    caption: str
    frame: pd.DataFrame


@dataclass(frozen=True)
class Plot:
    name: str
    caption: str
    figure: Figure


@dataclass
class Analysis:
    """One analysis: what it asks, how it answers, and what it found (numbers, tables, plots)."""

    key: str
    title: str
    question: str
    method: str
    findings: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)

    def table(self, name: str) -> pd.DataFrame:
        for table in self.tables:
            if table.name == name:
                return table.frame
        raise KeyError(f"analysis {self.key} has no table {name!r}; it has {[t.name for t in self.tables]}")


@dataclass(frozen=True)
class ResearchData:
    """A dataset with its feature rows, the length of a round and the person-rounds at risk."""

    dataset: Dataset
    features: pd.DataFrame
    window_days: int
    rounds: pd.DataFrame


@dataclass(frozen=True)
class HazardModels:
    """The discrete-time hazard model of analyses 1, 2 and 4: design, plain logit, random intercept."""

    spec: DesignSpec
    design: pd.DataFrame
    logit: LogitFit
    mixed: MixedFit | None


def research_data(dataset: Dataset, horizon_months: int = 12) -> ResearchData:
    features = build_features(dataset, horizon_months=horizon_months)
    window = round_window_days(features)
    return ResearchData(dataset, features, window, person_rounds(dataset, features, window))


def fit_hazard_models(data: ResearchData, spec: DesignSpec, nodes: int | None = 7) -> HazardModels:
    """The hazard design of `spec`, its logit (cluster-robust by caseworker) and, unless `nodes` is
    None, the same model with a random intercept per caseworker (None too where it does not converge)."""
    rounds = data.rounds
    design = hazard_design(rounds, spec, data.window_days)
    y, groups = rounds["event"].to_numpy(float), rounds["caseworker_id"].to_numpy(dtype=object)
    logit = fit_logit(y, design, groups)
    mixed = None
    if nodes is not None:
        try:
            mixed = fit_random_intercept_logit(y, design, groups, nodes=nodes, start=logit.params)
        except (NotConverged, np.linalg.LinAlgError):  # small data: the analyses needing it say so
            mixed = None
    return HazardModels(spec, design, logit, mixed)


def practice_spec(config: ResearchConfig) -> DesignSpec:
    """The full hazard design: the indicators (calibrated from every answer), belief, caseworker,
    pattern, background and time."""
    return DesignSpec(indicators="calibrated", orientation_threshold=config.orientation_threshold)


# --- shared helpers --------------------------------------------------------------------------------


def interval_text(estimate: float, low: float, high: float, digits: int = 1, unit: str = "") -> str:
    return f"{estimate:+.{digits}f}{unit} [{low:+.{digits}f}, {high:+.{digits}f}]"


def cluster_means(values: np.ndarray, category: np.ndarray, groups: np.ndarray, level: float) -> pd.DataFrame:
    """Mean of `values` per category with a cluster-robust (by `groups`, e.g. caseworker) interval."""
    frame = pd.DataFrame({"v": np.asarray(values, float), "c": np.asarray(category), "g": np.asarray(groups)})
    z = z_value(level)
    rows = []
    for name, part in frame.groupby("c", sort=False, observed=True):
        mean = part["v"].mean()
        sums = (part["v"] - mean).groupby(part["g"]).sum()
        clusters = len(sums)
        se = float(np.sqrt((sums**2).sum() * clusters / max(clusters - 1, 1)) / len(part))
        rows.append(
            {"category": name, "n": len(part), "mean": mean, "se": se, "low": mean - z * se, "high": mean + z * se}
        )
    return pd.DataFrame(rows)


def wrapped(label: str, width: int = 14) -> str:
    """A tick label broken into lines of at most `width` characters."""
    return "\n".join(textwrap.wrap(label, width)) or label


def figure(width: float = 7.0, height: float = 4.0) -> Figure:
    """A plain matplotlib Figure (no pyplot: no global plotting state)."""
    return Figure(figsize=(width, height), layout="constrained")


def forest_plot(
    labels: list[str], estimate: np.ndarray, low: np.ndarray, high: np.ndarray, xlabel: str, title: str
) -> Figure:
    """Point estimates with interval bars, one row per label, a dashed line at 0."""
    fig = figure(9, 1.6 + 0.5 * len(labels))
    ax = fig.subplots()
    at = np.arange(len(labels))[::-1]
    ax.errorbar(estimate, at, xerr=[estimate - low, high - estimate], fmt="o", color="tab:blue", capsize=3)
    ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(at, [wrapped(label, 32) for label in labels])
    ax.set(xlabel=xlabel, title=title)
    return fig


# --- 1. indicators and job -------------------------------------------------------------------------


def indicator_effects(fit: LogitFit, level: float) -> pd.DataFrame:
    """Per indicator: log-odds per step of the indicator, with its interval; with a design of raw
    answers also per step of the citizen's answer and of the caseworker's (the indicator is then
    both answers one step higher). Belief has the one coefficient."""
    z = z_value(level)
    rows = []
    for code in LATENT_INDICATORS:
        row: dict[str, Any] = {"indicator": code, "label": indicator(code).label_en}
        if code in fit.params.index:  # a calibrated (or mean) design: one column per indicator
            estimate, se = float(fit.params[code]), float(fit.se[code])
            row.update({"log_odds": estimate, "se": se, "low": estimate - z * se, "high": estimate + z * se})
            rows.append(row)
            continue
        for source in ("cit", "cw"):
            term = f"{source}_{code}"
            estimate, se = float(fit.params[term]), float(fit.se[term])
            row.update(
                {
                    f"{source}_log_odds": estimate,
                    f"{source}_low": estimate - z * se,
                    f"{source}_high": estimate + z * se,
                }
            )
        estimate, se, low, high = combined_effect(fit, [f"cit_{code}", f"cw_{code}"], level)
        row.update({"log_odds": estimate, "se": se, "low": low, "high": high})
        rows.append(row)
    estimate, se = float(fit.params["caseworker_belief"]), float(fit.se["caseworker_belief"])
    rows.append(
        {
            "indicator": "caseworker_belief",
            "label": indicator("caseworker_belief").label_en,
            "cw_log_odds": estimate,
            "cw_low": estimate - z * se,
            "cw_high": estimate + z * se,
            "log_odds": estimate,
            "se": se,
            "low": estimate - z * se,
            "high": estimate + z * se,
        }
    )
    table = pd.DataFrame(rows)
    table["odds_ratio"] = np.exp(table["log_odds"])
    table["odds_ratio_low"] = np.exp(table["low"])
    table["odds_ratio_high"] = np.exp(table["high"])
    return table


def indicator_plot(table: pd.DataFrame, importance: pd.Series | None, level: float) -> Figure:
    """Odds ratios per step (with intervals) beside the SHAP importance, indicators in one order."""
    ordered = table.sort_values("log_odds", ascending=True)
    fig = figure(11, 1.2 + 0.4 * len(ordered))
    left, right = fig.subplots(1, 2, sharey=True)
    at = np.arange(len(ordered))
    left.errorbar(
        ordered["odds_ratio"],
        at,
        xerr=[ordered["odds_ratio"] - ordered["odds_ratio_low"], ordered["odds_ratio_high"] - ordered["odds_ratio"]],
        fmt="o",
        capsize=3,
    )
    left.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    left.set_yticks(at, ordered["label"])
    left.set(xlabel=f"odds ratio per step ({level:.0%} interval)", title="Hazard model")
    if importance is not None:
        right.barh(at, importance.reindex(ordered["indicator"]).fillna(0.0).to_numpy(), color="tab:orange")
        right.set(xlabel="mean |SHAP contribution| (log-odds)", title="SHAP importance of the model")
    else:
        right.text(0.5, 0.5, "no model for SHAP importance", ha="center", va="center", transform=right.transAxes)
        right.set_axis_off()
    return fig


def indicator_analysis(
    data: ResearchData,
    models: HazardModels,
    config: ResearchConfig,
    importance: pd.Series | None = None,
    importance_source: str = "",
) -> Analysis:
    """Analysis 1: which indicators go with a job, controlled for background, beside SHAP importance."""
    table = indicator_effects(models.logit, config.level)
    if importance is not None:
        table["shap_importance"] = importance.reindex(table["indicator"]).to_numpy()
        table["shap_rank"] = table["shap_importance"].rank(ascending=False)
    table["hazard_rank"] = table["log_odds"].rank(ascending=False)
    metrics = {f"log_odds_{r.indicator}": float(r.log_odds) for r in table.itertuples()}
    metrics.update({f"se_{r.indicator}": float(r.se) for r in table.itertuples()})
    findings = [
        f"{len(data.rounds)} person-rounds of {data.rounds['citizen_id'].nunique()} citizens, "
        f"{int(data.rounds['event'].sum())} entries into job or education within a round of {data.window_days} days.",
    ]
    top = table.sort_values("log_odds", ascending=False).head(4)
    findings.append(
        "Strongest associations (odds ratio per step of the indicator): "
        + "; ".join(
            f"{r.label} {r.odds_ratio:.2f} [{r.odds_ratio_low:.2f}, {r.odds_ratio_high:.2f}]" for r in top.itertuples()
        )
        + "."
    )
    if importance is not None:
        both = table.dropna(subset=["shap_importance"])
        agreement = float(both["log_odds"].corr(both["shap_importance"], method="spearman"))
        metrics["spearman_hazard_vs_shap"] = agreement
        findings.append(
            f"Rank correlation (Spearman) between the hazard model's effects and SHAP importance: {agreement:.2f} "
            f"(SHAP from {importance_source})."
        )
    else:
        findings.append(f"No SHAP importance: {importance_source or 'no trained model was available'}.")
    # The citizen's and the caseworker's parts exist only with a design of raw answers.
    parts = ["cit_log_odds", "cit_low", "cit_high", "cw_log_odds", "cw_low", "cw_high"]
    shown = table[
        [
            "label",
            "odds_ratio",
            "odds_ratio_low",
            "odds_ratio_high",
            *(parts if "cit_log_odds" in table.columns else []),
            *(["shap_importance", "shap_rank"] if importance is not None else []),
        ]
    ]
    return Analysis(
        key="indicators",
        title="1. Indicators and job, controlled for background",
        question="Which of the 11 indicators go with entering a job or education, once background is controlled for?",
        method=(
            "Discrete-time hazard logit over person-rounds: a measurement opens a round; the outcome is a job or "
            f"education within {data.window_days} days (the median gap between rounds); rounds whose follow-up ends "
            "earlier without an event are left out. Covariates: the 10 indicators, the caseworker's belief, job "
            "orientation and change, the intervention pattern of the last 3 months, background (age band, gender, "
            "origin, civil status, children, education, benefit history, job centre) and time since enrolment. Each "
            "indicator enters as its level predicted from all 20 answers and the other covariates (regression "
            "calibration: the citizen's and the caseworker's answer are two readings with independent errors, which "
            "identify the error sizes), so that measurement error does not move weight between indicators. "
            "Intervals are cluster-robust by caseworker. The odds ratio is per step of the indicator, centred on 3; "
            "at a per-round hazard of a few percent it is close to the relative risk."
        ),
        findings=findings,
        params={"window_days": data.window_days, "level": config.level, "shap_source": importance_source or "none"},
        metrics=metrics,
        tables=[
            Table(
                "indicator_effects",
                "Odds ratio per step of each indicator, with its citizen and caseworker parts (log-odds)",
                shown,
            ),
            Table(
                "hazard_coefficients",
                "All coefficients of the hazard model (log-odds)",
                effect_rows(models.logit, list(models.logit.params.index), config.level),
            ),
        ],
        plots=[
            Plot(
                "indicators_vs_shap",
                f"Odds ratios per step beside SHAP importance ({importance_source or 'no model'})",
                indicator_plot(table, importance, config.level),
            )
        ],
    )


# --- 2. caseworker belief and practice -------------------------------------------------------------


def average_relative_change(
    fit: LogitFit, design: pd.DataFrame, term: str, draws: int, seed: int, level: float
) -> tuple[float, float, float]:
    """Relative change (%) of the mean predicted chance per round when `term` goes up by one (a
    dummy: from 0 to 1 for every round), with an interval from draws of the coefficients."""
    X = design.to_numpy(float)
    k = list(design.columns).index(term)
    rng = np.random.default_rng(seed)
    betas = np.vstack(
        [fit.params.to_numpy(), rng.multivariate_normal(fit.params.to_numpy(), fit.cov.to_numpy(), draws)]
    )
    binary = set(np.unique(X[:, k])) <= {0.0, 1.0}
    low_x, high_x = X.copy(), X.copy()
    if binary:
        low_x[:, k], high_x[:, k] = 0.0, 1.0
    else:
        high_x[:, k] = X[:, k] + 1.0
    base = expit(low_x @ betas.T)
    raised = expit(high_x @ betas.T)
    change = 100 * (raised.mean(axis=0) / base.mean(axis=0) - 1)
    alpha = (1 - level) / 2
    low, high = np.quantile(change[1:], [alpha, 1 - alpha])
    return float(change[0]), float(low), float(high)


def practice_table(models: HazardModels, config: ResearchConfig) -> pd.DataFrame:
    """The three practice effects: odds-ratio change (plain and random-intercept logit) and the
    change of the average predicted chance, with intervals, beside BIP's figure."""
    plain = effect_rows(models.logit, list(PRACTICE_TERMS), config.level).set_index("term")
    mixed = None
    if models.mixed is not None:
        mixed = effect_rows(models.mixed, list(PRACTICE_TERMS), config.level).set_index("term")
    rows = []
    for term, label in PRACTICE_TERMS.items():
        p = plain.loc[term]
        average = average_relative_change(models.logit, models.design, term, config.draws, config.seed, config.level)
        row = {
            "term": term,
            "quantity": label,
            "bip_pct": BIP_REFERENCE[f"{term}_pct"],
            "relative_change_pct": p["relative_change_pct"],
            "low_pct": p["relative_change_low_pct"],
            "high_pct": p["relative_change_high_pct"],
            "log_odds": p["log_odds"],
            "se": p["se"],
            "average_chance_change_pct": average[0],
            "average_low_pct": average[1],
            "average_high_pct": average[2],
        }
        if mixed is not None:
            m = mixed.loc[term]
            row.update(
                {
                    "random_intercept_pct": m["relative_change_pct"],
                    "random_intercept_low_pct": m["relative_change_low_pct"],
                    "random_intercept_high_pct": m["relative_change_high_pct"],
                    "random_intercept_log_odds": m["log_odds"],
                    "random_intercept_se": m["se"],
                }
            )
        rows.append(row)
    return pd.DataFrame(rows)


def caseworker_practice_analysis(data: ResearchData, models: HazardModels, config: ResearchConfig) -> Analysis:
    """Analysis 2: the caseworker's belief, job orientation and a change of caseworker."""
    table = practice_table(models, config)
    metrics: dict[str, float] = {}
    for r in table.itertuples():
        metrics.update(
            {
                f"{r.term}_log_odds": float(r.log_odds),
                f"{r.term}_se": float(r.se),
                f"{r.term}_pct": float(r.relative_change_pct),
                f"{r.term}_low_pct": float(r.low_pct),
                f"{r.term}_high_pct": float(r.high_pct),
            }
        )
    orientation = data.dataset.caseworkers["job_orientation"].astype(float)
    changed = data.rounds["caseworker_changed"].astype(float) == 1
    findings = [
        f"{r.quantity}: {interval_text(r.relative_change_pct, r.low_pct, r.high_pct, unit=' %')} "
        f"(BIP: {r.bip_pct:+g} %)"
        for r in table.itertuples()
    ]
    findings.append(
        f"High job orientation: orientation ≥ {config.orientation_threshold:g} "
        f"({(orientation >= config.orientation_threshold).mean():.0%} of caseworkers with a score). "
        f"Rounds right after a change of caseworker: {int(changed.sum())}, with "
        f"{int(data.rounds.loc[changed, 'event'].sum())} events; a change seen only across a skipped round "
        "has its own term (it may be older than one round)."
    )
    plot = forest_plot(
        list(table["quantity"]),
        table["relative_change_pct"].to_numpy(),
        table["low_pct"].to_numpy(),
        table["high_pct"].to_numpy(),
        f"relative change in the odds per round, % ({config.level:.0%} interval)",
        "Caseworker belief and practice",
    )
    ax = plot.axes[0]
    at = np.arange(len(table))[::-1]
    ax.scatter(table["bip_pct"], at, marker="x", color="tab:red", zorder=3, label="BIP (reference)")
    ax.legend(loc="lower right")
    return Analysis(
        key="caseworker_practice",
        title="2. Caseworker belief and practice",
        question=(
            "How much does the chance of a job or education change per step of the caseworker's belief, with a "
            "highly job-oriented caseworker, and after a change of caseworker?"
        ),
        method=(
            "The hazard model of analysis 1. exp(coefficient) - 1 is the relative change in the odds per round, "
            "close to the relative change in the chance at these low per-round hazards; the column 'average chance' "
            "gives the change of the mean predicted chance directly (coefficients drawn from their estimated "
            "distribution for the interval). The random-intercept columns refit the model with a random effect per "
            "caseworker (analysis 4). The belief is also a reading of the citizen's readiness; the indicators enter "
            "as levels calibrated for measurement error (analysis 1), so that readiness the raw answers miss is not "
            "credited to the belief."
        ),
        findings=findings,
        params={"orientation_threshold": config.orientation_threshold, "level": config.level, "draws": config.draws},
        metrics=metrics,
        tables=[Table("practice_effects", "Relative change (%) in the chance of job or education, beside BIP", table)],
        plots=[Plot("practice_effects", "Relative change per quantity, BIP's figure as a red cross", plot)],
    )
