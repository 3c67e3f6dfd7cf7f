"""Training and nightly scoring on Dask (xgboost.dask), for data that outgrows one machine.

The feature rows come from `features.distributed.feature_frame`: the same rows as in memory. What
looks across citizens is computed as a reduction over partitions and then applied per partition,
so it equals the in-memory value: the dropout IPCW weights (the extract date and the Kaplan–Meier
curve of dropout, as `features.labels.follow_up_weights`), the out-of-time cutoff
(`out_of_time_cutoff`) and the one-hot categories (`learn_encoding`).

The validation differs from `training.train` in one way, because nested cross-validation would fit
folds x grid points x boosters on the whole register: the training period's citizens are split once,
by a hash of the citizen id (so any partitioning gives the same split), into fitting citizens (the
rest), choosing citizens (`inner_share`) and validation citizens (another `inner_share`). The grid
point and the number of trees are chosen by early stopping on the choosing citizens, and Platt
calibration is fitted on their margins; the `valid_*` metrics are measured on the validation
citizens, whom nothing was chosen on, and the `oot_*` metrics on the out-of-time rows. The
registered model is refitted on every labelled row with the chosen parameters and that calibration,
and is the same `JobChanceModel` that the service loads.

The early-stopped fit is `training.learners.boosted`, the one the in-memory learner uses, here with
xgboost.dask's `train` bound to the client; only the matrices differ (a DaskQuantileDMatrix per set).
The champion's linear part (training/linear.py) is fitted in the driver process, on the fitting
citizens' rows (its choice) and on every labelled row (the refit), at most `LINEAR_ROWS` rows each:
above that, a sample of whole citizens by another seeded hash of the id. Its penalty and share are
chosen as in memory, on the choosing citizens: C by the linear part's own weighted log loss, then the
share in `config.linear_shares` by the blend's; Platt calibration is fitted on the blended margins.
The registered model is the same blend of trees and linear part as `bip train`'s champion.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bip.errors import UserError
from features.distributed import (
    CITIZENS_PER_PARTITION,
    ParquetSource,
    StoreSource,
    partition_results,
    partitioned_features,
    weighted_features,
)
from features.feature_catalogue import ID_COLUMNS
from features.labels import censoring_counts, dropout_weights, follow_up_ends
from training import evaluation
from training.calibration import calibrated, platt, ranking
from training.config import CHAMPION_CANDIDATE, TrainConfig
from training.data import fingerprint, follow_up_columns, labelled_rows
from training.evaluation import headline
from training.learners import BLEND_CHOSEN, boosted, tree_weights, xgboost_params
from training.linear import LinearPart, fit_linear_path, mixed, weighted_log_loss
from training.model import JobChanceModel, encode, learn_categories, model_catalogue, model_inputs
from training.tracking import (
    experiment_id,
    log_model,
    register_champion_candidate,
    started_run,
    tracking_client,
)
from training.train import champion_model
from training.validation import Encoding, cutoff_of_counts, labelled_dates

if TYPE_CHECKING:
    import dask.dataframe as dd
    import xgboost as xgb
    from distributed import Client

HASH_BUCKETS = 1_000_000
# The most rows the linear part is fitted on in the driver process: 100,000 rows of ~160 columns take
# about 0.4 GB there while fitting (float64 copies); 10x BIP's fitting citizens have fewer.
LINEAR_ROWS = 100_000


# --- the cross-citizen pieces, as reductions ------------------------------------------------------------


def latest_end(frame: pd.DataFrame) -> float:
    """The latest end of follow-up without an event in a partition (NaN when there is none): the
    extract day is the maximum over partitions."""
    day, time_, event, _ = follow_up_columns(frame)
    end, ended = follow_up_ends(day, time_, event)
    return float(end[ended].max()) if ended.any() else math.nan


def dropout_counts(frame: pd.DataFrame, extract: float) -> pd.DataFrame:
    """A partition's censoring counts of the dropout curve: follow-up that ended before the extract."""
    day, time_, event, _ = follow_up_columns(frame)
    end, ended = follow_up_ends(day, time_, event)
    times, at_time, ended_at = censoring_counts(time_, ended & (end < extract))
    return pd.DataFrame({"time": times, "rows": at_time, "ended": ended_at})


