"""Who may call which route: the identity of every request, one rule per route, checked in one place.

`RULES` is the whole access policy of the service, one `Rule` per route of the application (the API,
the caseworker page, the admin endpoints, health and metrics); `AccessControl` is the ASGI middleware
that enforces it before any handler runs or any body is read. A path that matches no rule answers 404,
so a route added without a rule is unreachable (and `tests/integration/test_access.py` fails, as it
compares this table with the application's route table).

Identity (`BIP_AUTH`):
- `builtin`: users and API tokens in the store (`serving.accounts`). The page signs in with a form
  and keeps a signed, HttpOnly, SameSite=Strict session cookie (itsdangerous); the API takes
  `Authorization: Bearer <token>`.
- `proxy`: the job centre's single sign-on proxy authenticates and forwards the user and groups in
  headers (`BIP_PROXY_USER_HEADER`, `BIP_PROXY_GROUPS_HEADER`), trusted only from `BIP_TRUSTED_PROXIES`.
  Bearer tokens of the store still work, for other systems.
- `off`: development only; every request from this machine is a developer with every role. `bip serve`
  refuses it unless bound to 127.0.0.1, and requests from any other address are refused anyway.

The middleware also counts requests for Prometheus by route template (never the raw path, which can
hold a citizen id) and writes the access log line with the template, status and role.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from http.cookies import SimpleCookie
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import quote

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from bip.settings import Settings
from serving.accounts import Directory, Principal, Role

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PRINCIPAL = "bip.principal"  # the scope key that carries the request's Principal to the handlers
SESSION_COOKIE = "bip_session"
LOGIN_PATH = "/caseworker/login"
EVERYONE = frozenset(Role)
DEVELOPER = Principal("developer", EVERYONE, None, "development")
log = logging.getLogger("bip.access")


@dataclass(frozen=True)
class Rule:
    """Who may call `methods` on the route `template`: `roles` (None: anyone, signed in or not).
    `page`: an HTML route, whose unauthenticated visitor is sent to the login form instead of a 401."""

    methods: frozenset[str]
    template: str
    roles: frozenset[Role] | None
    page: bool = False

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        parts = re.split(r"(\{[^}]+\})", self.template.rstrip("/"))
        regex = "".join(
            ("(.+)" if part.endswith(":path}") else "([^/]+)") if part.startswith("{") else re.escape(part)
            for part in parts
        )
        return re.compile(f"^{regex}/?$")


def _rule(methods: str, template: str, roles: Iterable[Role] | None, page: bool = False) -> Rule:
    return Rule(frozenset(methods.split()), template, None if roles is None else frozenset(roles), page)


C, R, S, A = Role.caseworker, Role.researcher, Role.service, Role.admin
RULES: tuple[Rule, ...] = (
    # Probes and the API description: no personal data, needed before anyone signs in.
    _rule("GET HEAD", "/livez", None),
    _rule("GET HEAD", "/healthz", None),
    _rule("GET HEAD", "/readyz", None),
    _rule("GET HEAD", "/docs.json", None),
    _rule("GET HEAD", "/schema.json", None),
    _rule("GET HEAD", "/", None),  # the API page (BentoML's Swagger UI without remote scripts: serving.service)
    _rule("GET HEAD", "/api-docs.js", None),
    _rule("GET HEAD", "/api-docs.json", None),
    _rule("GET HEAD", "/static_content/{path:path}", None),
    # The API: raw histories in the body are for other systems; model information for every role.
    _rule("POST", "/predict", {S}),
    _rule("POST", "/predict_batch", {S}),
    _rule("GET HEAD", "/model", EVERYONE),
    _rule("GET HEAD", "/metrics", {A, R, S}),
    # The caseworker page: citizens for caseworkers (scoped to their job centres in the handlers).
    _rule("GET HEAD", "/caseworker/login", None, page=True),
    _rule("POST", "/caseworker/login", None, page=True),
    _rule("POST", "/caseworker/logout", EVERYONE, page=True),
    _rule("GET HEAD", "/caseworker/static/{path:path}", None, page=True),
    _rule("GET HEAD", "/caseworker/", {C}, page=True),
    _rule("GET HEAD", "/caseworker/citizen/{citizen_id:path}", {C}, page=True),
    _rule("POST", "/caseworker/assessments", {C}, page=True),
    _rule("GET HEAD", "/caseworker/model", {C, R, A}, page=True),
    # Administration.
    _rule("POST", "/admin/retrain", {A}),
    _rule("GET HEAD", "/admin/jobs/{job}", {A}),
    _rule("POST", "/admin/promote", {A}),
)


def rule_for(method: str, path: str, rules: Iterable[Rule] = RULES) -> tuple[Rule | None, str | None]:
    """The rule of a request, and the template of the first rule whose path matches, whatever its
    methods (None: no rule has the path; a 404, not a 405)."""
    template = None
    for rule in rules:
        if rule.pattern.match(path):
            template = template or rule.template
            if method in rule.methods:
                return rule, rule.template
    return None, template


def canonical_path(scope: Scope, rule: Rule) -> Scope:
    """`scope` with the path of `rule`'s template where the request added a trailing slash: served as
    the route itself rather than redirected (Starlette's redirect writes the client's Host header into
    its Location). A `{...:path}` parameter keeps its slashes: they can belong to an id."""
    path = scope.get("path", "/")
    if path == "/" or not path.endswith("/") or rule.template.endswith("/") or ":path}" in rule.template:
        return scope
    raw = scope.get("raw_path")
    return {**scope, "path": path.rstrip("/") or "/", "raw_path": raw.rstrip(b"/") if raw else raw}


def allowed(rule: Rule, principal: Principal | None) -> bool:
    """Whether `principal` may call the route of `rule`."""
    return rule.roles is None or (principal is not None and bool(principal.roles & rule.roles))


# --- sessions and form tokens -------------------------------------------------------------------------


def session_key(settings: Settings) -> str:
    """The key that signs session cookies and form tokens: BIP_SESSION_SECRET, or the file
    BIP_SESSION_SECRET_FILE, or one made once under BIP_HOME/secrets (mode 0600). Replicas must share it."""
    if settings.session_secret:
        return settings.session_secret
    path = settings.session_secret_file or settings.secrets_folder / "session.key"
    if not path.exists() and settings.session_secret_file is None:
        _create_secret(path)
    return Path(path).read_text(encoding="utf-8").strip()


def _create_secret(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker made it first
        return
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(secrets.token_urlsafe(48))


class Sessions:
    """Signed, expiring session cookies and per-user form (CSRF) tokens, both with itsdangerous."""

    def __init__(self, key: str, max_age_seconds: int, secure: bool) -> None:
        self.max_age, self.secure = max_age_seconds, secure
        self._cookies = URLSafeTimedSerializer(key, salt="bip-session")
        self._forms = URLSafeTimedSerializer(key, salt="bip-form")

    def cookie(self, user_id: str) -> str:
        """The Set-Cookie header value of a new session of `user_id`."""
        value = self._cookies.dumps({"u": user_id, "t": time.time(), "n": secrets.token_hex(8)})
        secure = "; Secure" if self.secure else ""
        return f"{SESSION_COOKIE}={value}; Path=/; Max-Age={self.max_age}; HttpOnly; SameSite=Strict{secure}"

    def ended(self) -> str:
        """The Set-Cookie header value that ends the session."""
        secure = "; Secure" if self.secure else ""
        return f"{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}"

    def session_of(self, value: str) -> tuple[str, float, str] | None:
        """The user, issue time (Unix) and random id of a session cookie's value; None if forged, broken
        or expired."""
        try:
            data = self._cookies.loads(value, max_age=self.max_age)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("u"), str) or not isinstance(data.get("t"), float):
            return None
        return data["u"], data["t"], str(data.get("n", ""))

    def form_token(self, principal: Principal) -> str:
        """The form (CSRF) token of `principal`'s forms: bound to the user and, signed in with a cookie,
        to that session, so that it is worth nothing in another session or once the session ended."""
        return self._forms.dumps([principal.user_id, principal.session])

    def form_token_valid(self, token: str, principal: Principal) -> bool:
        try:
            return self._forms.loads(token, max_age=self.max_age) == [principal.user_id, principal.session]
        except BadSignature:
            return False


# --- who is asking ------------------------------------------------------------------------------------


def _loopback(host: str) -> bool:
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookie(headers: dict[str, str], name: str) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header is no session, not an error
        return None
    return jar[name].value if name in jar else None


def proxy_principal(user: str, groups: str, prefix: str) -> Principal:
    """The principal of an SSO user from the proxy's group list: PREFIXrole-ROLE and PREFIXjobcentre-NAME."""
    names = [g.strip() for g in groups.split(",") if g.strip()]
    roles = {
        Role(g[len(prefix) + 5 :]) for g in names if g.startswith(f"{prefix}role-") and g[len(prefix) + 5 :] in Role
    }
    centres = frozenset(g[len(prefix) + 10 :] for g in names if g.startswith(f"{prefix}jobcentre-"))
    return Principal(user, frozenset(roles), centres if Role.caseworker in roles else None, "proxy")


