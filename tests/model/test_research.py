"""The research analyses recover the simulator's planted effects, move when they change, and render.

Recovery: an estimate recovers a planted value when the value lies inside the estimate's 95 %
interval (z = 1.96), on one seed fixed before these checks were written (2013, the seed of the
docs' tables). Each such check misses by chance one seed in twenty; how often each interval holds
its planted value over many seeds, and each estimator's bias, is measured by
`benchmarks/bench_research_coverage.py` (`benchmarks/RESULTS-research-coverage.md`). Where an
estimator is biased by design, the test asserts what holds despite the bias (progression: the
answer scale's floor, see `test_progression_recovers_planted_order_sign_and_size`); where this seed
misses by chance an estimate the benchmark finds unbiased, it asserts what the seed can show and
says so (a change of caseworker on the default scenario).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import typer
from relabelled_ids import relabelled
from typer.testing import CliRunner

from experiments.analyses import (
    ResearchConfig,
    caseworker_practice_analysis,
    fit_hazard_models,
    indicator_analysis,
    practice_spec,
    research_data,
)
from experiments.caseworker_effects import caseworker_effect_analysis
from experiments.commands import report
from experiments.mixed import fit_random_intercept_logit
from experiments.person_rounds import LATENT_INDICATORS, best_linear_latent, day_number, fit_logit, z_value
from experiments.progression import mean_indicator_change, progression_analysis
from experiments.report import DEFAULT_EXPERIMENT
from features.catalogue import PATTERNS
from features.contract import write_dataset
from simulator.calibration import effective_caseworker_scenario
from simulator.planted import CHANGED, PRACTICE_PLANTED, planted_progression
from simulator.simulation import load_scenario, merge, simulate

CITIZENS, SEED = 4000, 2013
Z = z_value(0.95)
CONFIG = ResearchConfig(draws=50)


class Scenario:
    """One simulated scenario with its research data and hazard models, built once per module."""

    def __init__(self, scenario: dict) -> None:
        self.scenario = scenario
        self.sim = simulate(citizens=CITIZENS, seed=SEED, scenario=scenario, truth_draws=0)
        self.data = research_data(self.sim.dataset)
        self.models = fit_hazard_models(self.data, practice_spec(CONFIG), nodes=CONFIG.quadrature_nodes)

    @property
    def hazard(self) -> dict:
        return self.scenario["hazard"]


@pytest.fixture(scope="module")
def default() -> Scenario:
    return Scenario(load_scenario())


@pytest.fixture(scope="module")
def changed() -> Scenario:
    return Scenario(merge(load_scenario(), CHANGED))


def covers(estimate: float, se: float, planted: float) -> bool:
    return abs(estimate - planted) <= Z * se


def practice(s: Scenario) -> pd.DataFrame:
    return caseworker_practice_analysis(s.data, s.models, CONFIG).table("practice_effects").set_index("term")


def indicator_log_odds(s: Scenario) -> pd.DataFrame:
    metrics = indicator_analysis(s.data, s.models, CONFIG).metrics
    return pd.DataFrame(
        {
            "log_odds": [metrics[f"log_odds_{c}"] for c in LATENT_INDICATORS],
            "se": [metrics[f"se_{c}"] for c in LATENT_INDICATORS],
        },
        index=list(LATENT_INDICATORS),
    )


# --- the data the hazard models use ------------------------------------------------------------------


def test_person_rounds_hold_only_rounds_with_a_known_outcome(default):
    rounds, window = default.data.rounds, default.data.window_days
    outcomes = default.sim.dataset.outcomes.set_index("citizen_id")
    t = day_number(rounds["measured_on"])
    event_day = day_number(outcomes["event_on"].reindex(rounds["citizen_id"]).to_numpy())
    followed = day_number(outcomes["followed_until"].reindex(rounds["citizen_id"]).to_numpy())
    event = rounds["event"].to_numpy() == 1
    assert 85 <= window <= 97  # measured from the data: about a quarter
    assert np.all((event_day[event] > t[event]) & (event_day[event] <= t[event] + window))
    assert np.all(followed[~event] >= t[~event] + window)
    assert not np.any(event_day <= t)


def test_calibrated_levels_undo_the_attenuation_of_noisy_answers_on_synthetic_data():
    # Three correlated levels, the first with a strong effect and the others none; two readings of
    # each with independent errors (the citizen's shifted per person, as in the simulator).
    rng = np.random.default_rng(7)
    n, weights = 40000, np.array([0.6, 0.0, 0.0])
    person = rng.normal(0, 0.6, n)
    levels = person[:, None] + rng.normal(0, 0.5, (n, 3))
    citizen = levels + rng.normal(0, 0.3, n)[:, None] + rng.normal(0, 0.5, (n, 3))
    caseworker = levels + rng.normal(0, 0.45, (n, 3))
    other = person + rng.normal(0, 1.0, n)  # a covariate that also reads the person
    y = (rng.random(n) < 1 / (1 + np.exp(-(-2.0 + levels @ weights + 0.2 * other)))).astype(float)

    def fit(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = pd.DataFrame(np.column_stack([np.ones(n), columns, other]))
        X.columns = ["const", *[f"x{k}" for k in range(columns.shape[1])], "other"]
        result = fit_logit(y, X, np.arange(n))
        return result.params.to_numpy()[1:4], result.se.to_numpy()[1:4]

    raw, raw_se = fit(caseworker)
    assert raw[0] < weights[0] - Z * raw_se[0]  # one noisy reading: attenuated, the others take weight
    calibrated, se = fit(best_linear_latent(citizen, caseworker, other[:, None]))
    assert (np.abs(calibrated - weights) <= Z * se).all(), (calibrated.round(3), se.round(3))


def test_random_intercept_logit_recovers_sd_and_coefficients_of_synthetic_data():
    rng = np.random.default_rng(5)
    n, groups = 20000, 200
    X = pd.DataFrame({"const": 1.0, "x": rng.normal(size=n)})
    group = rng.integers(0, groups, n)
    effect = rng.normal(0, 0.6, groups)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-2.5 + 0.4 * X["x"].to_numpy() + effect[group])))).astype(float)
    fit = fit_random_intercept_logit(y, X, group)
    low, high = fit.sd_interval()
    assert low <= 0.6 <= high
    assert abs(fit.fixed["x"] - 0.4) <= 3 * fit.se["x"]
    shrunk = fit.effects.set_index("group")["posterior_mean"].sort_index()
    assert np.corrcoef(shrunk.to_numpy(), effect[shrunk.index.astype(int)])[0, 1] > 0.5
    assert shrunk.std() < 0.6  # empirical Bayes shrinks towards 0


# --- 1. indicators -------------------------------------------------------------------------------------


def test_indicator_odds_ratios_recover_planted_weights(default):
    estimates = indicator_log_odds(default)
    planted = pd.Series(default.hazard["indicators"]).reindex(estimates.index)
    missed = [
        c for c in estimates.index if not covers(estimates.loc[c, "log_odds"], estimates.loc[c, "se"], planted[c])
    ]
    assert missed == []
    assert estimates["log_odds"].corr(planted, method="spearman") > 0.6


def test_indicator_odds_ratios_move_with_planted_weights(default, changed):
    before, after = indicator_log_odds(default), indicator_log_odds(changed)
    for code in ("health_coping", "network_support"):
        planted = changed.hazard["indicators"][code]
        assert covers(after.loc[code, "log_odds"], after.loc[code, "se"], planted), code
    assert after.loc["network_support", "log_odds"] - before.loc["network_support", "log_odds"] > 0.1
    assert after.loc["health_coping", "log_odds"] - before.loc["health_coping", "log_odds"] < -0.1


# --- 2. caseworker belief and practice --------------------------------------------------------------------
#
# The simulator plants each effect conditional on the citizen's caseworker (a random intercept), so
# the random-intercept estimates are the ones compared with the planted values. The plain logit
# estimates the effect averaged over caseworkers, which is smaller by about 1/sqrt(1 + 0.35 sd^2):
# at the changed scenario's sd 0.9 it came out 0.55 for a planted belief of 0.60 (random intercept:
# 0.61), see benchmarks/RESULTS-research-coverage.md.


def random_intercept(table: pd.DataFrame, term: str) -> tuple[float, float]:
    return float(table.loc[term, "random_intercept_log_odds"]), float(table.loc[term, "random_intercept_se"])


def test_practice_effects_recover_planted_values(default):
    table = practice(default)
    for term in ("caseworker_belief", "orientation_high"):
        assert covers(*random_intercept(table, term), default.hazard[PRACTICE_PLANTED[term]]), term
    # A change of caseworker rests on few events (about 26 in the rounds right after a change). On
    # this seed its estimate lies 2.0 standard errors from the planted -0.248 (-0.80, se 0.27), just
    # outside the 95 % interval; over the benchmark's seeds the interval holds the planted value in
    # 98 % of them with a bias of -0.05 (0.2 se), so this is the one miss in twenty, not a biased estimator.
    # What this seed can show is the planted direction, at 95 %.
    estimate, se = random_intercept(table, "caseworker_changed")
    assert estimate + Z * se < 0
    # Relative change = exp(log-odds) - 1, the figure BIP reports, printed beside BIP's.
    row = table.loc["caseworker_belief"]
    assert row["relative_change_pct"] == pytest.approx(100 * (math.exp(row["log_odds"]) - 1))
    assert row["random_intercept_pct"] == pytest.approx(100 * (math.exp(row["random_intercept_log_odds"]) - 1))
    assert row["bip_pct"] == 33.0


def test_practice_effects_move_to_changed_planted_values(default, changed):
    """Belief 0.285 -> 0.6, orientation 0.278 -> 0 and a change of caseworker -0.248 -> +0.4."""
    before, after = practice(default), practice(changed)
    for term, key in PRACTICE_PLANTED.items():
        planted, old = changed.hazard[key], default.hazard[key]
        estimate, se = random_intercept(after, term)
        assert covers(estimate, se, planted), term
        assert abs(estimate - planted) < abs(estimate - old), term  # moved to the new value
        assert np.sign(estimate - random_intercept(before, term)[0]) == np.sign(planted - old), term


# --- 3. interventions and progression -----------------------------------------------------------------------


# The answers are rounded and bounded by 1 and 5; the latent indicators the simulator moves are not
# (and the planted expected change ignores the latent's own bounds, 0.5 and 5.5). Near the floor a
# planted decline shows only in part in the answers, so the measured change is the planted change
# shrunk towards 0 by design: over 50 seeds (benchmarks/RESULTS-research-coverage.md) the 95 %
# interval of the decline without intervention never held the planted -0.180 (mean estimate -0.160).
# The interval is no test of the planted value here. What holds: the planted order, the planted sign
# at 95 % where the planted change is clearly non-zero, and a distance from the planted value of at
# most FLOOR_BIAS of it beyond the 95 % sampling error. FLOOR_BIAS is the largest mean
# |estimate - planted| / |planted| of any pattern in either scenario of that benchmark (0.15, other
# types only on the default scenario), rounded up; it is a property of the scale, measured on seeds
# apart from this one, not a fit to this seed's miss.
FLOOR_BIAS = 0.2


@pytest.mark.parametrize("which", ["default", "changed"])
def test_progression_recovers_planted_order_sign_and_size(which, request):
    s = request.getfixturevalue(which)
    metrics = progression_analysis(s.data, CONFIG).metrics
    estimate = pd.Series({p: metrics[f"change_{p}"] for p in PATTERNS})
    se = pd.Series({p: metrics[f"change_{p}_se"] for p in PATTERNS})
    planted = planted_progression(s.scenario, s.data.features, s.data.window_days).reindex(list(PATTERNS))
    assert list(estimate.sort_values().index) == list(planted.sort_values().index)
    clear = planted.abs() > 0.04
    assert clear.sum() >= 2
    assert ((estimate[clear] - Z * se[clear]) * np.sign(planted[clear]) > 0).all()
    allowed = FLOOR_BIAS * planted.abs() + Z * se
    assert ((estimate - planted).abs() <= allowed).all(), (estimate - planted).round(3).to_dict()
    assert len(mean_indicator_change(s.data.features, s.data.window_days)) > 10000


def test_progression_reports_pattern_shares_and_who_stands_still(default):
    analysis = progression_analysis(default.data, CONFIG)
    shares = analysis.table("pattern_shares").set_index("pattern")["share"]
    assert shares.sum() == pytest.approx(1.0)
    observed = default.data.features["pattern_3m"].astype(str).value_counts(normalize=True)
    assert shares.to_dict() == pytest.approx(observed.to_dict())
    still = analysis.metrics
    assert still["still_or_back_low"] < still["still_or_back"] < still["still_or_back_high"]


# --- 4. caseworker effects -----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["default", "changed"])
def test_caseworker_sd_recovers_planted_sd(which, request):
    s = request.getfixturevalue(which)
    fit = s.models.mixed
    assert covers(
        math.log(fit.sd), float(np.sqrt(fit.cov.loc["log_sd", "log_sd"])), math.log(s.hazard["caseworker_effect_sd"])
    )


def test_effective_caseworker_share_matches_the_simulated_what_if(default):
    metrics = caseworker_effect_analysis(default.data, default.models, CONFIG).metrics
    what_if = effective_caseworker_scenario(default.scenario, CONFIG.effective_quantile)
    simulated = simulate(citizens=CITIZENS, seed=SEED, scenario=what_if, truth_draws=0).dataset.outcomes
    target = float((simulated["event"] != "none").mean())
    # The what-if run is itself a sample of CITIZENS: its binomial error adds to the estimate's.
    se = math.sqrt(metrics["effective_share_se"] ** 2 + target * (1 - target) / CITIZENS)
    assert covers(metrics["effective_share"], se, target)
    assert metrics["effective_share"] > metrics["projected_share"] > 0.5 * metrics["observed_share"]


# --- the report --------------------------------------------------------------------------------------------------


@pytest.fixture
def report_run(tmp_path, monkeypatch):
    """`bip report` on a small simulated dataset, with a temporary home and SQLite tracking store."""
    data = tmp_path / "data"
    write_dataset(relabelled(simulate(citizens=400, seed=11, truth_draws=0).dataset), data)
    monkeypatch.setenv("BIP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    app = typer.Typer()
    app.command()(report)
    app.command("noop")(lambda: None)  # two commands: Typer keeps the command name
    out = tmp_path / "report"
    options = ["--folds", "2", "--n-boot", "10", "--draws", "20", "--n-jobs", "1"]
    result = CliRunner().invoke(app, ["report", "--data", str(data), "--out", str(out), *options])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, f"sqlite:///{tmp_path / 'mlflow.db'}"


def files_naming(folder: Path, ids: list[str], skip: Path | None = None) -> list[str]:
    """Files under `folder` (but not under `skip`) whose bytes hold any of `ids`."""
    needles = [i.encode() for i in ids]
    return [
        str(path)
        for path in folder.rglob("*")
        if path.is_file() and skip not in path.parents and any(n in path.read_bytes() for n in needles)
    ]


def test_report_renders_every_table_and_plot_and_logs_each_analysis(report_run):
    out, tracking_uri = report_run
    html = (out / "report.html").read_text(encoding="utf-8")
    keys = ["indicators", "caseworker_practice", "progression", "caseworker_effects", "model_comparison"]
    keys.append("learning_curve")
    for key in keys:
        assert f'<section id="{key}">' in html
        files = sorted(p.name for p in (out / key).iterdir())
        tables, plots = [f for f in files if f.endswith(".csv")], [f for f in files if f.endswith(".png")]
        assert tables and plots and "findings.md" in files
        for name in tables:
            assert f'id="{key}-{name[:-4]}"' in html
        for name in plots:
            assert f'id="{key}-{name[:-4]}"' in html
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == sum(len(list((out / k).glob("*.png"))) for k in keys) >= 7
    assert all(len(image) > 5000 for image in images)
    assert html.count('<table class="dataframe data">') >= 9
    for model in ("background_only", "logit", "hist_gradient_boosting", "xgboost", "xgboost_monotone", "plain"):
        assert model in html
    assert "BIP" in html and "28.45" in html
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    children = {r.data.tags.get("analysis"): r for r in runs if "analysis" in r.data.tags}
    assert sorted(children) == sorted(keys)
    for key, run in children.items():
        assert run.data.metrics, key
        logged = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert logged == {p.name for p in (out / key).iterdir()}, key
    parent = next(r for r in runs if "analysis" not in r.data.tags)
    assert "report.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    # No citizen, measurement or caseworker is named: not in the report, its files, the tracking database
    # or MLflow's artifacts (a caseworker's effect is personal data of the caseworker too). The scan
    # finds the ids where they are, so a scan that reads nothing cannot pass.
    root = out.parent
    ids = [
        value
        for table, column in (
            ("citizens", "citizen_id"),
            ("caseworkers", "caseworker_id"),
            ("measurements", "measurement_id"),
        )
        for value in pd.read_csv(root / "data" / f"{table}.csv", dtype=str)[column]
    ]
    assert files_naming(root / "data", ids)
    assert files_naming(root, ids, skip=root / "data") == []


def test_caseworker_effects_say_not_estimable_where_the_random_intercept_does_not_converge():
    """150 citizens (seed 7): 14 events over 161 caseworkers. `bip report` stopped on the model's
    ValueError; now analysis 4 says it is not estimable, with the size of the data, and estimates nothing."""
    data = research_data(simulate(150, seed=7, truth_draws=0).dataset)
    config = ResearchConfig()

    models = fit_hazard_models(data, practice_spec(config), nodes=config.quadrature_nodes)
    analysis = caseworker_effect_analysis(data, models, config)

    assert models.mixed is None and models.logit is not None
    assert analysis.findings[0].startswith("Not estimable on these data")
    assert not analysis.metrics and not analysis.tables and analysis.params["estimable"] is False