def with_dropout_weights(
    frame: pd.DataFrame, horizon_months: int, extract: float, curve: tuple[np.ndarray, np.ndarray]
) -> pd.DataFrame:
    """A partition with the weights `features.labels.follow_up_weights` gives the whole dataset, from
    the extract day and dropout curve of all partitions."""
    day, time_, _, label = follow_up_columns(frame)
    return frame.assign(ipcw_weight=dropout_weights(day, time_, label, horizon_months, extract, curve))


def training_weights(frame: dd.DataFrame, horizon_months: int, weighting: str) -> dd.DataFrame:
    """`frame` with the `ipcw_weight` that `training.data.with_weights` gives the whole dataset."""
    from features.distributed import curve_of

    if weighting == "pooled":
        return frame
    if weighting != "dropout":
        raise ValueError(f"unknown weighting {weighting!r}; choose from dropout, pooled")
    ends = [end for end in partition_results(frame, latest_end) if not math.isnan(end)]
    extract = max(ends) if ends else math.nan
    curve = curve_of(partition_results(frame, dropout_counts, extract)) if ends else (np.zeros(0), np.zeros(0))
    return frame.map_partitions(with_dropout_weights, horizon_months, extract, curve, meta=frame._meta)


def learned_encoding(frame: dd.DataFrame) -> Encoding:
    """`training.validation.learn_encoding` of the whole frame: the categories seen in any partition."""
    numeric, categorical = model_inputs(list(frame.columns))
    seen = partition_results(frame, learn_categories, categorical)
    categories = {c: sorted(set().union(*(part[c] for part in seen))) for c in categorical}
    return Encoding(numeric, categories, model_catalogue(numeric, categories))


CITIZEN_PARTS: tuple[str, ...] = ("choose", "validate", "fit")


def citizen_bucket(citizen_ids: pd.Series, seed: int) -> np.ndarray:
    """A number in [0, 1) per row from a seeded hash of its citizen id: the same for every partitioning."""
    key = f"{seed % 10**16:016d}"
    hashes = pd.util.hash_array(citizen_ids.to_numpy(dtype=object), hash_key=key)
    return (hashes % HASH_BUCKETS) / HASH_BUCKETS


def citizen_part(citizen_ids: pd.Series, share: float, seed: int) -> np.ndarray:
    """Each row's part of the training period by a seeded hash of its citizen id, so that every
    partitioning of the data splits the same citizens: about `share` of them "choose" (the grid point,
    early stopping, calibration), as many "validate" (the `valid_*` metrics), the rest "fit"."""
    bucket = citizen_bucket(citizen_ids, seed)
    return np.where(bucket < share, "choose", np.where(bucket < 2 * share, "validate", "fit"))


