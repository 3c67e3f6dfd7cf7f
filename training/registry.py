"""The model registry steps: register a logged model, read and set the champion alias.

Small functions over `MlflowClient`, so that promotion with gates (a later stage) can build on
them. Each takes the tracking URI to work on (None: MLflow's current one). They fail closed: an
unreachable or broken registry raises `RegistryUnavailable`, never passes for "no champion".
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo

CHAMPION = "champion"
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
"""The error codes MLflow answers for a model or an alias that does not exist (with "not found")."""
REMOTE_SCHEMES = ("http://", "https://", "databricks")


class RegistryUnavailable(RuntimeError):
    """The registry could not answer (unreachable, broken): nothing may be decided from its silence."""


def not_found(error: MlflowException) -> bool:
    """Whether MLflow's error says the model or alias does not exist (not that the registry failed)."""
    return error.error_code in NOT_FOUND_CODES and "not found" in str(error).lower()


def is_remote(tracking_uri: str) -> bool:
    """Whether the tracking server is a server (HTTP, Databricks) rather than a database or folder here."""
    return tracking_uri.startswith(REMOTE_SCHEMES)


def shown_uri(uri: str | None) -> str:
    """A tracking URI fit for a message: without a user name or password in it."""
    if uri is None:
        return "the current tracking URI"
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def artifact_location(tracking_uri: str, artifact_root: Path, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: a folder under `artifact_root` for a local store, and
    None (the server's own `--default-artifact-root` or proxied artifacts) for a remote server, whose
    clients on other machines could not read a local file:// path."""
    if is_remote(tracking_uri):
        return None
    return (Path(artifact_root) / experiment).resolve().as_uri()


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
    except MlflowException as error:
        if not not_found(error):
            raise
        registry.create_registered_model(name, description="Chance of a job or education within the horizon.")
    return registry.create_model_version(
        name=name, source=model.model_uri, run_id=model.run_id, tags=tags, model_id=model.model_id
    )


def champion_version(name: str, *, alias: str = CHAMPION, tracking_uri: str | None = None) -> int | None:
    """The version number under `alias`, or None when the model or the alias does not exist; raises
    RegistryUnavailable when the registry cannot say."""
    try:
        return int(client(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException as error:
        if not_found(error):
            return None
        raise RegistryUnavailable(
            f"the model registry at {shown_uri(tracking_uri)} could not be read "
            f"({error.error_code}); nothing was promoted. Check that it is reachable and try again."
        ) from error


def set_champion(name: str, version: int | str, *, alias: str = CHAMPION, tracking_uri: str | None = None) -> None:
    """Point `alias` at `version` of `name`."""
    client(tracking_uri).set_registered_model_alias(name, alias, str(version))
