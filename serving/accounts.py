"""Users, their roles and job centres, and their API tokens, kept in the store (the built-in identity).

A user is a pseudonymous login name with one role and, for caseworkers, the job centres whose citizens
they may see. Passwords and API tokens are stored only as argon2 hashes (argon2-cffi). An API token is
`bip_<token id>_<secret>`: the id finds the row, the secret is checked against its hash, and a token
that passed is remembered (as a SHA-256 digest, for `TOKEN_CACHE_SECONDS`) so that a busy API client
does not pay argon2's deliberate cost on every request. Revoking a user revokes their tokens; a cached
token stops working within `TOKEN_CACHE_SECONDS`, a session at its next request (`PRINCIPAL_CACHE_SECONDS`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Column, DateTime, Float, ForeignKey, MetaData, String, Table, inspect, select, update
from sqlalchemy.engine import Connection

from bip.errors import UserError
from features import store
from features.contract_declaration import CONTROL

TOKEN_CACHE_SECONDS = 30.0
PRINCIPAL_CACHE_SECONDS = 5.0
MIN_PASSWORD_CHARS = 12
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")
_TOKEN = re.compile(r"^bip_([0-9a-f]{16})_([A-Za-z0-9_-]{30,64})$")


class Role(StrEnum):
    """What a user may do (docs/security.md has the table of routes per role)."""

    caseworker = "caseworker"  # search and citizen pages of their own job centres
    researcher = "researcher"  # model information and aggregate figures, no citizen page
    service = "service"  # /predict and /predict_batch with histories in the body, for other systems
    admin = "admin"  # retrain, promote, users


@dataclass(frozen=True)
class Principal:
    """Who is asking: a pseudonymous user id, their roles and the job centres they may see (None: all)."""

    user_id: str
    roles: frozenset[Role]
    jobcentres: frozenset[str] | None
    via: str  # session, token, proxy or development
    session: str = ""  # the signed-in session's own random id ("" for a token, the proxy or development)

    @property
    def role(self) -> str:
        """The roles as one audit field, e.g. 'caseworker' or 'admin+researcher'."""
        return "+".join(sorted(self.roles))

    def sees(self, jobcentre: str | None) -> bool:
        return self.jobcentres is None or (jobcentre is not None and jobcentre in self.jobcentres)


@dataclass(frozen=True)
class UserRow:
    user_id: str
    role: Role
    jobcentres: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None
    tokens: int


def _schema() -> MetaData:
    metadata = MetaData()
    Table(
        "users",
        metadata,
        Column("user_id", store.ID_TYPE, primary_key=True),
        Column("role", String, nullable=False),
        Column("password_hash", String),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("revoked_at", DateTime(timezone=True)),
        # Sessions issued before this moment (Unix time) are over: set by signing out, revoking, a new password.
        Column("sessions_after", Float),
    )
    Table(
        "user_jobcentres",
        metadata,
        Column("user_id", store.ID_TYPE, ForeignKey("users.user_id"), primary_key=True),
        Column("jobcentre", String, primary_key=True),
    )
    Table(
        "api_tokens",
        metadata,
        Column("token_id", String, primary_key=True),
        Column("user_id", store.ID_TYPE, ForeignKey("users.user_id"), nullable=False, index=True),
        Column("token_hash", String, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("revoked_at", DateTime(timezone=True)),
    )
    return metadata


SCHEMA = _schema()
USERS, JOBCENTRES, TOKENS = (SCHEMA.tables[n] for n in ("users", "user_jobcentres", "api_tokens"))


def _hasher() -> PasswordHasher:
    return PasswordHasher()


def _password_hash(password: str) -> str:
    """The argon2 hash of an acceptable password (UserError for a short one)."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise UserError(f"a password has at least {MIN_PASSWORD_CHARS} characters.")
    return _hasher().hash(password)


def valid_name(name: str) -> str:
    """A user name as stored: 2-63 lower-case letters, digits, '.', '_' or '-' (UserError otherwise)."""
    if not _NAME.match(name):
        raise UserError("a user name is 2-63 characters: lower-case letters, digits, '.', '_' or '-'.")
    return name