def labelled_part(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a partition that take part in fitting and evaluation (`labelled_rows`)."""
    return frame[labelled_rows(frame)]


def dated(frame: pd.DataFrame, cutoff: pd.Timestamp, before: bool) -> pd.DataFrame:
    """The rows measured before `cutoff` (`before`), or on or after it."""
    return frame[(frame["measured_on"] < cutoff).to_numpy() == before]


def citizens_of(frame: pd.DataFrame, part: str, share: float, seed: int) -> pd.DataFrame:
    """The rows of the citizens in `part` of `CITIZEN_PARTS` (see `citizen_part`)."""
    return frame[citizen_part(frame["citizen_id"], share, seed) == part]


def combined_fingerprint(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One `training.data.fingerprint` from those of the partitions: counts add up (a citizen lies in
    one partition), dates take the extremes, and the content hash is the hash of the partitions' hashes
    in citizen order (so it differs from the in-memory hash of the same rows)."""
    import hashlib

    out: dict[str, Any] = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        if key == "content_sha256":
            out[key] = hashlib.sha256("".join(values).encode()).hexdigest()
        elif isinstance(values[0], int | float):
            out[key] = sum(values)
        else:
            known = [v for v in values if v]
            out[key] = (min(known) if key.startswith("first") else max(known)) if known else ""
    return out


# --- xgboost.dask -------------------------------------------------------------------------------------------


def booster_params(monotone: Sequence[int], config: TrainConfig) -> dict[str, Any]:
    """The champion candidate's XGBoost parameters (`training.learners.xgboost_params`) without the thread
    count: xgboost.dask gives each worker its own."""
    return {k: v for k, v in xgboost_params(monotone, config).items() if k != "nthread"}


def matrix_frame(frame: pd.DataFrame, encoding: Encoding) -> pd.DataFrame:
    """The model matrix of a partition (`training.model.encode`) as a float32 frame with feature names."""
    return pd.DataFrame(encode(frame, encoding.numeric, encoding.categories), columns=encoding.feature_names)


def quantile_matrix(client: Client, frame: dd.DataFrame, encoding: Encoding, ref: Any = None) -> Any:
    """A DaskQuantileDMatrix of `frame`'s rows, labels and weights, binned as training bins (`ref`)."""
    from xgboost import dask as dxgb

    X = frame.map_partitions(matrix_frame, encoding, meta=matrix_frame(frame._meta, encoding))
    return dxgb.DaskQuantileDMatrix(
        client, X, frame["label"], weight=frame["ipcw_weight"], missing=np.nan, max_bin=64, ref=ref
    )


def margins(
    frame: pd.DataFrame, booster: xgb.Booster, encoding: Encoding, parts: Sequence[LinearPart] = ()
) -> pd.DataFrame:
    """Label, weight and the booster's margin of a partition's rows (and each linear part's, `linear_k`):
    all that choosing the blend, calibration and the metrics need, a few numbers a row."""
    X = encode(frame, encoding.numeric, encoding.categories)
    margin = booster.inplace_predict(X, predict_type="margin") if len(X) else np.zeros(0)
    out = {"label": frame["label"].to_numpy(float), "weight": frame["ipcw_weight"].to_numpy(float), "margin": margin}
    out.update({f"linear_{k}": part.margin(X) for k, part in enumerate(parts)})
    return pd.DataFrame(out)


def gathered_margins(
    frame: dd.DataFrame, booster: xgb.Booster, encoding: Encoding, parts: Sequence[LinearPart] = ()
) -> pd.DataFrame:
    booster.set_param({"nthread": 1})  # one task per worker thread already
    return pd.concat(partition_results(frame, margins, booster, encoding, list(parts)), ignore_index=True)


def blended_margins(scored: pd.DataFrame, linear_at: int | None, share: float) -> pd.DataFrame:
    """Gathered margins with `margin` the blend of the trees' and the linear part `linear_at`'s."""
    if linear_at is None or share == 0:
        return scored[["label", "weight", "margin"]]
    margin = mixed(scored["margin"].to_numpy(), scored[f"linear_{linear_at}"].to_numpy(), share)
    return scored[["label", "weight"]].assign(margin=margin)


# --- the linear part, in the driver process -----------------------------------------------------------------


def linear_inputs(frame: pd.DataFrame, encoding: Encoding, share: float, seed: int) -> tuple[np.ndarray, ...]:
    """The matrix, labels and censoring weights of a partition's rows whose citizens are in the sample:
    all of them when `share` is 1, else about `share` of them by a seeded hash of the id."""
    if share < 1.0:
        frame = frame[citizen_bucket(frame["citizen_id"], seed + 1) < share]
    X = encode(frame, encoding.numeric, encoding.categories)
    return X, frame["label"].to_numpy(float), frame["ipcw_weight"].to_numpy(float)


def linear_fits(
    frame: dd.DataFrame, encoding: Encoding, config: TrainConfig, cs: Sequence[float], max_rows: int = LINEAR_ROWS
) -> tuple[list[LinearPart], int]:
    """The linear part for each penalty in `cs` (training.linear.fit_linear_path) on the rows of `frame`,
    at most about `max_rows` of them (whole citizens); and the number of rows it was fitted on."""
    rows = sum(partition_results(frame, len))
    share = min(1.0, max_rows / max(rows, 1))
    gathered = partition_results(frame, linear_inputs, encoding, share, config.seed)
    X = np.concatenate([g[0] for g in gathered])
    y, w = (np.concatenate([g[k] for g in gathered]) for k in (1, 2))
    del gathered
    monotone = encoding.catalogue["monotone"].tolist()
    return fit_linear_path(X, y, tree_weights(w, config.tree_weight_power), cs, monotone), len(y)


def chosen_blend(scored: pd.DataFrame, config: TrainConfig) -> tuple[int, float]:
    """On the choosing citizens' gathered margins: the penalty (by the linear part's own weighted log
    loss), then the share (by the blend's), as `training.learners.xgboost_learner` chooses them."""
    y, w = scored["label"].to_numpy(), scored["weight"].to_numpy()
    at = min(range(len(config.linear_cs)), key=lambda k: weighted_log_loss(y, scored[f"linear_{k}"].to_numpy(), w))
    share = min(
        config.linear_shares,
        key=lambda s: weighted_log_loss(y, blended_margins(scored, at, s)["margin"].to_numpy(), w),
    )
    return at, float(share)


@dataclass
class Choice:
    """The chosen grid point, its number of trees, the booster that stopped there and the grid search."""

    params: dict[str, Any]
    booster: xgb.Booster
    trials: pd.DataFrame


def choose_by_early_stopping(
    client: Client, fit: dd.DataFrame, check: dd.DataFrame, encoding: Encoding, config: TrainConfig
) -> Choice:
    """Each grid point boosted on the fitting citizens, stopped early on the choosing citizens
    (weighted log loss); the point with the lowest loss at its best round."""
    from xgboost import dask as dxgb

    train = partial(dxgb.train, client)
    train_matrix = quantile_matrix(client, fit, encoding)
    check_matrix = quantile_matrix(client, check, encoding, ref=train_matrix)
    fixed = booster_params(encoding.catalogue["monotone"].tolist(), config)
    trials, best = [], None
    for point in config.xgboost_grid:
        fitted = boosted(train, {**fixed, **point}, train_matrix, config, check_matrix)
        loss = fitted.valid_log_loss
        trials.append(
            {"grid_point": json.dumps(point, sort_keys=True), "n_estimators": fitted.rounds, "valid_log_loss": loss}
        )
        if best is None or loss < best[0]:
            best = (loss, {**point, "n_estimators": fitted.rounds}, fitted.booster)
    return Choice(best[1], best[2], pd.DataFrame(trials))


def refit(client: Client, frame: dd.DataFrame, encoding: Encoding, params: Mapping[str, Any], config: TrainConfig):
    """The booster boosted on every row of `frame` for the chosen number of trees, without early stopping."""
    from xgboost import dask as dxgb

    fixed = booster_params(encoding.catalogue["monotone"].tolist(), config)
    matrix = quantile_matrix(client, frame, encoding)
    tree_params = {k: v for k, v in params.items() if k not in BLEND_CHOSEN}
    booster = boosted(partial(dxgb.train, client), {**fixed, **tree_params}, matrix, config).booster
    booster.feature_names = list(encoding.feature_names)
    return booster


def metric_values(scored: pd.DataFrame, calibration: tuple[float, float], prefix: str) -> dict[str, float]:
    """Weighted point metrics (`evaluation.metric_values`) of gathered margins, calibrated."""
    p = calibrated(scored["margin"].to_numpy(), calibration)
    y, w = scored["label"].to_numpy(), scored["weight"].to_numpy()
    values = evaluation.metric_values(y, p, w)
    values.update(
        {
            "labelled_rows": float(len(scored)),
            "observed_rate_ipcw": float(np.average(y, weights=w)),
            "mean_predicted_labelled": float(np.average(p, weights=w)),
        }
    )
    return {f"{prefix}_{k}": v for k, v in values.items()}


# --- one training run ---------------------------------------------------------------------------------------


@dataclass
class DaskTrainOutcome:
    """What `bip train --dask` did: its MLflow run, the registered version, metrics and the model."""

    run_id: str
    model_version: int
    champion_set: bool
    metrics: dict[str, float]
    seconds: float
    model: JobChanceModel
    params: dict[str, Any] = field(default_factory=dict)


def train_on_dask(
    client: Client,
    source: StoreSource | ParquetSource,
    tracking_uri: str,
    artifact_root: Path,
    experiment: str,
    model_name: str,
    config: TrainConfig,
    alias: str = "champion",
    citizens_per_partition: int = CITIZENS_PER_PARTITION,
    lease_url: str | None = None,
) -> DaskTrainOutcome:
    """Train the calibrated champion (monotone XGBoost blended with its linear part) on the cluster
    behind `client`, log one MLflow run ("train-dask") at `tracking_uri` and register the model (alias
    `alias` set only when the model has none; with `lease_url`, the store, under the registry lease that
    promotions take, as `bip train` does)."""
    from features.distributed import cluster_description

    start = time.perf_counter()
    base = partitioned_features(source, config.horizon_months, citizens_per_partition).persist()
    full = training_weights(weighted_features(base, config.horizon_months), config.horizon_months, config.weighting)
    full = full.persist()
    del base
    cutoff = cutoff_of_counts(partition_results(full, labelled_dates), config.out_of_time_share)
    labelled = full.map_partitions(labelled_part, meta=full._meta)
    period, test = (labelled.map_partitions(dated, cutoff, before, meta=full._meta) for before in (True, False))
    choose, validate, fit = (
        period.map_partitions(citizens_of, part, config.inner_share, config.seed, meta=period._meta)
        for part in CITIZEN_PARTS
    )
    period_encoding = learned_encoding(full.map_partitions(dated, cutoff, True, meta=full._meta))
    choice = choose_by_early_stopping(client, fit, choose, period_encoding, config)
    blending = any(share > 0 for share in config.linear_shares)
    parts, linear_rows = linear_fits(fit, period_encoding, config, config.linear_cs) if blending else ([], 0)
    choose_scored = gathered_margins(choose, choice.booster, period_encoding, parts)
    if choose_scored["label"].nunique() < 2:
        raise UserError("the choosing citizens have labelled rows of one outcome only: too few data to calibrate")
    linear_at, share = chosen_blend(choose_scored, config) if blending else (None, 0.0)
    if blending:
        choice.params.update({"linear_share": share, "linear_c": float(config.linear_cs[linear_at])})
    choose_scored = blended_margins(choose_scored, linear_at, share)
    calibration = ranking(
        platt(*(choose_scored[c].to_numpy() for c in ("margin", "label", "weight"))), "scores on the choosing citizens"
    )
    valid_scored, test_scored = (
        blended_margins(gathered_margins(rows, choice.booster, period_encoding, parts), linear_at, share)
        for rows in (validate, test)
    )
    metrics = {**metric_values(valid_scored, calibration, "valid"), **metric_values(test_scored, calibration, "oot")}
    metrics.update({"calibration_a": calibration[0], "calibration_b": calibration[1]})

    encoding = learned_encoding(full)
    booster = refit(client, labelled, encoding, choice.params, config)
    linear, refit_rows = None, 0
    if share > 0:
        (linear,), refit_rows = linear_fits(labelled, encoding, config, (choice.params["linear_c"],))
    data_print = combined_fingerprint(partition_results(full, fingerprint))
    carried = {**headline(metrics), **{k: float(v) for k, v in metrics.items() if k.startswith("valid_")}}
    model = champion_model(booster, encoding, calibration, config, data_print, carried, linear, share)
    params = {
        "engine": "dask",
        "model": CHAMPION_CANDIDATE,
        "horizon_months": config.horizon_months,
        "seed": config.seed,
        "weighting": config.weighting,
        "out_of_time_cutoff": str(cutoff.date()),
        "out_of_time_share": config.out_of_time_share,
        "inner_share": config.inner_share,
        "validation": "choosing and validation citizens, inner_share each, by a hash of the id; no nested CV",
        "xgboost_grid": json.dumps(list(config.xgboost_grid)),
        "chosen": json.dumps(choice.params, sort_keys=True),
        "linear_shares": json.dumps(list(config.linear_shares)),
        "linear_rows_choice": linear_rows,
        "linear_rows_refit": refit_rows,
        "linear_rows_max": LINEAR_ROWS,
        "calibration": json.dumps(list(calibration)),
        "max_rounds": config.max_rounds,
        "early_stopping_rounds": config.early_stopping_rounds,
        "partitions": full.npartitions,
        "citizens_per_partition": citizens_per_partition,
        "source": str(source),
        **cluster_description(client),
        **{f"data_{k}": v for k, v in data_print.items()},
    }
    tracking = tracking_client(tracking_uri)
    project_run = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run`: log into the run it made
    experiment_key = None if project_run else experiment_id(experiment, artifact_root, tracking_uri)
    with (
        tempfile.TemporaryDirectory() as tmp,
        started_run(tracking, experiment_key, "train-dask", run_id=project_run) as run,
    ):
        folder = Path(tmp) / "run"
        folder.mkdir()
        run.params(params)
        run.metrics(metrics)
        encoding.catalogue.to_csv(folder / "feature_catalogue.csv", index=False)
        choice.trials.to_csv(folder / "grid_search.csv", index=False)
        (folder / "data_fingerprint.json").write_text(json.dumps(data_print, indent=1))
        evaluation.reliability_plot(
            test_scored["label"].to_numpy(),
            calibrated(test_scored["margin"].to_numpy(), calibration),
            test_scored["weight"].to_numpy(),
            folder / "reliability_oot.png",
            title=f"{CHAMPION_CANDIDATE} (Dask): out of time",
        )
        run.artifacts(folder)
        logged = log_model(run, model, Path(tmp) / "pyfunc")
        version, champion_set = register_champion_candidate(run, logged, model_name, tracking_uri, alias, lease_url)
        seconds = time.perf_counter() - start
        run.metrics({"seconds": seconds})
    return DaskTrainOutcome(run.run_id, version, champion_set, metrics, seconds, model, choice.params)


# --- nightly scoring ----------------------------------------------------------------------------------------


def latest_scores(frame: pd.DataFrame, model: JobChanceModel, top: int) -> pd.DataFrame:
    """Each citizen's latest measurement in a partition, scored and explained as `bip predict` does."""
    latest = frame.drop_duplicates("citizen_id", keep="last").reset_index(drop=True)  # rows in date order
    if latest.empty:  # a partition without measurements (and Dask's empty frame of the columns)
        return no_scores(latest, model, top)
    explained = model.explain_frame(latest, k=top)
    extra = [c for c in explained.columns if c.startswith(("indicator_", "contribution_"))]
    names = {c: "str" for c in extra if c.startswith("indicator_")}  # typed text, as Parquet wants
    return explained[[*ID_COLUMNS, "probability", *extra]].astype(names)


def no_scores(frame: pd.DataFrame, model: JobChanceModel, top: int) -> pd.DataFrame:
    """The empty frame of `latest_scores`' columns and dtypes."""
    indicators = model.catalogue.loc[model.catalogue["kind"] == "indicator", "belongs_to"].nunique()
    out = frame[list(ID_COLUMNS)].iloc[:0].assign(probability=np.zeros(0))
    for j in range(1, min(top, indicators) + 1):
        out[f"indicator_{j}"] = pd.Series(dtype="str")
        out[f"contribution_{j}"] = np.zeros(0)
    return out


def score_citizens(
    source: StoreSource | ParquetSource,
    model: JobChanceModel,
    out: Path,
    top: int = 3,
    citizens_per_partition: int = CITIZENS_PER_PARTITION,
) -> int:
    """Score every citizen's latest measurement on the cluster (the default Dask client) into the
    Parquet dataset folder `out`, one file per partition; the number of citizens scored."""
    from features.distributed import write_parquet

    features = partitioned_features(source, model.horizon_months, citizens_per_partition)
    scored = features.map_partitions(latest_scores, model, top, meta=latest_scores(features._meta, model, top))
    return write_parquet(scored, out)
