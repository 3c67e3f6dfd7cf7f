"""One typed settings object, read once from the environment.

`BIP_HOME` holds every default location, so one variable moves a whole installation;
`BIP_DATABASE_URL` and `MLFLOW_TRACKING_URI` override the store and the tracking server.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BIP_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    home: Path = Field(default=Path(".bip"), description="Folder for every default location.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL of the measurement store.")
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias="MLFLOW_TRACKING_URI", description="MLflow tracking server."
    )
    horizon_months: int = Field(default=12, ge=1, le=60, description="Prediction horizon in months.")
    model_name: str = "bip-job-chance"
    model_alias: str = "champion"
    experiment: str = "bip-job-chance"
    audit_stdout: bool = Field(
        default=False, description="Also write every audit event as a JSON line to stdout (for log shippers)."
    )
    auth: Literal["builtin", "proxy", "off"] = Field(
        default="builtin",
        description="Who the caller is: users and tokens in the store (builtin), headers from the single-sign-on "
        "proxy (proxy), or nobody checks (off: development only, refused unless bound to 127.0.0.1).",
    )
    trusted_proxies: str = Field(
        default="", description="Comma-separated addresses or networks of the SSO proxy (proxy mode only)."
    )
    proxy_user_header: str = Field(default="X-Forwarded-User", description="Header with the user (proxy mode).")
    proxy_groups_header: str = Field(
        default="X-Forwarded-Groups", description="Header with the comma-separated groups (proxy mode)."
    )
    proxy_group_prefix: str = Field(
        default="bip-",
        description="Groups PREFIXrole-ROLE give a role, PREFIXjobcentre-NAME a job centre (proxy mode).",
    )
    session_secret: str | None = Field(default=None, description="Key that signs session cookies and form tokens.")
    session_secret_file: Path | None = Field(default=None, description="File holding the session key instead.")
    session_hours: float = Field(default=8.0, gt=0, le=24 * 7, description="How long a login lasts.")
    cookie_secure: bool = Field(default=False, description="Send the session cookie over HTTPS only (production).")
    login_attempts: int = Field(default=5, ge=1, description="Failed logins per user in login_window_minutes.")
    login_window_minutes: float = Field(default=15.0, gt=0, description="Window of the failed-login limit.")
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
    gc_full_threshold: int = Field(
        default=1000,
        ge=1,
        description="In the service: middle-generation garbage collections between two full ones (Python's "
        "third threshold, default 10). A full collection holds the worker's requests while it walks every "
        "live object; see docs/serving.md, Operations.",
    )
    body_seconds: float = Field(
        default=8.0,
        gt=0,
        description="In the service: how long a POST body (the JSON APIs, the page's forms) may take to arrive "
        "(408 after it). Keep it below BentoML's request timeout (10 s; services.JobChance.traffic.timeout), "
        "which answers 504.",
    )
    lock_lease_seconds: float = Field(
        default=60.0, gt=0, description="How long the retrain and registry locks outlive a holder that died."
    )

    @field_validator("database_url")
    @classmethod
    def _usable_url(cls, url: str | None) -> str | None:
        """A store URL that SQLAlchemy can parse and whose driver is installed (never quoted back: it can
        hold a password)."""
        if url is None:
            return url
        from sqlalchemy.engine import make_url

        try:
            make_url(url).get_dialect().import_dbapi()
        except Exception as error:  # a malformed URL, an unknown dialect, a driver that is not installed
            raise ValueError(
                f"is not a database URL bip can use ({type(error).__name__}); bip stores in SQLite "
                "(sqlite:///PATH) or PostgreSQL (postgresql+psycopg://USER@HOST:5432/DB)"
            ) from None
        return url

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
    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The networks whose requests may carry the SSO proxy's identity headers."""
        return tuple(
            ipaddress.ip_network(a.strip(), strict=False) for a in self.trusted_proxies.split(",") if a.strip()
        )

    @property
    def secrets_folder(self) -> Path:
        return self.home.resolve() / "secrets"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (e.g. from CLI options) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
