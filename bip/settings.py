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
    admin_token: str | None = Field(default=None, description="Token of the admin endpoints; unset: they are off.")
    admin_token_file: Path | None = Field(default=None, description="File holding the admin token instead.")
    gate_auc_margin: float = Field(
        default=0.02, ge=0, description="Challenger AUC may be this much below the champion's."
    )
    gate_max_auc_drop: float = Field(
        default=0.08, ge=0, description="Challenger AUC may be this much below the champion's validated AUC."
    )
    gate_max_ece: float = Field(default=0.05, gt=0, description="Largest calibration error a challenger may have.")
    gate_fairness_margin: float = Field(
        default=0.05, ge=0, description="Largest growth of a fairness gap between groups over the champion's."
    )

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
    def lock_folder(self) -> Path:
        return self.home.resolve() / "locks"

    @property
    def admin_secret(self) -> str | None:
        """The admin token from BIP_ADMIN_TOKEN or, else, the file BIP_ADMIN_TOKEN_FILE; None: admin is off."""
        if self.admin_token:
            return self.admin_token
        if self.admin_token_file is not None:
            return self.admin_token_file.read_text(encoding="utf-8").strip() or None
        return None

    @property
    def audit_log_path(self) -> Path:
        return (self.audit_log or self.home / "logs" / "audit.jsonl").resolve()


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (e.g. from CLI options) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
