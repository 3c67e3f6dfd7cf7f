"""`JobChanceModel`: the trained model every later stage uses, and its MLflow pyfunc form.

One object holds the booster, the optional linear part blended with it on the log-odds
(training/linear.py), the encoding learned at fit (numeric columns and one-hot categories), the Platt
calibration on the margin and the feature catalogue. The explanation it gives is on the
calibrated log-odds scale: calibration is a*margin + b with a > 0, so per-feature contributions
times a, plus a*base + b, sum exactly to the calibrated log-odds whose probability the user sees.

`matrix` encodes a build_features frame (batch scoring, training); `matrix_of` the same rows straight
from the feature core's arrays (`features.build.FeatureArrays`), as serving does per request, with
identical values. `probability` and `contributions` run XGBoost's own prediction on that matrix (TreeSHAP for the
trees) plus, where there is a linear part, its exact per-column terms, both weighted by their share.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb

from features.build import FeatureArrays, column_positions
from features.catalogue import SCORE_COLUMNS, SCORE_MAX, SCORE_MIN
from features.feature_catalogue import CATEGORICAL_FEATURES, CATEGORY_LEVELS, NUMERIC_FEATURES, feature_catalogue
from training.linear import LinearPart, blended

if TYPE_CHECKING:
    from bip.settings import Settings

BOOSTER_FILE = "booster.ubj"
MODEL_FILE = "job_chance_model.json"
ONE_HOT_SEPARATOR = "__"
BASE = "base"


def one_hot_name(column: str, value: str) -> str:
    """Name of the 0/1 column of one category, in the catalogue's `<source>__<derivation>` scheme."""
    return f"{column}{ONE_HOT_SEPARATOR}{value}"


def model_inputs(columns: Sequence[str]) -> tuple[list[str], list[str]]:
    """The numeric and the categorical feature columns among `columns` that a model uses.

    A categorical column whose 0/1 columns `build_features` already writes (`pattern_3m`) is left
    out, so that no feature is counted twice.
    """
    present = set(columns)
    numeric = [c for c in NUMERIC_FEATURES if c in present]
    categorical = [
        c
        for c in CATEGORICAL_FEATURES
        if c in present and not any(n.startswith(c + ONE_HOT_SEPARATOR) for n in numeric)
    ]
    return numeric, categorical


def learn_categories(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, list[str]]:
    """The sorted, non-missing values of each categorical column: the one-hot categories."""
    return {c: sorted(map(str, pd.unique(frame[c].dropna()))) for c in columns}


def encoded_names(numeric: Sequence[str], categories: Mapping[str, Sequence[str]]) -> list[str]:
    """Matrix column names: the numeric columns, then one 0/1 column per category."""
    return [*numeric, *(one_hot_name(c, v) for c, values in categories.items() for v in values)]


@lru_cache(maxsize=64)
def category_index(values: tuple[str, ...]) -> dict[str, int]:
    return {value: k for k, value in enumerate(values)}


@lru_cache(maxsize=64)
def code_lookup(dtype: pd.CategoricalDtype, values: tuple[str, ...]) -> np.ndarray:
    """Position in `values` of each category of `dtype`, then -1 (for the missing code -1)."""
    return level_lookup(tuple(map(str, dtype.categories)), values)


@lru_cache(maxsize=64)
def level_lookup(levels: tuple[str, ...], values: tuple[str, ...]) -> np.ndarray:
    """Position in `values` of each of `levels`, then -1 (for the missing code -1). Read-only: shared."""
    index = category_index(values)
    out = np.array([index.get(str(c), -1) for c in levels] + [-1])
    out.flags.writeable = False
    return out


def one_hot_positions(column: pd.Series, values: Sequence[str]) -> np.ndarray:
    """For each row, the position of its category in `values`, -1 where missing or unseen.

    A pandas Categorical is read through its codes (no per-row strings), anything else as objects.
    """
    values = tuple(values)
    if isinstance(column.dtype, pd.CategoricalDtype):
        return code_lookup(column.dtype, values)[column.array.codes]
    index = category_index(values)
    return np.fromiter((index.get(v, -1) for v in column.to_numpy(dtype=object)), dtype=np.int64, count=len(column))


