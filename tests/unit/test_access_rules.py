"""Access rules, identity from the SSO proxy's headers, sessions and form tokens, redaction."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from starlette.responses import PlainTextResponse

from bip.errors import redacted
from bip.settings import Settings
from features.store import _successor
from serving.access import (
    PRINCIPAL,
    RULES,
    AccessControl,
    Authenticator,
    Sessions,
    allowed,
    proxy_principal,
    rule_for,
)
from serving.accounts import Principal, Role
from serving.page.forms import safe_next


def test_each_request_finds_its_rule_and_unknown_paths_find_none():
    rule, known = rule_for("GET", "/caseworker/citizen/ab/c%2F")
    assert rule is not None and rule.template == "/caseworker/citizen/{citizen_id:path}" and known
    assert rule_for("GET", "/caseworker")[0].template == "/caseworker/"
    assert rule_for("DELETE", "/predict") == (None, "/predict")  # the path exists: 405, not 404
    assert rule_for("GET", "/caseworker/citizens") == (None, None)
    assert rule_for("GET", "/admin/jobs/a/b") == (None, None)  # {job} is one path segment
    assert all(rule.methods for rule in RULES)


def test_roles_are_checked_and_public_routes_need_nobody():
    predict, _ = rule_for("POST", "/predict")
    caseworker = Principal("c", frozenset({Role.caseworker}), frozenset({"A"}), "token")
    service = Principal("s", frozenset({Role.service}), None, "token")
    assert allowed(predict, service) and not allowed(predict, caseworker) and not allowed(predict, None)
    assert allowed(rule_for("GET", "/livez")[0], None)


def test_the_proxy_groups_give_roles_and_job_centres():
    p = proxy_principal("anna", "bip-role-caseworker, bip-jobcentre-Aarhus,other,bip-jobcentre-Odense", "bip-")
    assert p.roles == {Role.caseworker} and p.jobcentres == {"Aarhus", "Odense"} and p.via == "proxy"
    assert p.sees("Aarhus") and not p.sees("Vejle") and not p.sees(None)
    researcher = proxy_principal("bo", "bip-role-researcher,bip-role-nonsense,bip-jobcentre-Aarhus", "bip-")
    assert researcher.roles == {Role.researcher} and researcher.jobcentres is None
    assert proxy_principal("eve", "", "bip-").roles == frozenset()


def call(app, client_host: str, headers: dict[str, str], path: str = "/model") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(client_host, 50000))

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://bip") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(go())


def guarded(settings: Settings):
    """The real middleware around an app that answers with the principal it was given."""
    seen = {}

    async def inner(scope, receive, send):
        seen["principal"] = scope[PRINCIPAL]
        await PlainTextResponse("ok")(scope, receive, send)

    authenticator = Authenticator(settings, None, Sessions("k" * 40, 3600, False))
    return AccessControl(inner, lambda: authenticator), seen


def test_identity_headers_count_only_from_the_trusted_proxy(tmp_path):
    settings = Settings(home=tmp_path, auth="proxy", trusted_proxies="10.1.2.0/24, ::1")
    app, seen = guarded(settings)
    headers = {"X-Forwarded-User": "anna", "X-Forwarded-Groups": "bip-role-researcher"}
    assert call(app, "10.1.2.7", headers).status_code == 200
    assert seen["principal"].user_id == "anna" and seen["principal"].roles == {Role.researcher}
    assert call(app, "10.1.3.7", headers).status_code == 401  # not the proxy: the headers are ignored
    assert call(app, "127.0.0.1", headers).status_code == 401
    assert call(app, "10.1.2.7", {"X-Forwarded-Groups": "bip-role-admin"}).status_code == 401  # no user


def test_identity_headers_mean_nothing_in_builtin_mode(tmp_path):
    app, _ = guarded(Settings(home=tmp_path, auth="builtin", trusted_proxies="127.0.0.1"))
    headers = {"X-Forwarded-User": "anna", "X-Forwarded-Groups": "bip-role-admin"}
    assert call(app, "127.0.0.1", headers).status_code == 401


def test_a_page_visit_without_a_session_goes_to_the_login_form(tmp_path):
    app, _ = guarded(Settings(home=tmp_path))
    answer = call(app, "127.0.0.1", {}, "/caseworker/citizen/x?lang=en")
    assert answer.status_code == 303 and answer.headers["location"] == "/caseworker/login?next=/caseworker/citizen/x"


def test_sessions_are_signed_and_expire():
    sessions = Sessions("a-key-of-some-length-for-signing", 1, secure=True)
    header = sessions.cookie("anna")
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Secure" in header and "Max-Age=1" in header
    value = header.split(";")[0].split("=", 1)[1]
    user, issued, session = sessions.session_of(value)
    assert user == "anna" and abs(issued - time.time()) < 5 and len(session) == 16
    assert sessions.session_of(value[:-2] + ("AA" if not value.endswith("AA") else "BB")) is None
    assert Sessions("another-key-entirely-for-signing!", 60, False).session_of(value) is None
    time.sleep(2.1)
    assert sessions.session_of(value) is None


def test_form_tokens_belong_to_one_user():
    sessions = Sessions("a-key-of-some-length-for-signing", 3600, secure=False)
    anna = Principal("anna", frozenset({Role.caseworker}), frozenset({"A"}), "session")
    bo = Principal("bo", frozenset({Role.caseworker}), frozenset({"A"}), "session")
    token = sessions.form_token(anna)
    assert sessions.form_token_valid(token, anna) and not sessions.form_token_valid(token, bo)
    assert not sessions.form_token_valid("", anna)


def test_a_form_token_of_a_session_is_worth_nothing_in_another():
    sessions = Sessions("a-key-of-some-length-for-signing", 3600, secure=False)
    first = Principal("anna", frozenset({Role.caseworker}), frozenset({"A"}), "session", session="1111")
    second = Principal("anna", frozenset({Role.caseworker}), frozenset({"A"}), "session", session="2222")
    token = sessions.form_token(first)
    assert sessions.form_token_valid(token, first) and not sessions.form_token_valid(token, second)
    assert sessions.form_token(first) != sessions.form_token(second)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/caseworker/citizen/c1?lang=en", "/caseworker/citizen/c1?lang=en"),
        ("//evil.example/caseworker/", "/caseworker/"),
        ("https://evil.example/caseworker/", "/caseworker/"),
        ("/caseworker/\\\\evil", "/caseworker/"),
        ("/admin/retrain", "/caseworker/"),
        ("", "/caseworker/"),
    ],
)
def test_after_login_only_the_page_itself_is_a_destination(target, expected):
    assert safe_next(target) == expected


def test_credentials_in_urls_are_redacted():
    text = "OperationalError: could not connect to postgresql+psycopg://bip:s3cret@db:5432/bip and http://u@h/x"
    assert (
        redacted(text)
        == "OperationalError: could not connect to postgresql+psycopg://***@db:5432/bip and http://***@h/x"
    )
    assert "s3cret" not in redacted(text)
    assert redacted("sqlite:////var/bip/store.db") == "sqlite:////var/bip/store.db"


def test_a_prefix_search_bound_never_is_a_surrogate():
    assert _successor("\ud7ff") == "\ue000"
    assert _successor("ab") == "ac"
    assert _successor("") is None


def test_without_sign_in_only_this_machine_gets_in(tmp_path):
    app, seen = guarded(Settings(home=tmp_path, auth="off"))
    assert call(app, "127.0.0.1", {}, "/caseworker/").status_code == 200
    assert seen["principal"].roles == set(Role) and seen["principal"].jobcentres is None
    assert call(app, "192.0.2.10", {}, "/model").status_code == 401
