"""The `bip users ...` and `bip audit` commands: accounts of the built-in identity, and the audit trail."""

from __future__ import annotations

import getpass
import json
import sys
from datetime import UTC, date, datetime
from typing import Annotated

import typer

from bip.errors import UserError

users_app = typer.Typer(
    help="Users of the service (built-in identity): caseworkers, researchers, services, admins.",
    no_args_is_help=True,
)


def _store_url() -> str:
    from bip.settings import load_settings

    return load_settings().store_url


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the two passwords differ.")
    return first


def _audited(event: str, name: str, **detail: object) -> None:
    """An audit row of an account change: who ran the command (the system user, role `cli`) and whom it concerned."""
    from serving.audit import AuditTrail, Event

    who = f"os:{getpass.getuser()}"
    AuditTrail(_store_url()).append([Event(event, user_id=who, role="cli", detail={"user": name, **detail})])


@users_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Pseudonymous user name: lower-case letters, digits, '.', '_', '-'.")],
    role: Annotated[str, typer.Option(help="caseworker, researcher, service or admin.")],
    jobcentre: Annotated[
        list[str] | None, typer.Option(help="A job centre whose citizens a caseworker sees (repeat for more).")
    ] = None,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input.")] = False,
    token: Annotated[bool, typer.Option(help="Also issue an API token (printed once), e.g. for a service.")] = False,
    no_password: Annotated[bool, typer.Option(help="No password: the user signs in with API tokens only.")] = False,
) -> None:
    """Add a user. Caseworkers need --jobcentre; services usually take --token --no-password."""
    from serving import accounts

    try:
        parsed = accounts.Role(role)
    except ValueError as error:
        raise UserError(f"--role must be one of {', '.join(r.value for r in accounts.Role)}.") from error
    password = None if no_password else _password(password_stdin)
    url = _store_url()
    accounts.add_user(url, name, parsed, jobcentre or (), password)
    _audited("user_added", name, role=parsed.value, jobcentres=len(jobcentre or ()))
    typer.echo(f"added {name} ({parsed.value})")
    if token:
        typer.echo(f"API token (shown once): {accounts.issue_token(url, name)}")
        _audited("token_issued", name)


@users_app.command("list")
def list_users(json_out: Annotated[bool, typer.Option("--json", help="One JSON object per user.")] = False) -> None:
    """List the users: name, role, job centres, active API tokens, created and revoked."""
    from serving import accounts

    rows = accounts.users(_store_url())
    for row in rows:
        record = {
            "user": row.user_id,
            "role": row.role.value,
            "jobcentres": list(row.jobcentres),
            "tokens": row.tokens,
            "created_at": row.created_at.isoformat(timespec="seconds"),
            "revoked_at": row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else None,
        }
        if json_out:
            typer.echo(json.dumps(record))
        else:
            state = f"revoked {record['revoked_at']}" if row.revoked_at else "active"
            centres = ",".join(row.jobcentres) or "-"
            typer.echo(f"{row.user_id:<24} {row.role.value:<11} {centres:<30} tokens={row.tokens} {state}")
    if not rows and not json_out:
        typer.echo("no users yet: add one with `bip users add NAME --role ROLE`")


@users_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The user to revoke (with every token of theirs).")]) -> None:
    """Revoke a user and their API tokens; the rows stay for the audit trail."""
    from serving import accounts

    accounts.revoke(_store_url(), name)
    _audited("user_revoked", name)
    typer.echo(f"revoked {name}")


@users_app.command("token")
def token(name: Annotated[str, typer.Argument(help="An active user.")]) -> None:
    """Issue another API token for a user (printed once; only its hash is stored)."""
    from serving import accounts

    typer.echo(accounts.issue_token(_store_url(), name))
    _audited("token_issued", name)


@users_app.command("password")
def password(
    name: Annotated[str, typer.Argument(help="An active user.")],
    password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input.")] = False,
) -> None:
    """Set a user's password."""
    from serving import accounts

    accounts.set_password(_store_url(), name, _password(password_stdin))
    _audited("password_set", name)
    typer.echo(f"password set for {name}")


@users_app.command("demo")
def demo() -> None:
    """For the demo only: a caseworker of every stored job centre and a service token, with fresh
    secrets written to BIP_HOME/secrets/demo-credentials.txt (mode 0600) and printed."""
    import secrets

    from bip.settings import load_settings
    from features import store
    from serving import accounts

    settings = load_settings()
    url = settings.store_url
    centres = store.jobcentres(url)
    if not centres:
        raise UserError("the store holds no citizens yet: run `bip ingest DIR` first.")
    for row in accounts.users(url):  # a second `make demo` replaces the demo users it made before
        if row.revoked_at is None and row.user_id.startswith(("demo-caseworker-", "demo-service-")):
            accounts.revoke(url, row.user_id)
    suffix = secrets.token_hex(3)
    caseworker, service = f"demo-caseworker-{suffix}", f"demo-service-{suffix}"
    password_text = secrets.token_urlsafe(12)
    accounts.add_user(url, caseworker, accounts.Role.caseworker, centres, password_text)
    accounts.add_user(url, service, accounts.Role.service)
    api_token = accounts.issue_token(url, service)
    _audited("user_added", caseworker, role="caseworker", jobcentres=len(centres))
    _audited("user_added", service, role="service")
    text = (
        f"caseworker login (all {len(centres)} job centres): {caseworker} / {password_text}\n"
        f"service API token: Authorization: Bearer {api_token}\n"
    )
    folder = settings.secrets_folder
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    (folder / "demo-credentials.txt").write_text(text, encoding="utf-8")
    (folder / "demo-credentials.txt").chmod(0o600)
    typer.echo(text + f"(also in {folder / 'demo-credentials.txt'})")


def audit(
    since: Annotated[str | None, typer.Option(help="Only events on or after this date (YYYY-MM-DD).")] = None,
    citizen: Annotated[str | None, typer.Option(help="Only events about this citizen id.")] = None,
    event: Annotated[str | None, typer.Option(help="Only this kind, e.g. page_view, assessment, login.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Read the audit trail: who viewed, scored or assessed which citizen, with which model version."""
    from bip.settings import load_settings
    from serving import audit as trail

    try:
        start = datetime.combine(date.fromisoformat(since), datetime.min.time(), UTC) if since else None
    except ValueError as error:
        raise UserError("--since must be a date YYYY-MM-DD.") from error
    rows = trail.events(load_settings().store_url, since=start, citizen_id=citizen, event=event)
    for row in rows:
        record = {k: v for k, v in row.items() if v not in (None, {})}
        record["at"] = row["at"].isoformat(timespec="milliseconds")
        if json_out:
            typer.echo(json.dumps(record, ensure_ascii=False))
        else:
            who = f"{row['user_id'] or '-'} ({row['role'] or '-'})"
            what = " ".join(f"{k}={record[k]}" for k in ("citizen_id", "model_version", "probability") if k in record)
            typer.echo(f"{record['at']}  {row['event']:<18} {who:<32} {what}")


COMMANDS = [audit]
GROUPS = [("users", users_app)]
