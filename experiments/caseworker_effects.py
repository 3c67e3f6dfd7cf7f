"""Analysis 4: how much caseworkers differ beyond their citizens, and the "effective caseworker"
thought experiment.

Caseworker effects are random intercepts of the discrete-time hazard model (`experiments.mixed`):
their standard deviation, with the model of analysis 1 (the current indicators as covariates), is the
direct effect of a caseworker on the chance per round. The thought experiment asks what share of
citizens would enter a job or education during follow-up if every caseworker were as effective as
the given quantile (90 %) of that distribution. A caseworker also works through the citizen's
progression, which current answers would hide, so it uses a second random-intercept model with the
citizen's answers at the first measurement only, and projects each citizen's rounds from enrolment
to the end of the data:

    P(event) = sum_r S_r h_r f_r,   S_{r+1} = S_r (1 - h_r f_r)(1 - d),

with h_r the model's chance in round r, f_r the part of round r before the data end, and d the
dropout per round measured in the data. Under actual caseworkers u ~ N(0, sd²) is integrated out
(one caseworker per citizen); under the thought experiment u is the quantile for everyone.
Intervals come from draws of the model's parameters from their estimated distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.special import expit
from scipy.stats import chi2, norm

from experiments.analyses import (
    BIP_REFERENCE,
    Analysis,
    HazardModels,
    Plot,
    ResearchConfig,
    ResearchData,
    Table,
    figure,
    fit_hazard_models,
)
from experiments.mixed import LOG_SD, MixedFit, standard_normal_nodes
from experiments.person_rounds import (
    DesignSpec,
    caseworker_ids,
    day_number,
    dropout_per_round,
    time_columns,
    z_value,
)

TIME_TERMS: tuple[str, ...] = ("rounds_since_enrolment", "log_rounds_since_enrolment")


def thought_experiment_spec(config: ResearchConfig) -> DesignSpec:
    """Covariates fixed at the first measurement, the caseworker's orientation, background, time:
    nothing the caseworker changes along the way, so the caseworker's effect is the total one."""
    return DesignSpec(
        indicators="baseline",
        caseworker="orientation",
        patterns=False,
        orientation_threshold=config.orientation_threshold,
    )


@dataclass(frozen=True)
class Projection:
    """Each citizen's rounds from enrolment to the end of the data, for the thought experiment."""

    static: pd.DataFrame  # citizens x covariates at the first round at risk (time columns left out)
    time: pd.DataFrame  # rounds x time columns
    inside: np.ndarray  # citizens x rounds: part of each round before the data end (0 after it)
    dropout: float


def projection(data: ResearchData, design: pd.DataFrame) -> Projection:
    """The baseline covariates of every citizen with a round at risk, and the rounds ahead of them."""
    first = design.groupby(data.rounds["citizen_id"].to_numpy(), sort=False).head(1)
    citizens = data.rounds.loc[first.index, "citizen_id"].to_numpy(dtype=object)
    enrolled = day_number(data.dataset.citizens.set_index("citizen_id")["enrolled_on"].reindex(citizens).to_numpy())
    end = np.nanmax(day_number(data.dataset.outcomes["followed_until"]))
    rounds = np.arange(int(np.ceil((end - np.nanmin(enrolled)) / data.window_days)) + 1)
    start = enrolled[:, None] + rounds[None, :] * data.window_days
    inside = np.clip((end - start) / data.window_days, 0.0, 1.0)
    time = pd.DataFrame(time_columns(pd.Series(rounds.astype(float))))
    static = first.drop(columns=[c for c in TIME_TERMS if c in first.columns]).reset_index(drop=True)
    return Projection(static, time, inside, dropout_per_round(data.dataset, data.features, data.window_days))


def event_probabilities(p: Projection, params: pd.Series, effect: np.ndarray) -> np.ndarray:
    """Each citizen's chance of an event during follow-up, for caseworker effects `effect` (one per
    citizen, or one for all)."""
    eta = p.static.to_numpy(float) @ params[p.static.columns].to_numpy()
    eta = eta[:, None] + (p.time.to_numpy(float) @ params[p.time.columns].to_numpy())[None, :]
    hazard = expit(eta + np.reshape(effect, (-1, 1))) * p.inside
    survive = np.cumprod((1 - hazard) * (1 - p.dropout), axis=1)
    before = np.hstack([np.ones((len(hazard), 1)), survive[:, :-1]])
    return (before * hazard).sum(axis=1)