def encode(frame: pd.DataFrame, numeric: Sequence[str], categories: Mapping[str, Sequence[str]]) -> np.ndarray:
    """A float32 matrix (rows x encoded_names): numeric values as they are (NaN stays NaN), then
    one-hot categories; a missing or unseen category is all zeros.

    Kept to a few pandas calls, since a serving request encodes a frame of a few rows.
    Raises ValueError naming absent input columns.
    """
    wanted = (*numeric, *categories)
    positions = column_positions(tuple(frame.columns.tolist()), wanted)
    if (positions < 0).any():
        missing = [c for c, at in zip(wanted, positions, strict=True) if at < 0]
        raise ValueError(
            f"feature frame lacks column(s) {', '.join(missing[:10])}"
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            + "; build it with features.build.build_features"
        )
    k = len(numeric)
    out = np.zeros((len(frame), k + sum(len(v) for v in categories.values())), dtype=np.float32)
    out[:, :k] = frame.take(positions[:k], axis=1).to_numpy(dtype=np.float32, na_value=np.nan)
    start, rows = k, np.arange(len(frame))
    for column, values in categories.items():
        at = one_hot_positions(frame[column], values)
        known = at >= 0
        out[rows[known], start + at[known]] = 1.0
        start += len(values)
    return out


def model_catalogue(numeric: Sequence[str], categories: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """The feature catalogue of the matrix columns: a one-hot column takes its source's belongs_to and
    kind, its label gets the category, and it is never monotone. Column `source` names the input column."""
    source = feature_catalogue([*numeric, *categories]).set_index("name")
    rows = [{"name": c, "source": c, **source.loc[c].to_dict()} for c in numeric]
    for column, values in categories.items():
        info = source.loc[column].to_dict()
        for value in values:
            rows.append(
                {
                    **info,
                    "name": one_hot_name(column, value),
                    "source": column,
                    "label_da": f"{info['label_da']}: {value}",
                    "label_en": f"{info['label_en']}: {value}",
                    "monotone": 0,
                    "dtype": "float",
                }
            )
    columns = ["name", "source", *(c for c in source.columns)]
    return pd.DataFrame(rows, columns=columns).reset_index(drop=True)


def membership(catalogue: pd.DataFrame, by: str = "belongs_to") -> tuple[np.ndarray, list[str]]:
    """A 0/1 matrix (features x groups) saying which group (`by` column) each feature belongs to."""
    codes, groups = pd.factorize(catalogue[by].astype(str), sort=False)
    matrix = np.zeros((len(catalogue), len(groups)))
    matrix[np.arange(len(catalogue)), codes] = 1.0
    return matrix, list(groups)


def contributions_by(contributions: np.ndarray, catalogue: pd.DataFrame, by: str = "belongs_to") -> pd.DataFrame:
    """Contributions summed per group of features (columns = the values of catalogue[`by`], in
    catalogue order); a last column `base` holds the base value when `contributions` has one (f+1
    columns), so each row still sums to the log-odds.
    """
    values = np.asarray(contributions, dtype=float)
    n_features = len(catalogue)
    if values.ndim != 2 or values.shape[1] not in (n_features, n_features + 1):
        raise ValueError(f"contributions must be rows x {n_features} (+1 base) columns, got {values.shape}")
    member, groups = membership(catalogue, by)
    out = pd.DataFrame(values[:, :n_features] @ member, columns=groups)
    if values.shape[1] == n_features + 1:
        out[BASE] = values[:, n_features]
    return out


def top_contributions(by_group: pd.DataFrame, groups: Sequence[str], k: int = 3) -> pd.DataFrame:
    """The `k` groups among `groups` with the largest |contribution| per row, strongest first:
    columns indicator_1, contribution_1, ..., indicator_k, contribution_k."""
    values = by_group[list(groups)].to_numpy(dtype=float)
    k = min(k, values.shape[1])
    order = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]
    names = np.asarray(groups, dtype=object)[order]
    picked = np.take_along_axis(values, order, axis=1)
    out = {}
    for j in range(k):
        out[f"indicator_{j + 1}"] = names[:, j]
        out[f"contribution_{j + 1}"] = picked[:, j]
    return pd.DataFrame(out, index=by_group.index)


def expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class JobChanceModel:
    """The calibrated job-chance model: booster (and linear part), encoding, Platt calibration,
    catalogue, provenance. The margin is (1 - linear_share) * the booster's + linear_share * the linear
    part's; without a linear part, the booster's alone."""

    booster: xgb.Booster
    feature_names: list[str]
    categories: dict[str, list[str]]
    calibration: tuple[float, float]
    catalogue: pd.DataFrame
    horizon_months: int = 12
    training_fingerprint: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    linear: LinearPart | None = None
    linear_share: float = 0.0

    def __post_init__(self) -> None:
        n_onehot = sum(len(v) for v in self.categories.values())
        self.numeric = self.feature_names[: len(self.feature_names) - n_onehot]
        if encoded_names(self.numeric, self.categories) != list(self.feature_names):
            raise ValueError("feature_names must be the numeric columns followed by the one-hot categories")
        if list(self.catalogue["name"]) != list(self.feature_names):
            raise ValueError("catalogue must have one row per feature name, in feature_names order")
        self.calibration = (float(self.calibration[0]), float(self.calibration[1]))
        if self.calibration[0] <= 0:
            raise ValueError("the calibration slope must be positive (a monotone map of the margin)")
        self.linear_share = float(self.linear_share) if self.linear is not None else 0.0
        if not 0.0 <= self.linear_share < 1.0:
            raise ValueError("linear_share must be in [0, 1): the trees keep a part of every prediction")
        if self.linear is not None and len(self.linear.slope) != len(self.feature_names):
            raise ValueError("the linear part must have one slope per feature name")

    @property
    def input_columns(self) -> list[str]:
        """The build_features columns the model reads."""
        return [*self.numeric, *self.categories]

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The float32 model matrix of a build_features frame, columns in feature_names order."""
        return encode(frame, self.numeric, self.categories)

    def matrix_of(self, features: FeatureArrays, rows: np.ndarray) -> np.ndarray:
        """The rows at `rows` of the feature core's arrays as the float32 model matrix: the same values
        as `matrix` of the build_features frame's rows, without the frame."""
        rows = np.asarray(rows, dtype=np.intp)
        k = len(self.numeric)
        out = np.zeros((len(rows), len(self.feature_names)), dtype=np.float32)
        out[:, :k] = features.numeric_rows(self.numeric, rows)
        start, at_row = k, np.arange(len(rows))
        for column, values in self.categories.items():
            values = tuple(values)
            if column in CATEGORY_LEVELS:
                at = level_lookup(CATEGORY_LEVELS[column], values)[features.category_codes(column, rows)]
            else:
                index, found = category_index(values), features.category_values(column, rows)
                at = np.fromiter((index.get(v, -1) for v in found), dtype=np.int64, count=len(rows))
            known = at >= 0
            out[at_row[known], start + at[known]] = 1.0
            start += len(values)
        return out

    def margin(self, X: np.ndarray) -> np.ndarray:
        """The raw log-odds (the booster's, blended with the linear part's), before calibration."""
        trees = np.asarray(self.booster.inplace_predict(X, predict_type="margin"), dtype=float)
        return blended(trees, self.linear, self.linear_share, X)

    def log_odds(self, X: np.ndarray) -> np.ndarray:
        """The calibrated log-odds a*margin + b."""
        a, b = self.calibration
        return a * self.margin(X) + b

    def probability(self, X: np.ndarray) -> np.ndarray:
        """The calibrated probability of a job or education within the horizon."""
        return expit(self.log_odds(X))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """TreeSHAP contributions on the calibrated log-odds scale, (rows x features+1), last column the
        base value; each row sums to `log_odds`."""
        a, b = self.calibration
        # One thread and no name check: building a DMatrix with every thread dominates a small request.
        matrix = xgb.DMatrix(X, missing=np.nan, nthread=1)
        trees = np.asarray(self.booster.predict(matrix, pred_contribs=True, validate_features=False), dtype=float)
        out = blended(trees, self.linear, self.linear_share, X) * a
        out[:, -1] += b
        return out

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Id columns of `frame` (those present) with probability and calibrated log-odds per row."""
        X = self.matrix(frame)
        log_odds = self.log_odds(X)
        ids = [c for c in ("measurement_id", "citizen_id", "measured_on") if c in frame.columns]
        out = frame[ids].reset_index(drop=True).copy()
        out["probability"] = expit(log_odds)
        out["log_odds"] = log_odds
        return out

    def explain_frame(self, frame: pd.DataFrame, k: int = 3) -> pd.DataFrame:
        """`predict_frame` plus the `k` indicators with the largest summed contributions per row."""
        X = self.matrix(frame)
        contributions = self.contributions(X)
        out = self.predict_frame(frame)
        by_group = contributions_by(contributions, self.catalogue)
        indicators = list(dict.fromkeys(self.catalogue.loc[self.catalogue["kind"] == "indicator", "belongs_to"]))
        return pd.concat([out, top_contributions(by_group, indicators, k)], axis=1)

    def to_json(self) -> dict[str, Any]:
        """Everything but the booster, as JSON-able data."""
        return {
            "feature_names": list(self.feature_names),
            "categories": self.categories,
            "calibration": list(self.calibration),
            "horizon_months": int(self.horizon_months),
            "training_fingerprint": self.training_fingerprint,
            "metrics": self.metrics,
            "catalogue": self.catalogue.to_dict(orient="records"),
            "linear": None if self.linear is None else self.linear.to_json(),
            "linear_share": self.linear_share,
        }

    def save(self, folder: Path) -> dict[str, str]:
        """Write the booster (UBJSON) and the rest (JSON) into `folder`; the pyfunc artifacts dict."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(folder / BOOSTER_FILE)
        (folder / MODEL_FILE).write_text(json.dumps(self.to_json(), indent=1, default=str), encoding="utf-8")
        return {"booster": str(folder / BOOSTER_FILE), "model": str(folder / MODEL_FILE)}


