"""Fixtures for every test."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def mlflow_uris_restored() -> Iterator[None]:
    """MLflow keeps its tracking and registry URIs in module globals and in the environment
    (`mlflow.set_tracking_uri` sets MLFLOW_TRACKING_URI): a test that points them at its own store
    must not leave the next test in the same worker on it.

    Training, the research report and model loading take the URI explicitly and set nothing; this
    stays for what still uses MLflow's fluent API: `bip retrain`/`bip promote` (training/lifecycle.py),
    the service's model poller (serving/core.py) and tests that log or search with it
    (test_service.py, test_retrain.py). Remove it when they take the URI too."""
    saved_env = {name: os.environ.get(name) for name in MLFLOW_URI_VARIABLES}
    yield
    for name, value in saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if "mlflow" in sys.modules:
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        tracking_utils._tracking_uri = None  # back to "from the environment"
        registry_utils._registry_uri = None