def projected_shares(p: Projection, params: pd.Series, quantile: float, nodes: int) -> tuple[float, float]:
    """(share under actual caseworkers, share with every caseworker at the effect quantile)."""
    sd = float(np.exp(params[LOG_SD]))
    z, log_w = standard_normal_nodes(nodes)
    actual = sum(
        np.exp(w) * event_probabilities(p, params, np.full(len(p.static), sd * q))
        for q, w in zip(z, log_w, strict=True)
    )
    effective = event_probabilities(p, params, np.full(len(p.static), sd * norm.ppf(quantile)))
    return float(np.mean(actual)), float(np.mean(effective))


def thought_experiment(data: ResearchData, models: HazardModels, config: ResearchConfig) -> pd.DataFrame:
    """Observed share, projected share under actual caseworkers and with every caseworker at the
    quantile, and the increase, with intervals from parameter draws."""
    p = projection(data, models.design)
    fit = models.mixed
    nodes = config.quadrature_nodes
    actual, effective = projected_shares(p, fit.params, config.effective_quantile, nodes)
    rng = np.random.default_rng(config.seed)
    draws = rng.multivariate_normal(fit.params.to_numpy(), fit.cov.to_numpy(), config.draws)
    drawn = np.array(
        [projected_shares(p, pd.Series(d, index=fit.params.index), config.effective_quantile, nodes) for d in draws]
    )
    alpha = (1 - config.level) / 2
    (a_low, e_low, d_low), (a_high, e_high, d_high) = np.quantile(
        np.column_stack([drawn, drawn[:, 1] - drawn[:, 0]]), [alpha, 1 - alpha], axis=0
    )
    a_se, e_se = drawn.std(axis=0, ddof=1)
    d_se = float(np.std(drawn[:, 1] - drawn[:, 0], ddof=1))
    observed = float((data.dataset.outcomes["event"] != "none").mean())
    reference = BIP_REFERENCE["event_share_pct"] / 100, BIP_REFERENCE["effective_caseworker_share_pct"] / 100
    return pd.DataFrame(
        [
            {
                "scenario": "observed in the data",
                "share": observed,
                "se": np.nan,
                "low": np.nan,
                "high": np.nan,
                "bip_share": reference[0],
            },
            {
                "scenario": "projected, actual caseworkers",
                "share": actual,
                "se": a_se,
                "low": a_low,
                "high": a_high,
                "bip_share": np.nan,
            },
            {
                "scenario": f"projected, every caseworker at the {config.effective_quantile:.0%} quantile",
                "share": effective,
                "se": e_se,
                "low": e_low,
                "high": e_high,
                "bip_share": reference[1],
            },
            {
                "scenario": "increase (share points)",
                "share": effective - actual,
                "se": d_se,
                "low": d_low,
                "high": d_high,
                "bip_share": reference[1] - reference[0],
            },
        ]
    )


def logit_log_likelihood(models: HazardModels, y: np.ndarray) -> float:
    eta = models.design.to_numpy(float) @ models.logit.params.to_numpy()
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def variance_test(models: HazardModels, y: np.ndarray) -> tuple[float, float]:
    """Likelihood-ratio statistic for "no caseworker variation" and its p-value (the sd lies on the
    boundary under the null: a 50:50 mixture of chi-square with 0 and 1 degree of freedom). The
    likelihood is taken at the restricted-likelihood estimates, at most its maximum, so the test is
    conservative."""
    statistic = max(2 * (models.mixed.log_likelihood - logit_log_likelihood(models, y)), 0.0)
    return statistic, float(0.5 * chi2.sf(statistic, 1))


def effects_plot(fit: MixedFit, level: float) -> Figure:
    """Caterpillar plot of the caseworkers' shrunken effects with posterior intervals."""
    effects = fit.effects.sort_values("posterior_mean").reset_index(drop=True)
    z = z_value(level)
    fig = figure(9, 4)
    ax = fig.subplots()
    at = np.arange(len(effects))
    ax.fill_between(
        at,
        effects["posterior_mean"] - z * effects["posterior_sd"],
        effects["posterior_mean"] + z * effects["posterior_sd"],
        alpha=0.3,
    )
    ax.plot(at, effects["posterior_mean"], color="tab:blue")
    ax.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    ax.set(
        xlabel="caseworkers, ordered",
        ylabel="effect on the log-odds per round",
        title=f"Caseworker effects, empirical Bayes (sd {fit.sd:.2f}; {level:.0%} posterior intervals)",
    )
    return fig