def model_from_files(booster_path: Path | str, model_path: Path | str, nthread: int = 1) -> JobChanceModel:
    """A JobChanceModel from the files `JobChanceModel.save` wrote.

    The booster predicts with `nthread` threads: one is fastest for a request of a few rows.
    """
    booster = xgb.Booster()
    booster.load_model(str(booster_path))
    booster.set_param({"nthread": nthread})
    data = json.loads(Path(model_path).read_text(encoding="utf-8"))
    return JobChanceModel(
        booster=booster,
        feature_names=data["feature_names"],
        categories=data["categories"],
        calibration=tuple(data["calibration"]),
        catalogue=pd.DataFrame(data["catalogue"]),
        horizon_months=data["horizon_months"],
        training_fingerprint=data["training_fingerprint"],
        metrics=data["metrics"],
        # Models saved before the linear part have none.
        linear=LinearPart.from_json(data["linear"]) if data.get("linear") else None,
        linear_share=data.get("linear_share", 0.0),
    )


class JobChancePyfunc(mlflow.pyfunc.PythonModel):
    """The MLflow pyfunc wrapper: a build_features frame in, calibrated probabilities out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = model_from_files(context.artifacts["booster"], context.artifacts["model"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        return self.model.probability(self.model.matrix(pd.DataFrame(model_input)))


# Mid values of the contract's domains for the numeric inputs of the synthetic example (a score is
# 1-5, the share of benefit 0-1); the rest (changes, episodes, days) is 0, as at a first measurement.
EXAMPLE_VALUES: dict[str, float] = {
    **dict.fromkeys(SCORE_COLUMNS, (SCORE_MIN + SCORE_MAX) / 2),
    "caseworker_job_orientation": (SCORE_MIN + SCORE_MAX) / 2,
    "rounds": 1.0,
    "age": 40.0,
    "children": 1.0,
    "benefit_share_5y": 0.5,
}


def input_example(model: JobChanceModel) -> pd.DataFrame:
    """One synthetic row of the model's inputs for MLflow, built from the contract's domains (mid
    values, the first code of each category the model knows), never from a person's data."""
    row: dict[str, Any] = {c: EXAMPLE_VALUES.get(c, 0.0) for c in model.numeric}
    row.update({c: values[0] if len(values) else None for c, values in model.categories.items()})
    return pd.DataFrame([row]).astype({c: "float64" for c in model.numeric})


