"""Person-round data for discrete-time hazard models, and the logistic fits the analyses share.

A measurement on day t opens a round: the citizen was still without a job or education at t, and
the round's outcome is whether one starts in (t, t + W], with W the typical days between rounds
(measured from the data). A round whose follow-up ends before t + W without an event has no known
outcome and is left out (never counted as a "no"). The log-odds of such a round's event is what a
discrete-time hazard model describes; at a per-round hazard of a few percent, an odds ratio is
close to the relative risk, so exp(coef) - 1 reads as "relative change in the chance".

Covariates come from `features.build.build_features`, i.e. only data dated on or before t.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from bip.errors import TooFewData
from features.catalogue import CITIZEN_COLUMNS, PATTERNS
from features.dataset import Dataset

LATENT_INDICATORS: tuple[str, ...] = tuple(c.removeprefix("cit_") for c in CITIZEN_COLUMNS)
BELIEF = "cw_caseworker_belief"
# The middle of the 1-5 answer scale: indicator answers and belief are centred on it.
SCALE_MIDDLE = 3.0
BASELINE_PATTERN = "none"
# Age enters in ten-year bands: no functional form is assumed.
AGE_EDGES: tuple[float, ...] = (-np.inf, 40, 50, 60, np.inf)
AGE_BANDS: tuple[str, ...] = ("under_40", "40_49", "50_59", "60_plus")
BACKGROUND_DUMMIES: tuple[str, ...] = ("education", "origin", "gender", "civil_status", "jobcentre")
# A change of caseworker counts as "since the previous round" when the previous measurement is at
# most this many rounds back; with a skipped round the change may be older (its own dummy).
CONSECUTIVE_ROUNDS = 1.5


@dataclass(frozen=True)
class DesignSpec:
    """Which covariates a hazard design holds.

    `indicators`: "calibrated" (each indicator's level predicted from all answers and the other
    covariates, `calibrated_indicators`), "answers" (each cit_ and cw_ answer), "mean" (their mean
    per indicator) or "baseline" (the mean at the citizen's first measurement, and belief then
    too); `caseworker`: "all" (orientation and changes of caseworker), "orientation" or "none";
    `orientation_threshold` splits caseworkers into high and low job orientation (the scale middle
    unless told otherwise).
    """

    indicators: str = "answers"
    belief: bool = True
    caseworker: str = "all"
    patterns: bool = True
    background: bool = True
    time: bool = True
    orientation_threshold: float = SCALE_MIDDLE


def day_number(values: pd.Series | np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 as float, NaN for an empty date."""
    dates = pd.to_datetime(pd.Series(values)).to_numpy().astype("datetime64[D]")
    return np.where(np.isnat(dates), np.nan, dates.astype("int64").astype(float))


def round_window_days(features: pd.DataFrame) -> int:
    """The typical days between a citizen's consecutive measurements (the median gap)."""
    gaps = features["days_since_prev"].dropna()
    if gaps.empty:
        raise TooFewData(
            "no citizen has two measurements: the length of a round cannot be measured (an empty store, "
            "or one round only: ingest more rounds first)"
        )
    return int(round(float(gaps.median())))


