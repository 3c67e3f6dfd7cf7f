"""A structural, quarter-by-quarter simulation of BIP-like data, written in the data contract.

Citizens carry latent indicator levels that move with the interventions of the last three months
(and decline without any); caseworkers differ in effectiveness and job orientation, rate their
belief in a job, and change now and then; the chance of a job or education in each round depends
on the current state, including a non-additive bonus for a job-oriented intervention combined with
another group. The planted parameters live in a scenario YAML (simulator/scenarios/default.yaml).

Beside the dataset (never inside it) the simulator writes each measurement's true probability of a
job or education within the horizon, by Monte Carlo over the future from the simulated state.

About 530 lines in one module on purpose: every step reads and advances the same `State` under the
same scenario, so the quarter-by-quarter story reads top to bottom in one place.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from bip.progress import QUIET, Progress, step
from features.build import truncate_dataset
from features.catalogue import (
    CASEWORKER_COLUMNS,
    CITIZEN_COLUMNS,
    EDUCATIONS,
    GROUPS,
    INDICATOR_CODES,
    INTERVENTION_CODES,
    INTERVENTIONS,
    ORIGINS,
    PATTERNS,
)
from features.contract import write_dataset
from features.dataset import Dataset, canonical

DEFAULT_SCENARIO = Path(__file__).parent / "scenarios" / "default.yaml"
# Latent indicators are the ten a citizen answers; the caseworker's belief is rated from them.
LATENT = tuple(c for c in INDICATOR_CODES if c != "caseworker_belief")
JOB = GROUPS.index("job")


def load_scenario(path: Path | None = None) -> dict[str, Any]:
    """The default scenario, with the keys of `path` (a partial YAML) merged over it."""
    scenario = yaml.safe_load(DEFAULT_SCENARIO.read_text(encoding="utf-8"))
    if path is not None:
        scenario = merge(scenario, yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})
    return scenario


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A deep merge of two nested dicts; values in `override` win."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class State:
    """Everything about a set of citizens at a round, as parallel arrays (one row per citizen)."""

    latent: np.ndarray  # (n, len(LATENT)) continuous indicator levels
    citizen_bias: np.ndarray  # (n,)
    impression: np.ndarray  # (n,) the caseworker's persistent impression, for the belief rating
    background_logit: np.ndarray  # (n,) static background part of the hazard
    caseworker: np.ndarray  # (n,) caseworker index
    jobcentre: np.ndarray  # (n,) job-centre index
    last_end: np.ndarray  # (n, 4) day number of the latest end of an episode per group (-inf none)
    changed: np.ndarray  # (n,) bool: caseworker changed since the previous round
    belief: np.ndarray  # (n,) the caseworker's recorded belief, 1-5
    day: np.ndarray  # (n,) day number of this round

    def take(self, index: np.ndarray) -> State:
        return State(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass(frozen=True)
class Caseworkers:
    jobcentre: np.ndarray
    orientation: np.ndarray
    effect: np.ndarray
    by_jobcentre: tuple[np.ndarray, ...]


def days(value: str | date) -> int:
    return int(np.datetime64(str(value), "D").astype(np.int64))


def pattern_of(state: State, window_days: int = 91) -> np.ndarray:
    """Index into PATTERNS of the groups active in the last three months."""
    active = state.last_end > (state.day - window_days)[:, None]
    job = active[:, JOB]
    other = active[:, [g for g in range(len(GROUPS)) if g != JOB]].any(axis=1)
    return np.select([job & other, job, other], [0, 1, 2], default=3)


def rate_belief(state: State, cw: Caseworkers, sc: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    b = sc["belief"]
    readiness = state.latent.mean(axis=1) - sc["latent"]["mean"]
    orientation = np.nan_to_num(cw.orientation[state.caseworker], nan=3.0) - 3.0
    value = b["intercept"] + b["readiness"] * readiness + b["job_orientation"] * orientation
    value = value + state.impression + rng.normal(0, 0.3, len(value))
    return np.clip(np.rint(value), 1, 5)


def progress(state: State, pattern: np.ndarray, cw: Caseworkers, sc: dict[str, Any], rng) -> np.ndarray:
    """Latent levels after one round, moved by the interventions active in the last three months."""
    p = sc["progression"]
    drift = np.array([p["pattern"][name] for name in PATTERNS])[pattern]
    active = state.last_end > (state.day - 91)[:, None]
    targeted = p["targeted"] * (active.astype(float) @ target_matrix(p["targets"]))
    effect = p["caseworker_effectiveness"] * cw.effect[state.caseworker] / sc["hazard"]["caseworker_effect_sd"]
    noise = p["noise_sd"] * rng.standard_normal(state.latent.shape, dtype=np.float32)
    return np.clip(state.latent + drift[:, None] + targeted + effect[:, None] + noise, 0.5, 5.5)


def target_matrix(targets: dict[str, list[str]]) -> np.ndarray:
    """(groups, latent indicators) 0/1: which indicators each intervention group works on."""
    matrix = np.zeros((len(GROUPS), len(LATENT)))
    for g, group in enumerate(GROUPS):
        matrix[g, [LATENT.index(code) for code in targets.get(group, [])]] = 1.0
    return matrix


def hazard_logit(state: State, pattern: np.ndarray, cw: Caseworkers, sc: dict[str, Any]) -> np.ndarray:
    """Log-odds of entering a job or education before the next round, given the state now."""
    h = sc["hazard"]
    weights = np.array([h["indicators"].get(code, 0.0) for code in LATENT])
    orientation = cw.orientation[state.caseworker]
    high = np.nan_to_num(orientation, nan=0.0) >= h["job_orientation_threshold"]
    return (
        h["intercept"]
        + (state.latent - 3.0) @ weights
        + h["caseworker_belief"] * (state.belief - 3.0)
        + h["high_job_orientation"] * high
        + h["caseworker_change"] * state.changed
        + np.array([h["pattern"][name] for name in PATTERNS])[pattern]
        + cw.effect[state.caseworker]
        + state.background_logit
    )


def change_caseworkers(state: State, cw: Caseworkers, sc: dict[str, Any], rng) -> State:
    """Some citizens get a new caseworker from the same job centre between rounds."""
    changed = rng.random(len(state.day)) < sc["caseworker_change_per_quarter"]
    new = state.caseworker.copy()
    for j, pool in enumerate(cw.by_jobcentre):
        idx = np.flatnonzero(changed & (state.jobcentre == j))
        new[idx] = pool[rng.integers(0, len(pool), len(idx))]
    state.changed = changed & (new != state.caseworker)
    state.caseworker = new
    return state


def intervention_groups(state: State, cw: Caseworkers, sc: dict[str, Any], rng) -> np.ndarray:
    """(n, 4) bool: which groups each citizen starts an intervention in this round."""
    iv = sc["interventions"]
    n = len(state.day)
    orientation = np.nan_to_num(cw.orientation[state.caseworker], nan=3.0) - 3.0
    readiness = state.latent.mean(axis=1) - sc["latent"]["mean"]
    job = rng.random(n) < expit(
        iv["job_intercept"] + iv["job_orientation"] * orientation + iv["job_readiness"] * readiness
    )
    other = rng.random(n) < expit(np.where(job, iv["other_given_job"], iv["other_given_no_job"]))
    need = np.stack(
        [
            3.0 - state.latent[:, LATENT.index("self_efficacy")],
            3.0 - state.latent[:, [LATENT.index("network_support"), LATENT.index("everyday_coping")]].mean(axis=1),
            3.0 - state.latent[:, LATENT.index("health_coping")],
        ],
        axis=1,
    )
    weights = np.exp(need)
    weights /= weights.sum(axis=1, keepdims=True)
    choice = (rng.random(n)[:, None] > np.cumsum(weights, axis=1)).sum(axis=1)
    groups = np.zeros((n, len(GROUPS)), dtype=bool)
    groups[:, JOB] = job
    others = [g for g in range(len(GROUPS)) if g != JOB]
    groups[np.arange(n), np.array(others)[np.minimum(choice, len(others) - 1)]] = other
    return groups


def start_episodes(state: State, groups: np.ndarray, sc: dict[str, Any], rng) -> dict[str, np.ndarray]:
    """Intervention episodes (one code per started group, sometimes two) and the updated last_end."""
    iv = sc["interventions"]
    rows, cols = np.nonzero(groups)
    extra = rng.random(len(rows)) < iv["second_code_share"]
    rows = np.concatenate([rows, rows[extra]])
    cols = np.concatenate([cols, cols[extra]])
    codes = np.empty(len(rows), dtype=np.int64)
    for g, group in enumerate(GROUPS):
        pool = np.array([k for k, i in enumerate(INTERVENTIONS) if i.group == group])
        at = np.flatnonzero(cols == g)
        codes[at] = pool[rng.integers(0, len(pool), len(at))]
    start = state.day[rows] + rng.integers(iv["start_delay_days"][0], iv["start_delay_days"][1] + 1, len(rows))
    long = np.array([i.code in iv["long_codes"] for i in INTERVENTIONS])[codes]
    low = np.where(long, iv["long_duration_days"][0], iv["duration_days"][0])
    high = np.where(long, iv["long_duration_days"][1], iv["duration_days"][1])
    end = start + rng.integers(low, high + 1)
    np.maximum.at(state.last_end, (rows, cols), end.astype(float))
    return {"row": rows, "code": codes, "start": start, "end": end}


def expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def next_round(state: State, sc: dict[str, Any], rng) -> np.ndarray:
    jitter = sc["round_jitter_days"]
    return state.day + sc["days_between_rounds"] + rng.integers(-jitter, jitter + 1, len(state.day))


def advance(state: State, cw: Caseworkers, sc: dict[str, Any], rng) -> State:
    """Move to the next round: new day, caseworker changes, progression, belief rating."""
    state.day = next_round(state, sc, rng)
    state = change_caseworkers(state, cw, sc, rng)
    state.latent = progress(state, pattern_of(state), cw, sc, rng)
    state.belief = rate_belief(state, cw, sc, rng)
    return state


def event_in_round(state: State, cw: Caseworkers, sc: dict[str, Any], rng) -> tuple[np.ndarray, np.ndarray]:
    """Whether each citizen enters a job or education before the next round, and on which day."""
    hit = rng.random(len(state.day)) < expit(hazard_logit(state, pattern_of(state), cw, sc))
    span = sc["days_between_rounds"]
    return hit, state.day + rng.integers(1, span + 1, len(state.day))


def true_probabilities(
    state: State, horizon_end: np.ndarray, cw: Caseworkers, sc: dict[str, Any], rng, draws: int
) -> np.ndarray:
    """P(event in (day, horizon_end]) for each row of `state` (just measured), by Monte Carlo."""
    out = np.empty(len(state.day))
    rounds = int(np.ceil((horizon_end - state.day).max() / (sc["days_between_rounds"] - sc["round_jitter_days"])))
    chunk = max(1, 200_000 // draws)
    for lo in range(0, len(state.day), chunk):
        idx = np.repeat(np.arange(lo, min(lo + chunk, len(state.day))), draws)
        sim = state.take(idx)
        end = horizon_end[idx]
        done = np.zeros(len(idx), dtype=bool)
        for _ in range(rounds + 1):
            hit, when = event_in_round(sim, cw, sc, rng)
            done |= hit & (when <= end) & (sim.day < end)
            start_episodes(sim, intervention_groups(sim, cw, sc, rng), sc, rng)
            sim = advance(sim, cw, sc, rng)
        out[lo : lo + chunk] = done.reshape(-1, draws).mean(axis=1)
    return out


def make_caseworkers(sc: dict[str, Any], rng) -> Caseworkers:
    k, centres = sc["caseworkers"], len(sc["jobcentres"])
    jobcentre = np.arange(k) % centres
    orientation = np.clip(np.round(rng.normal(3.0, 0.8, k), 1), 1.0, 5.0)
    effect = rng.normal(0.0, sc["hazard"]["caseworker_effect_sd"], k)
    if sc["hazard"].get("caseworker_effect_fixed") is not None:  # a what-if: every caseworker alike
        effect = np.full(k, float(sc["hazard"]["caseworker_effect_fixed"]))
    return Caseworkers(jobcentre, orientation, effect, tuple(np.flatnonzero(jobcentre == j) for j in range(centres)))


def make_citizens(n: int, cw: Caseworkers, sc: dict[str, Any], rng) -> tuple[pd.DataFrame, State]:
    """Register data of n citizens and their latent state at enrolment."""
    bg, lat, h = sc["background"], sc["latent"], sc["hazard"]
    start = days(sc["start_on"])
    enrolled = start + rng.integers(0, int(sc["enrolment_months"] * 30.44), n)
    age = rng.integers(bg["age_range"][0], bg["age_range"][1] + 1, n)
    enrol_year = np.array(enrolled, dtype="datetime64[D]").astype("datetime64[Y]").astype(int) + 1970
    education = rng.choice(EDUCATIONS, n, p=[bg["education"][e] for e in EDUCATIONS])
    origin = rng.choice(ORIGINS, n, p=[bg["origin"][o] for o in ORIGINS])
    benefit = np.round(rng.beta(*bg["benefit_share_beta"], n), 3)
    children = rng.poisson(bg["children_mean"], n)
    jobcentre = rng.integers(0, len(sc["jobcentres"]), n)
    person = rng.normal(0, lat["person_sd"], n) - 0.6 * (benefit - 0.8)
    latent = lat["mean"] + person[:, None] + rng.normal(0, lat["indicator_sd"], (n, len(LATENT)))
    pools = cw.by_jobcentre
    caseworker = np.array([pools[j][rng.integers(0, len(pools[j]))] for j in jobcentre])
    background_logit = (
        h["benefit_share_5y"] * benefit
        + h["age_per_year_over_40"] * np.maximum(age - 40, 0)
        + np.array([h["education"][e] for e in education])
        + h["non_western"] * (origin == "non_western")
        + h["children"] * children
    )
    citizens = pd.DataFrame(
        {
            "citizen_id": [f"C{i:06d}" for i in range(n)],
            "jobcentre": np.array(sc["jobcentres"])[jobcentre],
            "birth_year": enrol_year - age,
            "gender": np.where(rng.random(n) < bg["male_share"], "M", "F"),
            "origin": origin,
            "civil_status": np.where(rng.random(n) < bg["couple_share"], "couple", "single"),
            "children": children,
            "education": education,
            "benefit_share_5y": benefit,
            "enrolled_on": np.array(enrolled, dtype="datetime64[D]"),
        }
    )
    first_day = enrolled + rng.integers(0, 15, n)
    state = State(
        latent=np.clip(latent, 0.5, 5.5),
        citizen_bias=rng.normal(0, lat["citizen_bias_sd"], n),
        impression=rng.normal(0, sc["belief"]["impression_sd"], n),
        background_logit=background_logit,
        caseworker=caseworker,
        jobcentre=jobcentre,
        last_end=np.full((n, len(GROUPS)), -np.inf),
        changed=np.zeros(n, dtype=bool),
        belief=np.zeros(n),
        day=first_day,
    )
    state.belief = rate_belief(state, cw, sc, rng)
    return citizens, state


def answers(state: State, sc: dict[str, Any], rng) -> dict[str, np.ndarray]:
    """The recorded questionnaire answers (1-5, NaN when not answered) for each citizen in `state`."""
    lat = sc["latent"]
    n = len(state.day)
    out: dict[str, np.ndarray] = {}
    for k, code in enumerate(LATENT):
        cit = state.latent[:, k] + state.citizen_bias + rng.normal(0, lat["citizen_noise_sd"], n)
        cw = state.latent[:, k] + rng.normal(0, lat["caseworker_noise_sd"], n)
        out[f"cit_{code}"] = np.clip(np.rint(cit), 1, 5)
        out[f"cw_{code}"] = np.clip(np.rint(cw), 1, 5)
    out["cw_caseworker_belief"] = state.belief.copy()
    for values in out.values():
        values[rng.random(n) < sc["missing_answer"]] = np.nan
    return {c: out[c] for c in CITIZEN_COLUMNS + CASEWORKER_COLUMNS}


@dataclass(frozen=True)
class Simulation:
    dataset: Dataset
    truth: pd.DataFrame  # measurement_id, true_probability within the horizon
    caseworker_effects: pd.DataFrame  # caseworker_id, planted effect on the log-odds


def simulate(
    citizens: int = 4000,
    seed: int = 2013,
    scenario: dict[str, Any] | None = None,
    horizon_months: int = 12,
    truth_draws: int | None = None,
    progress: Progress = QUIET,
) -> Simulation:
    """Simulate a dataset in the contract and each measurement's true probability within the horizon;
    `progress` counts the citizens whose follow-up has ended."""
    sc = scenario or load_scenario()
    rng = np.random.default_rng(seed)
    cw = make_caseworkers(sc, rng)
    register, state = make_citizens(citizens, cw, sc, rng)
    extract = days(sc["extract_on"])
    draws = sc["truth_draws"] if truth_draws is None else truth_draws
    n = citizens
    alive = np.ones(n, dtype=bool)
    event_day = np.full(n, np.nan)
    followed = np.full(n, float(extract))
    measured, episodes = [], []
    shown = 0
    with progress.task("simulate: citizens followed", total=n) as task:
        while True:
            alive &= state.day <= extract
            idx = np.flatnonzero(alive)
            task.advance(n - len(idx) - shown)
            shown = n - len(idx)
            if len(idx) == 0:
                break
            now = state.take(idx)
            recorded = rng.random(len(idx)) < sc["attendance"]
            rec = idx[recorded]
            if len(rec):
                table = {"citizen": rec, "day": state.day[rec], "caseworker": state.caseworker[rec]}
                table.update({c: v[recorded] for c, v in answers(now, sc, rng).items()})
                if draws:
                    snapshot = now.take(np.flatnonzero(recorded))
                    horizon_end = horizon_days(snapshot.day, horizon_months)
                    table["true_probability"] = true_probabilities(snapshot, horizon_end, cw, sc, rng, draws)
                measured.append(pd.DataFrame(table))
            hit, when = event_in_round(now, cw, sc, rng)
            hit &= when <= extract
            event_day[idx[hit]] = when[hit]
            followed[idx[hit]] = np.minimum(when[hit], extract)
            drop = ~hit & (rng.random(len(idx)) < sc["dropout_per_quarter"])
            drop_day = now.day + rng.integers(1, sc["days_between_rounds"] + 1, len(idx))
            drop &= drop_day <= extract
            followed[idx[drop]] = drop_day[drop]
            stay = ~hit & ~drop
            new = start_episodes(now, intervention_groups(now, cw, sc, rng), sc, rng)
            keep = new["start"] <= followed[idx[new["row"]]]
            episodes.append(
                pd.DataFrame(
                    {"citizen": idx[new["row"]], "code": new["code"], "start": new["start"], "end": new["end"]}
                )[keep]
            )
            now = advance(now, cw, sc, rng)
            for f in fields(State):
                getattr(state, f.name)[idx] = getattr(now, f.name)
            alive[idx] = stay
    return Simulation(*assemble(register, cw, sc, measured, episodes, event_day, followed, extract, rng))


def horizon_days(day: np.ndarray, months: int) -> np.ndarray:
    """Day number of day + `months` calendar months (the contract's t + 12 months)."""
    stamps = pd.to_datetime(np.asarray(day, dtype="datetime64[D]")) + pd.DateOffset(months=months)
    return np.asarray(stamps.values.astype("datetime64[D]").astype(np.int64))


def assemble(register, cw, sc, measured, episodes, event_day, followed, extract, rng):
    """The five contract tables and the truth table from the simulation's arrays."""
    n = len(register)
    ids = register["citizen_id"].to_numpy()
    cw_ids = np.array([f"W{k:04d}" for k in range(len(cw.jobcentre))])
    m = pd.concat(measured, ignore_index=True).sort_values(["citizen", "day"], kind="stable")
    m["measurement_id"] = [f"M{i:07d}" for i in range(len(m))]
    measurements = pd.DataFrame(
        {
            "measurement_id": m["measurement_id"],
            "citizen_id": ids[m["citizen"]],
            "caseworker_id": cw_ids[m["caseworker"]],
            "measured_on": m["day"].to_numpy().astype("datetime64[D]"),
            **{c: m[c] for c in CITIZEN_COLUMNS + CASEWORKER_COLUMNS},
        }
    )
    e = pd.concat(episodes, ignore_index=True)
    e = e.drop_duplicates(["citizen", "code", "start"])
    ended = np.where(e["end"] <= extract, e["end"].astype(float), np.nan)  # running at the extract date
    interventions = pd.DataFrame(
        {
            "citizen_id": ids[e["citizen"]],
            "intervention": np.array(INTERVENTION_CODES)[e["code"].to_numpy()],
            "started_on": e["start"].to_numpy().astype("datetime64[D]"),
            "ended_on": pd.to_datetime(ended, unit="D"),
        }
    ).sort_values(["citizen_id", "started_on", "intervention"], kind="stable")
    kind = np.where(rng.random(n) < sc["education_share_of_events"], "education", "job")
    has_event = ~np.isnan(event_day)
    outcomes = pd.DataFrame(
        {
            "citizen_id": ids,
            "event": np.where(has_event, kind, "none"),
            "event_on": pd.to_datetime(pd.Series(event_day), unit="D"),
            "followed_until": pd.to_datetime(pd.Series(followed), unit="D"),
        }
    )
    caseworkers = pd.DataFrame(
        {
            "caseworker_id": cw_ids,
            "jobcentre": np.array(sc["jobcentres"])[cw.jobcentre],
            "job_orientation": cw.orientation,
        }
    )
    dataset = Dataset(
        citizens=canonical("citizens", register),
        caseworkers=canonical("caseworkers", caseworkers),
        measurements=canonical("measurements", measurements),
        interventions=canonical("interventions", interventions),
        outcomes=canonical("outcomes", outcomes),
    )
    truth = pd.DataFrame({"measurement_id": m["measurement_id"].to_numpy()})
    if "true_probability" in m:
        truth["true_probability"] = m["true_probability"].to_numpy()
    caseworker_effects = pd.DataFrame({"caseworker_id": cw_ids, "effect": cw.effect})
    return dataset, truth, caseworker_effects


def truth_folder(out: Path) -> Path:
    """Where the truth of a dataset written to `out` goes: beside it, never inside it."""
    out = Path(out)
    return out.with_name(out.name + "-truth")


def extract_dates(dataset: Dataset) -> list[date]:
    """Calendar quarter ends from the first enrolment to the end of the data: when exports are taken."""
    first = dataset.citizens["enrolled_on"].min()
    last = dataset.outcomes["followed_until"].max()
    return [stamp.date() for stamp in pd.date_range(first, last + pd.offsets.QuarterEnd(0), freq="QE")]


def write_extracts(dataset: Dataset, out: Path, fmt: str = "csv") -> list[Path]:
    """The dataset as the job centre's consecutive exports would arrive: one full extract per quarter end."""
    folders = []
    for day in extract_dates(dataset):
        folder = Path(out) / f"extract_{day.isoformat()}"
        write_dataset(truncate_dataset(dataset, day), folder, fmt=fmt)
        folders.append(folder)
    return folders


def simulate_to_folder(
    out: Path,
    scenario: dict[str, Any],
    citizens: int,
    seed: int,
    fmt: str = "csv",
    horizon_months: int = 12,
    extracts: bool = False,
    progress: Progress = QUIET,
) -> str:
    """Simulate, write the dataset to `out` (or quarterly extracts under it) and the truth beside it."""
    out = Path(out)
    sim = simulate(citizens=citizens, seed=seed, scenario=scenario, horizon_months=horizon_months, progress=progress)
    with step(progress, "simulate: write the tables"):
        if extracts:
            where = f"{len(write_extracts(sim.dataset, out, fmt=fmt))} quarterly extracts under {out}"
        else:
            write_dataset(sim.dataset, out, fmt=fmt)
            where = str(out)
    truth = truth_folder(out)
    truth.mkdir(parents=True, exist_ok=True)
    sim.truth.to_csv(truth / "true_probabilities.csv", index=False)
    sim.caseworker_effects.to_csv(truth / "caseworker_effects.csv", index=False)
    (truth / "scenario.yaml").write_text(yaml.safe_dump(scenario, allow_unicode=True), encoding="utf-8")
    d = sim.dataset
    return (
        f"simulated {len(d.citizens)} citizens, {len(d.measurements)} measurements, "
        f"{len(d.interventions)} interventions into {where}; truth in {truth}"
    )