def model_rows(model: JobChanceModel, frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The first `rows` rows of a feature frame restricted to the model's inputs, with the plain dtypes
    the pyfunc takes (for benchmarks and tests; never logged to MLflow)."""
    example = frame[model.input_columns].head(rows).reset_index(drop=True)
    for column in model.categories:
        example[column] = example[column].astype(object).where(example[column].notna(), None)
    return example.astype({c: "float64" for c in model.numeric})


def signature(model: JobChanceModel) -> Any:
    """The pyfunc signature: every numeric input a double (NaN = unknown), each categorical input of
    any type, since build_features gives pandas Categoricals, which MLflow's string type refuses;
    out comes one probability per row."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = [ColSpec("double", c) for c in model.numeric]
    inputs += [ColSpec(AnyType(), c) for c in model.categories]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", "probability")]))


PYFUNC_DISTRIBUTIONS: tuple[tuple[str, ...], ...] = (
    ("mlflow",),
    ("xgboost-cpu", "xgboost"),
    ("pandas",),
    ("numpy",),
    ("pyarrow",),
)


def pip_requirements() -> list[str]:
    """The pinned distributions the pyfunc needs, as installed here (the first found of each).

    Given explicitly because MLflow's inference of them loads the model in a subprocess and walks
    every installed package: seconds to tens of seconds per logged model. The `bip` package itself
    (training.model, features) must be installed where the model is loaded.
    """
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for names in PYFUNC_DISTRIBUTIONS:
        for name in names:
            try:
                pins.append(f"{name}=={version(name)}")
                break
            except PackageNotFoundError:
                continue
    return pins


def save_pyfunc(model: JobChanceModel, folder: Path) -> Path:
    """`model` as an MLflow pyfunc model folder (`folder`/pyfunc), with its synthetic input example."""
    files, out = Path(folder) / "files", Path(folder) / "pyfunc"
    mlflow.pyfunc.save_model(
        path=str(out),
        python_model=JobChancePyfunc(),
        artifacts=model.save(files),
        signature=signature(model),
        input_example=input_example(model),
        pip_requirements=pip_requirements(),
    )
    return out


def log_pyfunc(model: JobChanceModel, name: str, folder: Path) -> Any:
    """Log `model` as a pyfunc into the active run of MLflow's fluent API; the ModelInfo.

    For callers that already hold a fluent run; training logs through `training.tracking.log_model`.
    """
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=JobChancePyfunc(),
        artifacts=model.save(folder),
        signature=signature(model),
        input_example=input_example(model),
        pip_requirements=pip_requirements(),
    )


def model_source(uri: str, tracking_uri: str) -> str:
    """Where the files of a model URI lie: a `models:/NAME/VERSION` or `models:/NAME@ALIAS` is looked
    up in the registry at `tracking_uri`; any other URI (`runs:/...`, a path) is its own source."""
    from mlflow import MlflowClient

    if not uri.startswith("models:/"):
        return uri
    name, _, version = uri.removeprefix("models:/").partition("/")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if "@" in name:
        name, alias = name.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    return client.get_model_version_download_uri(name, version)


def load_model(uri: str, tracking_uri: str | None = None) -> JobChanceModel:
    """The JobChanceModel behind a pyfunc model URI (`models:/bip-job-chance@champion`, `runs:/...`).

    With `tracking_uri`, the model is found and downloaded through that server, and MLflow's
    process-wide URI is neither read nor set; without, MLflow's current one is used.
    """
    if tracking_uri is not None:
        from mlflow.artifacts import download_artifacts

        uri = download_artifacts(artifact_uri=model_source(uri, tracking_uri), tracking_uri=tracking_uri)
    wrapper = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    if not isinstance(wrapper, JobChancePyfunc):
        raise TypeError(f"{uri} is not a bip job-chance model (got {type(wrapper).__name__})")
    return wrapper.model


def load_champion(settings: Settings) -> tuple[JobChanceModel, Any]:
    """The model under the settings' alias (`champion`) and its ModelVersion, from the settings' registry."""
    from mlflow import MlflowClient

    from bip.errors import UserError
    from training.registry import RegistryUnavailable, not_found, shown_uri

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        version = client.get_model_version_by_alias(settings.model_name, settings.model_alias)
    except mlflow.exceptions.MlflowException as error:
        if not not_found(error):  # an unreachable registry is a failure, never "no model"
            raise RegistryUnavailable(f"the model registry at {shown_uri(settings.tracking_uri)} failed") from error
        raise UserError(
            f"no model {settings.model_name}@{settings.model_alias} in the tracking store; run `bip train` first"
        ) from error
    uri = f"models:/{settings.model_name}/{version.version}"
    return load_model(uri, settings.tracking_uri), version
