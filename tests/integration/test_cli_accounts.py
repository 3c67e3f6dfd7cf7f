"""`bip users`, `bip audit`, private files and the development switch, through the real command line."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from bip_cli import run_bip
from conftest import small_dataset

from features.contract import write_dataset

REPO = Path(__file__).resolve().parents[2]


def bip(home: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    return run_bip(*args, home=home, stdin=stdin, **env)


@pytest.fixture
def home(tmp_path) -> Path:
    data = tmp_path / "data"
    write_dataset(small_dataset(), data)
    done = bip(tmp_path / "home", "ingest", str(data))
    assert done.returncode == 0, done.stderr
    return tmp_path / "home"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_users_can_be_added_before_anything_is_ingested(tmp_path):
    done = bip(tmp_path / "fresh", "users", "add", "ops", "--role", "admin", "--token", "--no-password")
    assert done.returncode == 0, done.stderr
    assert mode(tmp_path / "fresh") & 0o077 == 0


def test_what_bip_writes_is_readable_by_its_owner_only(home):
    assert mode(home / "store.db") & 0o077 == 0
    assert mode(home) & 0o077 == 0


def test_users_are_added_listed_and_revoked_and_each_step_is_audited(home):
    added = bip(
        home,
        "users",
        "add",
        "anna",
        "--role",
        "caseworker",
        "--jobcentre",
        "jc-north",
        "--password-stdin",
        stdin="a long enough password\n",
    )
    assert added.returncode == 0, added.stderr
    service = bip(home, "users", "add", "hr-system", "--role", "service", "--token", "--no-password")
    assert service.returncode == 0 and "API token (shown once): bip_" in service.stdout
    listed = [json.loads(line) for line in bip(home, "users", "list", "--json").stdout.splitlines()]
    assert {(u["user"], u["role"], tuple(u["jobcentres"]), u["tokens"]) for u in listed} == {
        ("anna", "caseworker", ("jc-north",), 0),
        ("hr-system", "service", (), 1),
    }
    assert bip(home, "users", "revoke", "anna").returncode == 0
    again = bip(home, "users", "revoke", "anna")
    assert again.returncode == 2 and "no active user" in again.stderr
    events = [json.loads(line) for line in bip(home, "audit", "--json").stdout.splitlines()]
    assert all(e["user_id"].startswith("os:") and e["role"] == "cli" for e in events)  # who ran the command
    assert [(e["event"], e["detail"]["user"]) for e in events] == [
        ("user_added", "anna"),
        ("user_added", "hr-system"),
        ("token_issued", "hr-system"),
        ("user_revoked", "anna"),
    ]
    assert "a long enough password" not in bip(home, "audit").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["users", "add", "anna", "--role", "boss", "--no-password"], "--role must be one of"),
        (["users", "add", "anna", "--role", "caseworker", "--no-password"], "needs at least one --jobcentre"),
        (["audit", "--since", "yesterday"], "--since must be a date"),
    ],
)
def test_wrong_use_is_a_clear_error(home, args, message):
    done = bip(home, *args)
    assert done.returncode == 2 and message in done.stderr


def test_the_demo_users_see_every_job_centre_and_replace_earlier_ones(home):
    first = bip(home, "users", "demo")
    assert first.returncode == 0, first.stderr
    assert "caseworker login" in first.stdout and "Authorization: Bearer bip_" in first.stdout
    credentials = home / "secrets" / "demo-credentials.txt"
    assert mode(credentials) == 0o600 and mode(credentials.parent) & 0o077 == 0
    bip(home, "users", "demo")
    users = [json.loads(line) for line in bip(home, "users", "list", "--json").stdout.splitlines()]
    active = [u for u in users if u["revoked_at"] is None]
    assert len(users) == 4 and len(active) == 2
    centres = sorted(small_dataset().citizens["jobcentre"].unique())
    assert next(u for u in active if u["role"] == "caseworker")["jobcentres"] == centres


def test_serving_without_sign_in_is_refused_beyond_this_machine(home):
    done = bip(home, "serve", "--host", "0.0.0.0", BIP_AUTH="off")
    assert done.returncode == 2 and "BIP_AUTH=off is for local development only" in done.stderr