def add_user(url: str, name: str, role: Role, jobcentres: Sequence[str] = (), password: str | None = None) -> None:
    """Create a user; a caseworker needs at least one job centre. UserError if the name is taken."""
    valid_name(name)
    if role == Role.caseworker and not jobcentres:
        raise UserError("a caseworker needs at least one --jobcentre.")
    if role != Role.caseworker and jobcentres:
        raise UserError("only caseworkers are scoped to job centres.")
    if any(not j.strip() or CONTROL.search(j) for j in jobcentres):
        raise UserError("a --jobcentre is a job centre's name: not empty, without control characters.")
    password_hash = _password_hash(password) if password is not None else None
    with store.write_transaction(url) as conn:
        SCHEMA.create_all(conn)
        if conn.execute(select(USERS.c.user_id).where(USERS.c.user_id == name)).first() is not None:
            raise UserError(
                f"user {name!r} exists already (revoked users keep their name in the audit trail: choose another)."
            )
        conn.execute(
            USERS.insert().values(
                user_id=name, role=role.value, password_hash=password_hash, created_at=datetime.now(UTC)
            )
        )
        if jobcentres:
            conn.execute(JOBCENTRES.insert(), [{"user_id": name, "jobcentre": j} for j in sorted(set(jobcentres))])


def _update_active_user(conn: Connection, name: str, **values: object) -> None:
    """Set `values` on the active (not revoked) user `name`; a UserError when there is none."""
    done = conn.execute(update(USERS).where(USERS.c.user_id == name, USERS.c.revoked_at.is_(None)).values(**values))
    if done.rowcount != 1:
        raise UserError(f"no active user {name!r}.")


def set_password(url: str, name: str, password: str) -> None:
    """Give an active user a new password."""
    password_hash = _password_hash(password)
    with store.write_transaction(url) as conn:
        SCHEMA.create_all(conn)
        _update_active_user(conn, name, password_hash=password_hash, sessions_after=time.time())


def issue_token(url: str, name: str) -> str:
    """A new API token for an active user; only its hash is stored, so it is shown once."""
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    with store.write_transaction(url) as conn:
        SCHEMA.create_all(conn)
        if _active_user(conn, name) is None:
            raise UserError(f"no active user {name!r}.")
        conn.execute(
            TOKENS.insert().values(
                token_id=token_id, user_id=name, token_hash=_hasher().hash(secret), created_at=datetime.now(UTC)
            )
        )
    return f"bip_{token_id}_{secret}"


def revoke(url: str, name: str) -> None:
    """Revoke a user and every token of theirs (the rows stay, for the audit trail)."""
    now = datetime.now(UTC)
    with store.write_transaction(url) as conn:
        SCHEMA.create_all(conn)
        _update_active_user(conn, name, revoked_at=now, sessions_after=time.time())
        conn.execute(
            update(TOKENS).where(TOKENS.c.user_id == name, TOKENS.c.revoked_at.is_(None)).values(revoked_at=now)
        )


def end_sessions(url: str, name: str) -> None:
    """End every session of `name` issued until now (signing out ends the user's sessions everywhere)."""
    with store.write_transaction(url) as conn:
        conn.execute(update(USERS).where(USERS.c.user_id == name).values(sessions_after=time.time()))


def users(url: str) -> list[UserRow]:
    """Every user, active and revoked, by name."""
    with store.engine(url).connect() as conn:
        if not _has_schema(conn):
            return []
        rows = conn.execute(select(USERS).order_by(USERS.c.user_id)).mappings().all()
        centres = _jobcentres_of(conn, [r["user_id"] for r in rows])
        tokens: dict[str, int] = {}
        for (user_id,) in conn.execute(select(TOKENS.c.user_id).where(TOKENS.c.revoked_at.is_(None))):
            tokens[user_id] = tokens.get(user_id, 0) + 1
    return [
        UserRow(
            r["user_id"],
            Role(r["role"]),
            tuple(sorted(centres.get(r["user_id"], ()))),
            store.as_utc(r["created_at"]),
            store.as_utc(r["revoked_at"]) if r["revoked_at"] else None,
            tokens.get(r["user_id"], 0),
        )
        for r in rows
    ]