def round_days(dataset: Dataset, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Day numbers per feature row: the measurement, the citizen's event (NaN: none) and the end of
    the citizen's follow-up (NaN: no outcome row)."""
    outcomes = dataset.outcomes.set_index("citizen_id")
    citizen = features["citizen_id"].to_numpy(dtype=object)
    event_day = day_number(outcomes["event_on"].reindex(citizen).to_numpy())
    followed = day_number(outcomes["followed_until"].reindex(citizen).to_numpy())
    return day_number(features["measured_on"]), event_day, followed


def caseworker_ids(dataset: Dataset, measurement_ids: pd.Series | np.ndarray) -> np.ndarray:
    """The caseworker responsible at each measurement (by measurement id)."""
    caseworker = dataset.measurements.set_index("measurement_id")["caseworker_id"]
    return caseworker.reindex(np.asarray(measurement_ids, dtype=object)).to_numpy(dtype=object)


def person_rounds(dataset: Dataset, features: pd.DataFrame, window_days: int) -> pd.DataFrame:
    """The rows of `features` whose round outcome is known, with `event` (0/1) and `caseworker_id`.

    `features` is `build_features(dataset)`. Left out: rounds whose follow-up ends inside the round
    without an event (unknown outcome), and rows whose citizen had an event on or before t (not at
    risk).
    """
    t, event_day, followed = round_days(dataset, features)
    with np.errstate(invalid="ignore"):
        at_risk = ~(event_day <= t)
        event = (event_day > t) & (event_day <= t + window_days)
        observed = event | (followed >= t + window_days)
    out = features.assign(event=event.astype(float), caseworker_id=caseworker_ids(dataset, features["measurement_id"]))
    return out[at_risk & observed].reset_index(drop=True)


def dropout_per_round(dataset: Dataset, features: pd.DataFrame, window_days: int) -> float:
    """Share of at-risk rounds without an event whose follow-up ends inside the round, among rounds
    that end before the data do (administrative end of follow-up is not dropout)."""
    t, event_day, followed = round_days(dataset, features)
    end = np.nanmax(day_number(dataset.outcomes["followed_until"]))
    with np.errstate(invalid="ignore"):
        no_event = ~((event_day > t) & (event_day <= t + window_days)) & ~(event_day <= t)
        inside = no_event & (t + window_days <= end)
        dropped = inside & (followed < t + window_days)
    return float(dropped.sum() / max(inside.sum(), 1))


def filled_answers(frame: pd.DataFrame, code: str) -> tuple[pd.Series, pd.Series]:
    """A citizen's and a caseworker's answer to an indicator, a missing one filled by the other
    source's answer, and by the column mean where both are missing (few rows: 4 % each)."""
    cit, cw = frame[f"cit_{code}"].astype(float), frame[f"cw_{code}"].astype(float)
    cit, cw = cit.fillna(cw), cw.fillna(cit)
    return cit.fillna(cit.mean()), cw.fillna(cw.mean())


def first_of_citizen(frame: pd.DataFrame, values: pd.Series) -> pd.Series:
    """Each row's value at its citizen's first row (rows sorted by citizen and date)."""
    return values.groupby(frame["citizen_id"].to_numpy()).transform("first", skipna=False)


def indicator_columns(frame: pd.DataFrame, spec: DesignSpec) -> dict[str, pd.Series]:
    out: dict[str, pd.Series] = {}
    for code in LATENT_INDICATORS:
        cit, cw = filled_answers(frame, code)
        if spec.indicators == "answers":
            out[f"cit_{code}"], out[f"cw_{code}"] = cit - SCALE_MIDDLE, cw - SCALE_MIDDLE
        elif spec.indicators == "mean":
            out[code] = (cit + cw) / 2 - SCALE_MIDDLE
        elif spec.indicators == "baseline":
            out[code] = first_of_citizen(frame, (cit + cw) / 2) - SCALE_MIDDLE
        else:
            raise ValueError(f"indicators must be 'answers', 'mean' or 'baseline' here, not {spec.indicators!r}")
    return out


def best_linear_latent(citizen: np.ndarray, caseworker: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The best linear prediction of each latent indicator from all answers and other covariates.

    `citizen` and `caseworker` (rows x indicators) are two readings of the same latent indicators;
    `others` (rows x covariates) are the model's other covariates. The caseworker's reading error is
    assumed independent of the latent levels, of the citizen's answers, of the other covariates and
    across indicators, so Cov(latent, W) = Cov(caseworker answers, W) for every column W but the
    caseworker's own answer to the same indicator, where it is Var(latent) = Cov(citizen answer,
    caseworker answer). Nothing about the error sizes is assumed: the two readings identify them.
    """
    readings = np.column_stack([citizen, caseworker, others]).astype(float)
    centred = readings - readings.mean(axis=0)
    caseworker_centred = caseworker - caseworker.mean(axis=0)
    rows, k = len(readings), citizen.shape[1]
    cov_readings = centred.T @ centred / (rows - 1)
    cov_latent = caseworker_centred.T @ centred / (rows - 1)
    citizen_centred = citizen - citizen.mean(axis=0)
    cov_latent[np.arange(k), k + np.arange(k)] = np.einsum("ij,ij->j", citizen_centred, caseworker_centred) / (rows - 1)
    coef = np.linalg.lstsq(cov_readings, cov_latent.T, rcond=None)[0]
    return caseworker.mean(axis=0) + centred @ coef


def calibrated_indicators(frame: pd.DataFrame, others: pd.DataFrame) -> dict[str, pd.Series]:
    """Each indicator's level predicted from all 20 answers and the other covariates (regression
    calibration), centred on the scale middle: a coefficient then reads per step of the indicator.

    Why: each answer measures its indicator with error and the indicators share a person-level
    part, so a logit on the raw answers moves weight from the strong indicators to the weak ones
    and leaves part of the citizen's readiness to the caseworker's belief (over 100 simulated
    seeds health coping came out 0.26 for 0.30 and belief 0.34 for 0.285;
    benchmarks/RESULTS-research-coverage.md). The prediction removes that attenuation. A missing
    answer is filled by the other reader's (`filled_answers`, about 4 % of answers); in those rows
    the two readings share an error, which the calibration does not model.
    """
    pairs = [filled_answers(frame, code) for code in LATENT_INDICATORS]
    citizen = np.column_stack([cit.to_numpy(float) for cit, _ in pairs])
    caseworker = np.column_stack([cw.to_numpy(float) for _, cw in pairs])
    latent = best_linear_latent(citizen, caseworker, others.to_numpy(float))
    return {code: pd.Series(latent[:, k] - SCALE_MIDDLE, index=frame.index) for k, code in enumerate(LATENT_INDICATORS)}


def caseworker_columns(frame: pd.DataFrame, spec: DesignSpec, window_days: int) -> dict[str, pd.Series]:
    if spec.caseworker not in ("all", "orientation", "none"):
        raise ValueError(f"caseworker must be 'all', 'orientation' or 'none', not {spec.caseworker!r}")
    if spec.caseworker == "none":
        return {}
    orientation = frame["caseworker_job_orientation"].astype(float)
    out = {
        "orientation_high": (orientation >= spec.orientation_threshold).astype(float),
        "orientation_missing": orientation.isna().astype(float),
    }
    if spec.caseworker == "all":
        changed = frame["caseworker_changed"].astype(float) == 1
        recent = frame["days_since_prev"].astype(float) <= CONSECUTIVE_ROUNDS * window_days
        out["caseworker_changed"] = (changed & recent).astype(float)
        out["caseworker_changed_earlier"] = (changed & ~recent).astype(float)
    return out


def background_columns(frame: pd.DataFrame) -> dict[str, pd.Series]:
    age = pd.cut(frame["age"].astype(float), list(AGE_EDGES), right=False, labels=list(AGE_BANDS)).astype(str)
    out = {
        "benefit_share_5y": frame["benefit_share_5y"].astype(float),
        "children": frame["children"].astype(float),
    }
    dummies = pd.get_dummies(age, prefix="age", drop_first=True, dtype=float)
    out.update({name: dummies[name] for name in dummies.columns})
    for column in BACKGROUND_DUMMIES:
        dummies = pd.get_dummies(frame[column].astype(str), prefix=column, drop_first=True, dtype=float)
        out.update({name: dummies[name] for name in dummies.columns})
    return out


def time_columns(rounds_since_enrolment: pd.Series) -> dict[str, pd.Series]:
    """Time since enrolment in rounds, linear and log(1 + rounds): a flexible baseline hazard."""
    return {
        "rounds_since_enrolment": rounds_since_enrolment,
        "log_rounds_since_enrolment": np.log1p(rounds_since_enrolment),
    }


def hazard_design(frame: pd.DataFrame, spec: DesignSpec, window_days: int) -> pd.DataFrame:
    """The covariate matrix (with `const`) of a discrete-time hazard model over person-rounds.

    Answers are centred on the scale middle, so coefficients read per step of an answer; a missing
    belief is filled by the mean (with a 0/1 column saying so). Constant columns are dropped.
    """
    columns: dict[str, pd.Series] = {"const": pd.Series(1.0, index=frame.index)}
    if spec.belief:
        belief = frame[BELIEF].astype(float)
        if spec.indicators == "baseline":
            belief = first_of_citizen(frame, belief)
        columns["caseworker_belief"] = belief.fillna(belief.mean()) - SCALE_MIDDLE
        columns["belief_missing"] = belief.isna().astype(float)
    columns.update(caseworker_columns(frame, spec, window_days))
    if spec.patterns:
        pattern = frame["pattern_3m"].astype(str)
        columns.update({f"pattern_{p}": (pattern == p).astype(float) for p in PATTERNS if p != BASELINE_PATTERN})
    if spec.indicators != "calibrated":
        columns.update(indicator_columns(frame, spec))
    if spec.background:
        columns.update(background_columns(frame))
    if spec.time:
        columns.update(time_columns(frame["days_since_enrolment"].astype(float) / window_days))
    if spec.indicators == "calibrated":
        others = pd.DataFrame(columns, index=frame.index).drop(columns="const")
        columns.update(calibrated_indicators(frame, others))
    design = pd.DataFrame(columns, index=frame.index)
    varying = design.nunique() > 1
    varying["const"] = True
    return design.loc[:, varying]


@dataclass(frozen=True)
class LogitFit:
    """Coefficients and their covariance (cluster-robust by `groups`) of a logistic regression."""

    params: pd.Series
    cov: pd.DataFrame
    rows: int
    events: int
    clusters: int

    @property
    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.cov)), index=self.params.index)


def fit_logit(y: np.ndarray, X: pd.DataFrame, groups: np.ndarray) -> LogitFit:
    """Maximum-likelihood logit with a covariance robust to correlation within each group
    (e.g. a caseworker's citizens share the caseworker's unmeasured effectiveness)."""
    import statsmodels.api as sm
    from threadpoolctl import threadpool_limits

    codes = pd.factorize(np.asarray(groups, dtype=object))[0]
    # One BLAS thread: the matrices are small, and threads only contend on a shared machine.
    with threadpool_limits(limits=1):
        result = sm.GLM(np.asarray(y, dtype=float), X, family=sm.families.Binomial()).fit(
            cov_type="cluster", cov_kwds={"groups": codes}
        )
    cov = pd.DataFrame(np.asarray(result.cov_params()), index=X.columns, columns=X.columns)
    return LogitFit(pd.Series(np.asarray(result.params), index=X.columns), cov, len(X), int(np.sum(y)), codes.max() + 1)


def z_value(level: float) -> float:
    """The two-sided standard-normal quantile of a confidence level (1.96 at 0.95)."""
    return float(norm.ppf(0.5 + level / 2))


def effect_rows(fit: LogitFit, names: Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """Log-odds, standard error, interval, odds ratio and relative change (%) of named coefficients."""
    z = z_value(level)
    coef, se = fit.params[list(names)], fit.se[list(names)]
    table = pd.DataFrame({"term": list(names), "log_odds": coef.to_numpy(), "se": se.to_numpy()})
    table["low"] = table["log_odds"] - z * table["se"]
    table["high"] = table["log_odds"] + z * table["se"]
    table["odds_ratio"] = np.exp(table["log_odds"])
    table["relative_change_pct"] = 100 * (table["odds_ratio"] - 1)
    table["relative_change_low_pct"] = 100 * (np.exp(table["low"]) - 1)
    table["relative_change_high_pct"] = 100 * (np.exp(table["high"]) - 1)
    return table


def combined_effect(fit: LogitFit, terms: Sequence[str], level: float = 0.95) -> tuple[float, float, float, float]:
    """The sum of several coefficients (e.g. a citizen's and a caseworker's answer one step up
    together), with its standard error and interval: (estimate, se, low, high)."""
    terms = list(terms)
    estimate = float(fit.params[terms].sum())
    se = float(np.sqrt(fit.cov.loc[terms, terms].to_numpy().sum()))
    z = z_value(level)
    return estimate, se, estimate - z * se, estimate + z * se
