"""The model registry steps: register a logged model, read and set the champion alias.

Small functions over `MlflowClient`, so that promotion with gates (a later stage) can build on
them. Each takes the tracking URI to work on (None: MLflow's current one).
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo

CHAMPION = "champion"


def client(tracking_uri: str | None = None) -> MlflowClient:
    """A client on one tracking server, used as the model registry too."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def register(
    model: ModelInfo, name: str, *, tags: dict[str, str] | None = None, tracking_uri: str | None = None
) -> ModelVersion:
    """Register a logged model (the ModelInfo of `log_model`) as a new version of `name`, created if new."""
    registry = client(tracking_uri)
    try:
        registry.get_registered_model(name)
    except MlflowException:
        registry.create_registered_model(name, description="Chance of a job or education within the horizon.")
    return registry.create_model_version(
        name=name, source=model.model_uri, run_id=model.run_id, tags=tags, model_id=model.model_id
    )


def champion_version(name: str, *, alias: str = CHAMPION, tracking_uri: str | None = None) -> int | None:
    """The version number under `alias`, or None when the model or the alias does not exist."""
    try:
        return int(client(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def set_champion(name: str, version: int | str, *, alias: str = CHAMPION, tracking_uri: str | None = None) -> None:
    """Point `alias` at `version` of `name`."""
    client(tracking_uri).set_registered_model_alias(name, alias, str(version))