class Authenticator:
    """Finds the principal of a request from its headers, following `settings.auth`."""

    def __init__(self, settings: Settings, directory: Directory | None, sessions: Sessions | None) -> None:
        self.settings, self.directory, self.sessions = settings, directory, sessions
        self.networks = settings.proxy_networks

    def principal(self, scope: Scope) -> Principal | None:
        if self.settings.auth == "off":
            # Development only: whatever address the server was bound to, only this machine is let in.
            return DEVELOPER if _loopback((scope.get("client") or ("", 0))[0]) else None
        headers = _headers(scope)
        authorization = headers.get("authorization", "")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or self.directory is None:
                return None
            return self.directory.token(token.strip())
        if self.settings.auth == "proxy":
            return self._from_proxy(scope, headers)
        value = _cookie(headers, SESSION_COOKIE)
        session = self.sessions.session_of(value) if value and self.sessions else None
        if session is None or self.directory is None:
            return None
        user, issued, session_id = session
        principal = self.directory.user(user, issued)
        return replace(principal, session=session_id) if principal is not None else None

    def _from_proxy(self, scope: Scope, headers: dict[str, str]) -> Principal | None:
        user = headers.get(self.settings.proxy_user_header.lower(), "").strip()
        if not user:
            return None
        client = (scope.get("client") or ("", 0))[0]
        try:
            trusted = any(ip_address(client) in network for network in self.networks)
        except ValueError:
            trusted = False
        if not trusted:
            log.warning("identity headers from an address that is not a trusted proxy were ignored")
            return None
        groups = headers.get(self.settings.proxy_groups_header.lower(), "")
        return proxy_principal(user[:128], groups, self.settings.proxy_group_prefix)


