"""The distributed path on a real Dask LocalCluster: features equal `build_features` row for row,
partitions hold whole citizens and are read by citizen range, xgboost.dask training logs and registers
a model the service can load, and nightly scoring writes one row per citizen.

One in-process LocalCluster (two workers) serves the module: its scheduler is also reached by address,
as `--dask ADDRESS` reaches a real one. The data is a small simulated dataset cut into many partitions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bip.errors import UserError
from features.build import build_features
from features.contract import read_dataset, write_dataset
from features.dataset import Dataset
from features.distributed import (
    ParquetSource,
    StoreSource,
    dask_client,
    feature_frame,
    parquet_source,
    partitioned_features,
)

pytestmark = pytest.mark.xdist_group("dask")

CITIZENS, SEED, HOLDOUT_SEED = 500, 19, 20
PER_PARTITION = 100  # 5 partitions
MODEL = "bip-job-chance"


@dataclass(frozen=True)
class Simulated:
    folder: Path
    dataset: Dataset
    features: pd.DataFrame  # build_features of the whole dataset, in memory


def simulated_parquet(folder: Path, seed: int) -> Simulated:
    from simulator.simulation import load_scenario, simulate_to_folder

    simulate_to_folder(folder, load_scenario(), citizens=CITIZENS, seed=seed, fmt="parquet")
    dataset, _ = read_dataset(folder)
    return Simulated(folder, dataset, build_features(dataset, horizon_months=12))


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Simulated:
    return simulated_parquet(tmp_path_factory.mktemp("dask") / "data", SEED)


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    with dask_client("local", processes=False, n_workers=2) as dask:
        yield dask


def bip(*args: str) -> str:
    """A `bip` command in this process (so that it reaches the in-process scheduler by address)."""
    from bip.cli import build_app

    result = CliRunner().invoke(build_app(), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def partitions(frame) -> list[pd.DataFrame]:
    import dask

    return list(dask.compute(*frame.to_delayed()))


# --- features ----------------------------------------------------------------------------------------


def test_features_on_dask_equal_build_features_row_for_row_weights_included(simulated, client):
    frame = feature_frame(ParquetSource(simulated.folder), 12, PER_PARTITION)
    assert frame.npartitions >= 5
    got = frame.compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(got, simulated.features, check_exact=True)
    # The pooled weights need the reduction over partitions: per partition they come out different.
    local = partitioned_features(ParquetSource(simulated.folder), 12, PER_PARTITION).compute()
    assert not np.array_equal(local["ipcw_weight"].to_numpy(), simulated.features["ipcw_weight"].to_numpy())


def test_a_citizens_whole_history_lies_in_one_partition(simulated, client):
    source = ParquetSource(simulated.folder)
    parts = partitions(partitioned_features(source, 12, PER_PARTITION))
    citizen_sets = [set(p["citizen_id"]) for p in parts]
    assert sum(map(len, citizen_sets)) == len(set().union(*citizen_sets)), "a citizen is in two partitions"
    rounds = simulated.dataset.measurements["citizen_id"].value_counts()
    for part in parts:
        counts = part["citizen_id"].value_counts()
        assert (counts == rounds.loc[counts.index]).all()
    ranges = source.ranges(PER_PARTITION)
    read = [source.read(r) for r in ranges]
    for table in ("citizens", "measurements", "interventions", "outcomes"):
        assert sum(len(d.table(table)) for d in read) == len(simulated.dataset.table(table)), table


def test_training_reductions_equal_the_in_memory_weights_cutoff_and_encoding(simulated, client):
    from training.data import with_weights
    from training.distributed import cutoff_of_counts, labelled_dates, learned_encoding, training_weights
    from training.validation import learn_encoding, out_of_time_cutoff

    base = feature_frame(ParquetSource(simulated.folder), 12, PER_PARTITION).persist()
    frame = training_weights(base, 12, "dropout").persist()
    expected = with_weights(simulated.features, 12, "dropout")
    got = frame.compute().reset_index(drop=True)
    np.testing.assert_array_equal(got["ipcw_weight"].to_numpy(), expected["ipcw_weight"].to_numpy())
    assert (got["ipcw_weight"] != simulated.features["ipcw_weight"]).any()  # not the pooled weights
    counts = [labelled_dates(p) for p in partitions(frame)]
    assert cutoff_of_counts(counts, 0.2) == out_of_time_cutoff(expected, 0.2)
    assert learned_encoding(frame).categories == learn_encoding(expected).categories


def test_the_store_is_read_by_citizen_range_queries_only(simulated, client, tmp_path):
    from sqlalchemy import event

    from features.store import _engine, ingest

    url = f"sqlite:///{tmp_path / 'store.db'}"
    ingest(simulated.dataset, url)
    engine = _engine(url)
    engine.dispose()  # new connections from here on, each traced
    statements: list[str] = []
    event.listen(engine, "connect", lambda connection, _: connection.set_trace_callback(statements.append))
    frame = feature_frame(StoreSource(url), 12, PER_PARTITION)
    pd.testing.assert_frame_equal(frame.compute().reset_index(drop=True), simulated.features, check_exact=True)
    reads = {
        table: [s for s in statements if s.lstrip().upper().startswith("SELECT") and f"FROM {table}" in s]
        for table in ("citizens", "measurements", "interventions", "outcomes")
    }
    for table, selects in reads.items():
        ranged = [s for s in selects if f"{table}.citizen_id >=" in s or f"{table}.citizen_id <" in s]
        whole = [s for s in selects if "row_number" not in s.lower() and s not in ranged]
        assert not whole, f"{table} read without a citizen range: {whole[0]}"
        assert len(ranged) >= frame.npartitions, table  # one query per partition (and pass)
    # The partition bounds come from one numbered query, not a fetch of every id.
    assert sum("row_number" in s.lower() for s in statements) == 1


def test_features_from_the_store_equal_build_features_on_sqlite_and_postgresql(simulated, client, store_url):
    """The partitioned reader on the production store too; ids whose byte order differs from a
    case-insensitive order (c10, C2, c2) land in partitions of one citizen each, none lost or doubled."""
    from conftest import small_dataset

    from features.store import ingest

    small = small_dataset()
    ingest(small, store_url)
    got = feature_frame(StoreSource(store_url), 12, 1)
    assert got.npartitions == len(small.citizens)
    got = got.compute()
    expected = build_features(small, horizon_months=12)
    assert sorted(got["measurement_id"]) == sorted(expected["measurement_id"])
    by_id = got.set_index("measurement_id").loc[expected["measurement_id"]]
    np.testing.assert_array_equal(by_id["citizen_id"].to_numpy(), expected["citizen_id"].to_numpy())
    np.testing.assert_array_equal(by_id["label"].to_numpy(), expected["label"].to_numpy())
    ingest(simulated.dataset, store_url)
    frame = feature_frame(StoreSource(store_url), 12, PER_PARTITION)
    whole = frame.compute()
    whole = whole[~whole["citizen_id"].isin(small.citizens["citizen_id"])].reset_index(drop=True)
    # All but the pooled weight, whose Kaplan-Meier curve now also counts the three small citizens.
    pd.testing.assert_frame_equal(
        whole.drop(columns="ipcw_weight"), simulated.features.drop(columns="ipcw_weight"), check_exact=True
    )


# --- training and scoring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trained:
    home: Path
    tracking_uri: str
    outcome: object


@pytest.fixture(scope="module")
def trained(simulated, client, tmp_path_factory) -> Trained:
    from training.config import TrainConfig
    from training.distributed import train_on_dask

    home = tmp_path_factory.mktemp("dask-home")
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    # One share for the linear part, so that the registered model is a blend whatever the data choose.
    config = TrainConfig(
        xgboost_grid=({"max_depth": 3, "learning_rate": 0.1},), max_rounds=80, seed=SEED, linear_shares=(0.5,)
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        outcome = train_on_dask(
            client,
            ParquetSource(simulated.folder),
            tracking_uri,
            home / "mlartifacts",
            "bip-job-chance",
            MODEL,
            config,
            citizens_per_partition=PER_PARTITION,
        )
    return Trained(home, tracking_uri, outcome)


def test_dask_training_logs_a_run_and_registers_a_loadable_champion(trained):
    from mlflow import MlflowClient

    from training.model import JobChanceModel, load_model

    tracking = MlflowClient(tracking_uri=trained.tracking_uri, registry_uri=trained.tracking_uri)
    run = tracking.get_run(trained.outcome.run_id)
    assert run.info.run_name == "train-dask" and run.info.status == "FINISHED"
    assert run.data.params["engine"] == "dask" and int(run.data.params["partitions"]) >= 5
    assert run.data.tags["champion_set"] == "True"
    assert {"oot_roc_auc", "oot_ece", "valid_roc_auc", "calibration_a"} <= set(run.data.metrics)
    # valid_* are measured on citizens of their own (`citizen_part`), whom nothing was chosen on.
    assert run.data.metrics["valid_labelled_rows"] > 0
    assert "validation citizens" in run.data.params["validation"]
    version = tracking.get_model_version_by_alias(MODEL, "champion")
    assert version.run_id == run.info.run_id
    model = load_model(f"models:/{MODEL}@champion", trained.tracking_uri)
    assert isinstance(model, JobChanceModel) and model.calibration == trained.outcome.model.calibration
    # The champion's recipe, as in memory: the trees blended with the linear part, fitted on every row here.
    assert model.linear_share == 0.5 and model.linear is not None
    np.testing.assert_array_equal(model.linear.slope, trained.outcome.model.linear.slope)
    assert {trained.outcome.params["linear_share"], trained.outcome.params["linear_c"]} == {0.5, 0.001}
    assert 0 < int(run.data.params["linear_rows_choice"]) < int(run.data.params["linear_rows_refit"])
    artifacts = {a.path for a in tracking.list_artifacts(run.info.run_id)}
    assert {"feature_catalogue.csv", "grid_search.csv", "reliability_oot.png"} <= artifacts


def test_dask_model_ranks_held_out_citizens_well_and_is_close_to_the_in_memory_fit(trained, simulated, tmp_path):
    from training import evaluation
    from training.config import TrainConfig
    from training.data import labelled_rows, with_weights
    from training.learners import xgboost_learner
    from training.train import fit_job_chance_model

    model = trained.outcome.model
    other = simulated_parquet(tmp_path / "other", HOLDOUT_SEED)  # citizens the model never saw
    frame = with_weights(other.features, 12, "dropout")
    rows = labelled_rows(frame)
    p = model.probability(model.matrix(frame))
    auc = evaluation.metric_values(frame["label"][rows], p[rows], frame["ipcw_weight"][rows])["roc_auc"]
    assert auc > 0.7, auc
    # The same data, parameters and calibration fitted in memory: a close model, not the same trees
    # (row and column subsampling draw differently on two workers, as another seed would).
    config = TrainConfig(seed=SEED)
    in_memory = fit_job_chance_model(
        with_weights(simulated.features, 12, "dropout"), trained.outcome.params, model.calibration, config
    )
    p_memory = in_memory.probability(in_memory.matrix(frame))
    assert np.corrcoef(p, p_memory)[0, 1] > 0.85
    # The linear part is the same fit of the same rows, whatever their order across partitions.
    assert in_memory.linear_share == model.linear_share == 0.5
    np.testing.assert_allclose(model.linear.slope, in_memory.linear.slope, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.linear.intercept, in_memory.linear.intercept, rtol=1e-4)
    assert abs(p.mean() - p_memory.mean()) < 0.01 and np.mean(np.abs(p - p_memory)) < 0.04
    # Every tree parameter, the monotone constraints included, is the in-memory learner's.
    learner = xgboost_learner("m", model.catalogue["monotone"].tolist(), model.feature_names, config)
    X = model.matrix(simulated.features.head(50))
    reference, _ = learner.fit(X, np.arange(50) % 2, np.ones(50), {**trained.outcome.params, "n_estimators": 1}, None)
    assert tree_params(model.booster) == tree_params(reference.booster)


def test_xgboost_dask_fits_the_rows_labels_and_weights_the_in_memory_learner_fits(simulated, client):
    from training.config import TrainConfig
    from training.data import labelled_rows, with_weights
    from training.distributed import labelled_part, learned_encoding, refit, training_weights
    from training.learners import xgboost_learner
    from training.model import encode
    from training.validation import learn_encoding

    config = TrainConfig(seed=SEED)
    full = training_weights(feature_frame(ParquetSource(simulated.folder), 12, PER_PARTITION), 12, "dropout")
    # Without subsampling the two fits differ only by the quantile sketch (one process, two workers).
    exact = {"max_depth": 3, "learning_rate": 0.1, "n_estimators": 30, "subsample": 1.0, "colsample_bytree": 1.0}
    booster = refit(client, full.map_partitions(labelled_part, meta=full._meta), learned_encoding(full), exact, config)
    frame = with_weights(simulated.features, 12, "dropout")
    encoding, rows = learn_encoding(frame), labelled_rows(frame)
    X = encode(frame, encoding.numeric, encoding.categories)
    learner = xgboost_learner("m", encoding.catalogue["monotone"].tolist(), encoding.feature_names, config)
    y, w = frame["label"].to_numpy(float), frame["ipcw_weight"].to_numpy(float)
    reference, _ = learner.fit(X[rows], y[rows], w[rows], exact, None)
    margin, expected = booster.inplace_predict(X, predict_type="margin"), reference.margin(X)
    assert np.corrcoef(margin, expected)[0, 1] > 0.98
    assert np.mean(np.abs(margin - expected)) < 0.25


def test_the_training_periods_citizens_fall_into_disjoint_parts_of_about_their_share():
    from training.distributed import CITIZEN_PARTS, citizen_part

    ids = pd.Series([f"C{k:06d}" for k in range(20_000)])
    parts = citizen_part(ids, 0.2, SEED)
    shares = pd.Series(parts).value_counts(normalize=True)
    assert set(shares.index) == set(CITIZEN_PARTS)
    assert shares["choose"] == pytest.approx(0.2, abs=0.01) and shares["validate"] == pytest.approx(0.2, abs=0.01)
    # The same citizens whatever the partitioning: a citizen's part depends on its id and the seed only.
    np.testing.assert_array_equal(citizen_part(ids.iloc[::-1], 0.2, SEED), parts[::-1])
    assert (citizen_part(ids, 0.2, SEED + 1) != parts).any()


def tree_params(booster) -> dict:
    import json

    config = json.loads(booster.save_config())["learner"]
    updater = config["gradient_booster"]["tree_train_param"]
    keep = ("monotone_constraints", "min_child_weight", "subsample", "colsample_bytree", "reg_lambda", "max_bin")
    return {
        "objective": config["objective"]["name"],
        **{k: updater[k] for k in keep if k in updater},
        "max_bin": config["gradient_booster"].get("hist_train_param", {}).get("max_bin"),
    }


def test_cli_features_and_predict_on_a_scheduler_address(trained, simulated, client, tmp_path, monkeypatch):
    address = client.scheduler.address
    monkeypatch.setenv("BIP_HOME", str(trained.home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.tracking_uri)
    for name in ("MLFLOW_RUN_ID", "BIP_MODEL_NAME", "BIP_MODEL_ALIAS"):
        monkeypatch.delenv(name, raising=False)
    data = str(simulated.folder)
    out = tmp_path / "features.parquet"
    args = ("--data", data, "--dask", address, "--partition-citizens", str(PER_PARTITION))
    assert f"{len(simulated.features)} feature rows" in bip("features", "--out", str(out), *args)
    pd.testing.assert_frame_equal(pd.read_parquet(out), simulated.features, check_exact=True, check_dtype=False)

    scores = tmp_path / "scores"
    output = bip("predict", "--out", str(scores), *args)
    scored = pd.read_parquet(scores)
    measured = simulated.dataset.measurements["citizen_id"].nunique()
    assert f"{measured} citizens scored" in output
    assert len(scored) == measured and scored["citizen_id"].is_unique
    latest = simulated.features.drop_duplicates("citizen_id", keep="last").reset_index(drop=True)
    assert list(scored["measurement_id"]) == list(latest["measurement_id"])
    model = trained.outcome.model
    np.testing.assert_allclose(scored["probability"], model.probability(model.matrix(latest)), rtol=1e-12)
    assert scored["indicator_1"].notna().all()


# --- user mistakes -------------------------------------------------------------------------------------------


def test_an_unreachable_scheduler_is_a_user_error():
    with (
        pytest.raises(UserError, match="cannot reach the Dask scheduler"),
        dask_client("tcp://127.0.0.1:9", timeout="1s"),
    ):
        pass


def test_the_cli_names_a_bad_scheduler_address_in_one_line(simulated, tmp_path):
    env = {**os.environ, "BIP_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-c", "from bip.cli import main; main()"]
    args = ["train", "--data", str(simulated.folder), "--dask", "http://scheduler:8786"]
    result = subprocess.run(command + args, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "cannot reach the Dask scheduler" in result.stderr


def test_a_csv_folder_is_refused_with_the_way_out(simulated, tmp_path):
    write_dataset(simulated.dataset, tmp_path / "csv", fmt="csv")
    with pytest.raises(UserError, match="export --format parquet"):
        parquet_source(tmp_path / "csv")


def test_the_linear_part_learns_from_a_sample_of_whole_citizens_above_its_row_limit(simulated, client):
    from training.config import TrainConfig
    from training.distributed import (
        citizen_bucket,
        labelled_part,
        learned_encoding,
        linear_fits,
        linear_inputs,
        training_weights,
    )

    config = TrainConfig(seed=SEED)
    full = training_weights(feature_frame(ParquetSource(simulated.folder), 12, PER_PARTITION), 12, "dropout")
    labelled = full.map_partitions(labelled_part, meta=full._meta)
    encoding = learned_encoding(full)
    frame = labelled.compute()
    (whole,), all_rows = linear_fits(labelled, encoding, config, (0.001,))
    (part,), sampled = linear_fits(labelled, encoding, config, (0.001,), max_rows=len(frame) // 3)
    assert all_rows == len(frame) and 0.15 * len(frame) < sampled < 0.55 * len(frame)
    assert not np.allclose(whole.slope, part.slope)
    # The sample is whole citizens, by a hash of the id: every row of a sampled citizen, none of the others'.
    chosen = citizen_bucket(frame["citizen_id"], config.seed + 1) < 1 / 3
    _, y, _ = linear_inputs(frame, encoding, 1 / 3, config.seed)
    assert 0 < len(y) == chosen.sum() < len(frame)
    np.testing.assert_array_equal(y, frame["label"].to_numpy(float)[chosen])
    assert not frame["citizen_id"][~chosen].isin(set(frame["citizen_id"][chosen])).any()


def test_a_contract_error_in_a_partition_names_the_partition_not_its_citizens(simulated, tmp_path):
    """A partition's bounds are citizens' ids: the message counts partitions instead, and names table,
    row and column as every contract error does."""
    from features.contract_problems import ContractError

    folder = tmp_path / "bad"
    measurements = simulated.dataset.measurements.copy()
    last = measurements.index[measurements["citizen_id"] == measurements["citizen_id"].max()][0]
    measurements.loc[last, "cit_job_search"] = 9  # the last citizen's: the last partition
    write_dataset(replace(simulated.dataset, measurements=measurements), folder, fmt="parquet")
    source = ParquetSource(folder)
    ranges = source.ranges(PER_PARTITION)
    with pytest.raises(ContractError) as refused:
        source.read(ranges[-1])
    message = str(refused.value)
    assert f"partition {len(ranges)} of {len(ranges)}" in message and "cit_job_search" in message
    bounds = [r.first for r in ranges if r.first] + [r.stop for r in ranges if r.stop]
    assert bounds and not any(b in message for b in bounds)