def rates_plot(data: ResearchData, fit: MixedFit) -> Figure:
    """Share of each caseworker's citizens (at their first measurement) who entered a job or
    education, and the shrunken effects: raw rates vary more than the caseworkers do."""
    first = data.features.groupby("citizen_id", sort=False).head(1)
    caseworker = caseworker_ids(data.dataset, first["measurement_id"])
    event = data.dataset.outcomes.set_index("citizen_id")["event"].reindex(first["citizen_id"]).to_numpy() != "none"
    rates = pd.Series(event).groupby(caseworker).agg(["mean", "size"])
    rates = rates[rates["size"] >= 5]
    fig = figure(10, 3.8)
    left, right = fig.subplots(1, 2)
    left.hist(100 * rates["mean"], bins=20, color="tab:blue")
    left.set(
        xlabel="% of the caseworker's citizens in job or education",
        ylabel="caseworkers",
        title="Raw rates (≥5 citizens)",
    )
    right.hist(fit.effects["posterior_mean"], bins=20, color="tab:green")
    right.set(
        xlabel="shrunken effect (log-odds per round)",
        ylabel="caseworkers",
        title="Beyond the citizens' characteristics",
    )
    return fig


EFFECT_QUANTILES: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


def effect_quantiles(effects: pd.DataFrame) -> pd.DataFrame:
    """Quantiles of the caseworkers' posterior means and sds: the spread the analysis is about, without
    a row per caseworker. One caseworker's effect is an estimate of that employee's results, personal
    data of the caseworker: it stays out of the report and MLflow, ids and per-caseworker rows alike."""
    return pd.DataFrame(
        {
            "quantile": EFFECT_QUANTILES,
            "effect": effects["posterior_mean"].quantile(EFFECT_QUANTILES).to_numpy(),
            "posterior_sd": effects["posterior_sd"].quantile(EFFECT_QUANTILES).to_numpy(),
        }
    )


TITLE = "4. Caseworker effects"
QUESTION = (
    "How much do job rates differ between caseworkers beyond their citizens' characteristics, and what if "
    'every citizen had an "effective" caseworker?'
)


def not_estimable(data: ResearchData, config: ResearchConfig) -> Analysis:
    """Analysis 4 where the random-intercept model does not converge on the data (e.g. a few hundred
    citizens): said so, with the size of the data, and nothing estimated."""
    rounds = data.rounds
    return Analysis(
        key="caseworker_effects",
        title=TITLE,
        question=QUESTION,
        method="Random-intercept logit over person-rounds (see the full report on larger data).",
        findings=[
            f"Not estimable on these data: the random-intercept model did not converge with "
            f"{len(rounds):,} person-rounds, {int(rounds['event'].sum()):,} events and "
            f"{rounds['caseworker_id'].nunique():,} caseworkers. Pool more rounds or job centres."
        ],
        params={"quadrature_nodes": config.quadrature_nodes, "estimable": False},
    )


