"""Access control over the whole application: the rule table against the app's real route table, and
a route x role matrix against the real BentoML server (fixture `served`, with real users and tokens
in its store).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest
from conftest_service import Served
from conftest_service import served as served  # noqa: F401  (the module fixture)

from serving.access import RULES, rule_for
from serving.schemas import EXAMPLE_HISTORY

pytestmark = pytest.mark.xdist_group("service")


def app_routes() -> Iterator[tuple[str, str]]:
    """(method, path template) of every route of the service as BentoML assembles it: its own routes,
    the APIs and every mounted app (the page, the admin endpoints, the model information)."""
    from _bentoml_impl.server.app import ServiceAppFactory

    from serving.service import JobChance

    JobChance.inject_config()
    yield from _walk(ServiceAppFactory(JobChance, is_main=True)().routes, "")


def _walk(routes, prefix: str) -> Iterator[tuple[str, str]]:
    for route in routes:
        if hasattr(route, "original_router"):  # FastAPI's included router
            yield from _walk(route.original_router.routes, prefix)
            continue
        path = prefix + (getattr(route, "path", "") or "")
        inner = getattr(getattr(route, "app", None), "routes", None) if not hasattr(route, "endpoint") else None
        if inner is not None:
            yield from _walk(inner, path)
        elif not hasattr(route, "endpoint"):  # a mount of static files: any path below it
            yield ("GET", path + "/{path:path}")
        else:
            for method in sorted(route.methods or {"GET"}):
                yield (method, path)


def concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", template)


def test_every_route_of_the_application_has_an_access_rule():
    routes = sorted(set(app_routes()))
    assert ("POST", "/predict") in routes and ("GET", "/caseworker/citizen/{citizen_id:path}") in routes
    without_rule = [(m, p) for m, p in routes if rule_for(m, concrete(p) or "/")[0] is None]
    assert not without_rule, f"routes without an access rule in serving.access.RULES: {without_rule}"


def test_every_rule_names_a_route_that_exists():
    paths = {concrete(p) or "/" for _, p in app_routes()}
    stale = [r.template for r in RULES if not any(r.pattern.match(p) for p in paths)]
    assert not stale, f"rules for routes that do not exist: {stale}"


# --- the matrix ------------------------------------------------------------------------------------------

WHO = ("anonymous", "caseworker", "researcher", "service", "admin")
# One row per route: the expected status for each caller, in the order of WHO. 303: to the login page.
MATRIX: dict[tuple[str, str], tuple[int, ...]] = {
    ("GET", "/livez"): (200, 200, 200, 200, 200),
    ("GET", "/healthz"): (200, 200, 200, 200, 200),
    ("GET", "/static_content/swagger-ui.css"): (200, 200, 200, 200, 200),
    ("GET", "/readyz"): (200, 200, 200, 200, 200),
    ("GET", "/docs.json"): (200, 200, 200, 200, 200),
    ("GET", "/schema.json"): (200, 200, 200, 200, 200),
    ("GET", "/"): (200, 200, 200, 200, 200),
    ("GET", "/api-docs.js"): (200, 200, 200, 200, 200),
    ("GET", "/api-docs.json"): (200, 200, 200, 200, 200),
    ("POST", "/predict"): (401, 403, 403, 200, 403),
    ("POST", "/predict_batch"): (401, 403, 403, 200, 403),
    ("GET", "/model"): (401, 200, 200, 200, 200),
    ("GET", "/metrics"): (401, 403, 200, 200, 200),
    ("GET", "/caseworker/login"): (200, 200, 200, 200, 200),
    ("GET", "/caseworker/static/page.css"): (200, 200, 200, 200, 200),
    ("GET", "/caseworker/"): (303, 200, 403, 403, 403),
    ("GET", "/caseworker/citizen/{citizen}"): (303, 200, 403, 403, 403),
    ("GET", "/caseworker/citizen/nobody"): (303, 404, 403, 403, 403),
    ("POST", "/caseworker/assessments"): (303, 403, 403, 403, 403),  # caseworker: no form token
    ("GET", "/caseworker/model"): (303, 200, 200, 403, 200),
    ("POST", "/caseworker/logout"): (303, 403, 403, 403, 403),  # signed in: no form token
    ("POST", "/admin/retrain"): (401, 403, 403, 403, 422),  # admin: a body that is refused, so nothing runs
    ("GET", "/admin/jobs/none"): (401, 403, 403, 403, 404),
    ("POST", "/admin/promote"): (401, 403, 403, 403, 422),
    ("GET", "/nowhere"): (404, 404, 404, 404, 404),
    ("GET", "/predict"): (405, 405, 405, 405, 405),
}
BODIES = {
    "/predict": {"json": EXAMPLE_HISTORY},
    "/predict_batch": {"json": {"citizens": [EXAMPLE_HISTORY]}},
    "/admin/retrain": {"json": {"dry_run": "not a flag"}},
    "/admin/promote": {"json": {"version": 0}},
    "/caseworker/assessments": {"data": {"view": "1", "assessment": "agree"}},
    "/caseworker/logout": {"data": {"form_token": "made-up"}},
}


@pytest.fixture(scope="module")
def stored_citizen(served: Served) -> str:
    from features import store

    store.ingest(served.dataset, served.store_url, source="test_access")
    return sorted(served.dataset.citizens["citizen_id"])[0]


def caller(served: Served, who: str):
    return served.anonymous() if who == "anonymous" else served.as_(who)


@pytest.mark.parametrize("who", WHO)
def test_route_by_role_matrix(served, stored_citizen, who):
    column = WHO.index(who)
    client = caller(served, who)
    got = {}
    for method, path in MATRIX:
        url = path.replace("{citizen}", stored_citizen)
        answer = client.request(method, url, follow_redirects=False, **BODIES.get(path, {}))
        got[(method, path)] = answer.status_code
        if answer.status_code == 303:
            assert answer.headers["location"].startswith("/caseworker/login?next=")
    expected = {key: statuses[column] for key, statuses in MATRIX.items()}
    assert got == expected


def test_the_matrix_covers_every_rule():
    paths = [concrete(path.replace("{citizen}", "x")) for _, path in MATRIX]
    uncovered = [r.template for r in RULES if not any(r.pattern.match(p) for p in paths)]
    assert not uncovered, f"add these routes to MATRIX: {uncovered}"


def test_a_wrong_token_is_refused_like_none(served):
    wrong = served.anonymous()
    token = served.accounts["service"].token
    forged = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    for header in (f"Bearer {forged}", "Bearer bip_0000000000000000_" + "x" * 43, "Basic dXNlcjpwYXNz", "Bearer"):
        answer = wrong.post("/predict", json=EXAMPLE_HISTORY, headers={"Authorization": header})
        assert answer.status_code == 401, header


def test_a_revoked_user_loses_access(served):
    from serving import accounts

    accounts.add_user(served.store_url, "short-lived", accounts.Role.researcher)
    token = accounts.issue_token(served.store_url, "short-lived")
    client = served.anonymous()
    assert client.get("/model", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    accounts.revoke(served.store_url, "short-lived")
    from conftest_service import wait_for

    # Within the token cache's lifetime (serving.accounts.TOKEN_CACHE_SECONDS) the token stops working.
    wait_for(
        lambda: client.get("/model", headers={"Authorization": f"Bearer {token}"}).status_code == 401,
        accounts.TOKEN_CACHE_SECONDS + 15,
        "the revoked token to be refused",
    )


def test_an_admin_body_is_not_read_before_the_caller_is_known(served):
    """Headers announcing 100 MB and no body: the 401 comes at once, without waiting for the body."""
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /admin/retrain HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n"
        )
        head = connection.recv(1024).decode("latin-1")
    assert head.startswith("HTTP/1.1 401"), head


def test_metrics_name_route_templates_never_citizen_ids(served, stored_citizen):
    served.as_("caseworker").get(f"/caseworker/citizen/{stored_citizen}")
    for made_up in ("/made/up/1", "/made/up/2", "/caseworker/citizen-no"):
        served.anonymous().get(made_up)
    assert served.anonymous().put("/model").status_code == 405
    text = served.as_("admin").get("/metrics").text
    assert 'route="/caseworker/citizen/{citizen_id:path}"' in text
    assert 'bip_http_requests_total{method="PUT",route="/model",status="405"}' in text  # a 405 under its route
    assert stored_citizen not in text
    assert "/made/up" not in text and 'route="(no route)"' in text


def test_readyz_names_what_it_checked(served):
    answer = served.anonymous().get("/readyz")
    body = answer.json()
    assert answer.status_code == 200 and body["ready"] is True
    assert body["store"] == "ok" and body["model"].startswith("version ") and body["problems"] == []
    info = served.client.get("/model").json()
    assert info["registry_checked_seconds_ago"] is not None and info["registry_checked_seconds_ago"] < 60


def test_pages_carry_the_security_headers(served, stored_citizen):
    answer = served.as_("caseworker").get(f"/caseworker/citizen/{stored_citizen}")
    assert answer.status_code == 200
    policy = answer.headers["content-security-policy"]
    assert "script-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-store"


def test_a_search_for_the_last_character_before_the_surrogates_answers(served, stored_citizen):
    assert served.as_("caseworker").get("/caseworker/?q=%ED%9F%BF").status_code == 200