def _has_schema(conn: Connection) -> bool:
    return inspect(conn).has_table("users")


def _jobcentres_of(conn: Connection, names: Iterable[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    stmt = select(JOBCENTRES.c.user_id, JOBCENTRES.c.jobcentre).where(JOBCENTRES.c.user_id.in_(list(names)))
    for user_id, jobcentre in conn.execute(stmt):
        out.setdefault(user_id, set()).add(jobcentre)
    return out


def _active_user(conn: Connection, name: str) -> dict | None:
    row = conn.execute(select(USERS).where(USERS.c.user_id == name, USERS.c.revoked_at.is_(None))).mappings().first()
    return dict(row) if row is not None else None


def _principal_of(conn: Connection, row: dict, via: str) -> Principal:
    role = Role(row["role"])
    centres = _jobcentres_of(conn, [row["user_id"]]).get(row["user_id"], set())
    return Principal(row["user_id"], frozenset({role}), frozenset(centres) if role == Role.caseworker else None, via)


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so that a login takes as long either way."""
    return _hasher().hash(secrets.token_urlsafe(16))


def _verified(password_hash: str | None, secret: str) -> bool:
    try:
        return _hasher().verify(password_hash or _dummy_hash(), secret) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def login(url: str, name: str, password: str) -> Principal | None:
    """The principal of a correct name and password of an active user; None otherwise (same cost)."""
    with store.engine(url).connect() as conn:
        row = _active_user(conn, name) if _has_schema(conn) and _NAME.match(name) else None
        if not _verified(row["password_hash"] if row else None, password) or row is None:
            return None
        return _principal_of(conn, row, "session")


def exists(url: str, name: str) -> bool:
    """Whether `name` is an active user (to tell a failed login of a user from a mistyped name)."""
    with store.engine(url).connect() as conn:
        return _has_schema(conn) and _active_user(conn, name) is not None


class Directory:
    """Looks principals up in one store for the service, with the short caches described above."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[bytes, Principal, float]] = {}
        self._users: dict[str, tuple[Principal | None, float, float]] = {}

    def user(self, name: str, issued_at: float) -> Principal | None:
        """The active user `name` of a session issued at `issued_at` (Unix time); None when the user is
        revoked or unknown, or the session ended (signed out since). Re-read at most every few seconds."""
        now = time.monotonic()
        with self._lock:
            cached = self._users.get(name)
        if cached is None or cached[2] <= now:
            with store.engine(self.url).connect() as conn:
                row = _active_user(conn, name) if _has_schema(conn) else None
                principal = _principal_of(conn, row, "session") if row else None
            cached = (principal, (row or {}).get("sessions_after") or 0.0, now + PRINCIPAL_CACHE_SECONDS)
            with self._lock:
                self._users[name] = cached
        principal, sessions_after, _ = cached
        return principal if principal is not None and issued_at > sessions_after else None

    def forget(self, name: str) -> None:
        """Drop what is cached of `name` (after signing out), so the next request reads the store."""
        with self._lock:
            self._users.pop(name, None)

    def token(self, token: str) -> Principal | None:
        """The principal of a valid API token of an active user; None otherwise."""
        match = _TOKEN.match(token)
        if match is None:
            return None
        token_id, secret = match.groups()
        digest, now = hashlib.sha256(token.encode()).digest(), time.monotonic()
        with self._lock:
            cached = self._tokens.get(token_id)
        # A token that passed argon2 a moment ago: its digest, compared in constant time.
        if cached is not None and cached[2] > now and hmac.compare_digest(cached[0], digest):
            return cached[1]
        with store.engine(self.url).connect() as conn:
            if not _has_schema(conn):
                return None
            stmt = select(TOKENS).where(TOKENS.c.token_id == token_id, TOKENS.c.revoked_at.is_(None))
            row = conn.execute(stmt).mappings().first()
            if row is None or not _verified(row["token_hash"], secret):
                return None
            user = _active_user(conn, row["user_id"])
            principal = _principal_of(conn, user, "token") if user else None
        if principal is not None:
            with self._lock:
                self._tokens[token_id] = (digest, principal, now + TOKEN_CACHE_SECONDS)
        return principal