def caseworker_effect_analysis(data: ResearchData, models: HazardModels, config: ResearchConfig) -> Analysis:
    """Analysis 4: caseworker variation (random intercepts with shrinkage) and the thought experiment."""
    if models.mixed is None:
        return not_estimable(data, config)
    y = data.rounds["event"].to_numpy(float)
    sd_low, sd_high = models.mixed.sd_interval(config.level)
    statistic, p_value = variance_test(models, y)
    total = fit_hazard_models(data, thought_experiment_spec(config), nodes=config.quadrature_nodes)
    if total.mixed is None:
        return not_estimable(data, config)
    total_low, total_high = total.mixed.sd_interval(config.level)
    shares = thought_experiment(data, total, config)
    by = shares.set_index("scenario")
    actual, effective = by.iloc[1], by.iloc[2]
    effects = models.mixed.effects.copy()
    q = config.effective_quantile
    metrics = {
        "caseworker_sd": models.mixed.sd,
        "caseworker_sd_low": sd_low,
        "caseworker_sd_high": sd_high,
        "caseworker_log_sd_se": float(np.sqrt(models.mixed.cov.loc[LOG_SD, LOG_SD])),
        "lr_statistic": statistic,
        "lr_p_value": p_value,
        "total_caseworker_sd": total.mixed.sd,
        "total_caseworker_sd_low": total_low,
        "total_caseworker_sd_high": total_high,
        "observed_share": float(by.iloc[0]["share"]),
        "projected_share": float(actual["share"]),
        "projected_share_low": float(actual["low"]),
        "projected_share_high": float(actual["high"]),
        "effective_share": float(effective["share"]),
        "effective_share_low": float(effective["low"]),
        "effective_share_high": float(effective["high"]),
        "effective_share_se": float(effective["se"]),
    }
    findings = [
        f"Caseworkers differ beyond their citizens: the sd of caseworker effects on the log-odds per round is "
        f"{models.mixed.sd:.2f} [{sd_low:.2f}, {sd_high:.2f}] (likelihood-ratio test of no variation: "
        f"statistic {statistic:.1f}, p = {p_value:.2g}), across {len(effects)} caseworkers.",
        f"A caseworker at the {q:.0%} quantile raises the odds per round by a factor "
        f"{np.exp(models.mixed.sd * norm.ppf(q)):.2f} compared with the median caseworker.",
        f"With answers only from the first measurement (so that the caseworker's effect through progression "
        f"counts too), the sd is {total.mixed.sd:.2f} [{total_low:.2f}, {total_high:.2f}].",
        f"Thought experiment: {by.iloc[0]['share']:.2%} of citizens entered a job or education (BIP "
        f"{BIP_REFERENCE['event_share_pct']:g} %); projected {actual['share']:.2%} [{actual['low']:.2%}, "
        f"{actual['high']:.2%}] with actual caseworkers and {effective['share']:.2%} [{effective['low']:.2%}, "
        f"{effective['high']:.2%}] if every caseworker were as effective as the {q:.0%} quantile "
        f"(BIP {BIP_REFERENCE['effective_caseworker_share_pct']:g} %).",
    ]
    sd_table = pd.DataFrame(
        [
            {"model": "current answers (direct effect)", "sd": models.mixed.sd, "low": sd_low, "high": sd_high},
            {
                "model": "first-measurement answers (total effect)",
                "sd": total.mixed.sd,
                "low": total_low,
                "high": total_high,
            },
        ]
    )
    return Analysis(
        key="caseworker_effects",
        title=TITLE,
        question=QUESTION,
        method=(
            "Random-intercept logit over person-rounds with the covariates of analysis 1: the sd of caseworker "
            "effects by restricted maximum likelihood (fixed effects integrated out, so the sd is not shrunk for "
            "the ~70 coefficients), adaptive Gauss-Hermite quadrature over each caseworker's effect; caseworker "
            "effects are shrunk towards 0 (empirical Bayes posterior means). Thought experiment: a second "
            "random-intercept model with the answers of the first measurement, projecting each citizen's rounds "
            "from enrolment to the end of the data (with the dropout measured in the data), once with the "
            "caseworker effect integrated over its distribution and once with every caseworker at the "
            f"{q:.0%} quantile of it. Intervals from {config.draws} draws of the parameters."
        ),
        findings=findings,
        params={
            "quadrature_nodes": config.quadrature_nodes,
            "effective_quantile": q,
            "draws": config.draws,
            "dropout_per_round": dropout_per_round(data.dataset, data.features, data.window_days),
            "level": config.level,
        },
        metrics=metrics,
        tables=[
            Table("caseworker_sd", "Standard deviation of caseworker effects (log-odds per round)", sd_table),
            Table("thought_experiment", "Share of citizens in job or education during follow-up", shares),
            Table(
                "caseworker_effects",
                "Spread of the caseworkers' shrunken effects (quantiles; no caseworker is named)",
                effect_quantiles(effects),
            ),
        ],
        plots=[
            Plot(
                "caseworker_effects",
                "Caseworker effects with posterior intervals",
                effects_plot(models.mixed, config.level),
            ),
            Plot(
                "caseworker_rates",
                "Raw job rates per caseworker and the shrunken effects",
                rates_plot(data, models.mixed),
            ),
        ],
    )