# --- the middleware -----------------------------------------------------------------------------------


def _refusal(rule: Rule | None, status: int, scope: Scope) -> Response:
    if rule is not None and rule.page and status == 401:
        target = scope.get("path", "/")
        return RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='/')}", status_code=303)
    if rule is not None and rule.page:
        text = {403: "Forbidden: your role does not give access to this page.", 405: "Method not allowed."}
        return PlainTextResponse(
            text.get(status, "Not found."), status_code=status, headers={"Cache-Control": "no-store"}
        )
    messages = {
        401: "authentication required: send Authorization: Bearer <token>",
        403: "your role does not give access to this route",
        404: "no such route",
        405: "method not allowed on this route",
    }
    headers = {"WWW-Authenticate": 'Bearer realm="bip"'} if status == 401 else {}
    return JSONResponse({"error": messages[status]}, status_code=status, headers=headers)


# The methods counted and logged by name; any other is "OTHER" (a method is the client's text: an id sent
# as one would otherwise land in the access log and make a metric series of its own).
HTTP_METHODS = frozenset(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"])


def shown_method(method: str) -> str:
    """`method` as the access log and the metrics name it."""
    return method if method in HTTP_METHODS else "OTHER"


class AccessControl:
    """ASGI middleware: every HTTP request is matched to its rule and its principal is checked against
    it before anything else runs; the principal is put in the scope for the handlers (`PRINCIPAL`)."""

    def __init__(
        self, app: Any, authenticator: Callable[[], Authenticator], metrics: Callable[[], Any] | None = None
    ) -> None:
        self.app, self.authenticator, self.metrics = app, authenticator, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, method, path = time.perf_counter(), scope["method"], scope.get("path", "/")
        rule, template = rule_for(method, path)
        status_box = [500]

        async def counted_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        principal = None
        try:
            if rule is None:
                await _refusal(None, 405 if template else 404, scope)(scope, receive, counted_send)
                return
            principal = self.authenticator().principal(scope) if rule.roles is not None or rule.page else None
            if not allowed(rule, principal):
                await _refusal(rule, 401 if principal is None else 403, scope)(scope, receive, counted_send)
                return
            scope = canonical_path(scope, rule)
            scope[PRINCIPAL] = principal
            await self.app(scope, receive, counted_send)
        except asyncio.CancelledError:
            # BentoML's request timeout cancelled the request and answers 504 itself, outside this middleware.
            if status_box[0] == 500:
                status_box[0] = 504
            raise
        finally:
            template = template or "(no route)"  # a 405 counts under the route's template
            seconds = time.perf_counter() - start
            shown = shown_method(method)
            if self.metrics is not None:
                self.metrics().observe(shown, template, status_box[0], seconds)
            log.info(
                "%s %s %d %.1fms %s",
                shown,
                template,
                status_box[0],
                1000 * seconds,
                principal.role if principal else "-",
            )


def principal_of(scope: Scope) -> Principal | None:
    """The principal that `AccessControl` found for this request (None on a public route)."""
    return scope.get(PRINCIPAL)
