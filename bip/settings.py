"""One typed settings object, read once from the environment.

`BIP_HOME` holds every default location, so one variable moves a whole installation;
`BIP_DATABASE_URL` and `MLFLOW_TRACKING_URI` override the store and the tracking server.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BIP_", extra="ignore", populate_by_name=True)

    home: Path = Field(default=Path(".bip"), description="Folder for every default location.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL of the measurement store.")
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias="MLFLOW_TRACKING_URI", description="MLflow tracking server."
    )
    horizon_months: int = Field(default=12, ge=1, le=60, description="Prediction horizon in months.")
    model_name: str = "bip-job-chance"
    model_alias: str = "champion"
    experiment: str = "bip-job-chance"
    audit_log: Path | None = Field(default=None, description="Audit log file (JSON lines).")
    admin_token: str | None = None

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home.resolve() / 'store.db'}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home.resolve() / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.home.resolve() / "mlartifacts"

    @property
    def audit_log_path(self) -> Path:
        return (self.audit_log or self.home / "logs" / "audit.jsonl").resolve()


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (e.g. from CLI options) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
