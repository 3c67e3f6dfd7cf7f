"""Clients' mistakes on the real server answer 4xx, say what was wrong, and leave no client text in the
access log or the metrics: the findings of a robustness sweep of the service and the caseworker page,
each a case the old code answered with a 5xx, a wrong message, or a leak."""

from __future__ import annotations

import re

import pytest
from conftest_service import Served, raw, wait_for
from conftest_service import served as served  # noqa: F401  (the module fixture)


@pytest.fixture(scope="module")
def citizens(served: Served) -> dict[str, str]:
    """A stored citizen of caseworker_a's job centre ("own") and one of another job centre ("other")."""
    from features import store

    store.ingest(served.dataset, served.store_url, source="test_client_mistakes")
    table = served.dataset.citizens.sort_values("citizen_id")
    first = sorted(table["jobcentre"].unique())[0]  # caseworker_a's only job centre
    return {
        "own": table.loc[table["jobcentre"] == first, "citizen_id"].iloc[0],
        "other": table.loc[table["jobcentre"] != first, "citizen_id"].iloc[0],
    }


def server_log(served: Served) -> str:
    return served.log.read_text(errors="replace")


def test_a_made_up_method_is_logged_and_counted_as_other(served, citizens):
    marker = f"{citizens['own']}X"  # any text a client sends as the method
    answer = served.anonymous().request(marker, "/livez")
    assert answer.status_code == 405
    wait_for(lambda: "OTHER /livez 405" in server_log(served), 10, "the access line")
    assert marker not in server_log(served)
    metrics = served.as_("admin").get("/metrics").text
    assert 'bip_http_requests_total{method="OTHER",route="/livez",status="405"}' in metrics
    assert marker not in metrics


def test_another_job_centres_citizen_and_an_unknown_id_get_the_same_page(served, citizens):
    from features import store

    caseworker = served.as_("caseworker_a")
    other = caseworker.get(f"/caseworker/citizen/{citizens['other']}")
    unknown = caseworker.get("/caseworker/citizen/C-nobody-at-all")
    assert other.status_code == unknown.status_code == 404
    assert other.text.replace(citizens["other"], "ID") == unknown.text.replace("C-nobody-at-all", "ID")
    assert caseworker.get(f"/caseworker/citizen/{citizens['own']}").status_code == 200
    # What the page asks first: the same one look-up for both (the same cost: no timing tells them apart).
    centres = sorted(served.dataset.citizens["jobcentre"].unique())[:1]
    assert store.visible(served.store_url, citizens["own"], centres)
    assert not store.visible(served.store_url, citizens["other"], centres)
    assert not store.visible(served.store_url, "C-nobody-at-all", centres)
    assert store.visible(served.store_url, citizens["other"], None)


@pytest.mark.parametrize("citizen_id", ["C%00", "C%0A1", "C" * 200])
def test_an_id_no_store_can_hold_is_an_unknown_citizen(served, citizen_id):
    answer = served.as_("caseworker").get(f"/caseworker/citizen/{citizen_id}")
    assert answer.status_code == 404, answer.text[:300]


def test_a_search_with_a_control_character_is_a_400_naming_the_search(served):
    answer = served.as_("caseworker").get("/caseworker/", params={"q": "C\x00"})
    assert answer.status_code == 400 and "(q)" in answer.text


def form_of(served: Served, citizen: str) -> dict[str, str]:
    page = served.as_("caseworker").get(f"/caseworker/citizen/{citizen}").text
    return dict(re.findall(r'name="(view|form_token)" value="([^"]*)"', page))


@pytest.mark.parametrize("view", ["²", "١٢", "2147483648", "9" * 5000])
def test_a_view_that_is_no_page_view_is_a_400(served, citizens, view):
    fields = {**form_of(served, citizens["own"]), "view": view, "assessment": "agree"}
    answer = served.as_("caseworker").post("/caseworker/assessments", data=fields)
    assert answer.status_code == 400 and "view: not a page view" in answer.text


def test_a_form_of_too_many_fields_is_a_400_not_a_forged_form(served, citizens):
    fields = {**form_of(served, citizens["own"]), "assessment": "agree"}
    fields.update({f"extra{k}": "x" for k in range(25)})
    answer = served.as_("caseworker").post("/caseworker/assessments", data=fields)
    assert answer.status_code == 400 and "not UTF-8 form data" in answer.text


@pytest.mark.parametrize("name", ["case\x00worker", "case\nworker"])
def test_a_login_name_with_a_control_character_is_a_400_and_not_logged(served, name):
    answer = served.anonymous().post("/caseworker/login", data={"name": name, "password": "x"})
    assert answer.status_code == 400 and "control characters" in answer.text
    assert name not in server_log(served)


def test_a_login_from_another_site_says_so(served):
    answer = served.anonymous().post(
        "/caseworker/login",
        data={"name": "caseworker", "password": "x"},
        headers={"Origin": "https://elsewhere.example"},
    )
    assert answer.status_code == 403 and "Formularen kom ikke fra denne side" in answer.text


def test_signing_in_in_english_keeps_the_query_of_the_page_asked_for(served):
    from conftest_service import PASSWORD

    answer = served.anonymous().post(
        "/caseworker/login",
        data={"name": "caseworker", "password": PASSWORD, "lang": "en", "next": "/caseworker/?q=C"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/caseworker/?q=C&lang=en"


def test_a_form_body_shorter_than_its_content_length_is_a_408_not_bentomls_504(served):
    request = (
        b"POST /caseworker/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 1000\r\n\r\nname=x"
    )
    status, body = raw(served, request)
    assert status.startswith("HTTP/1.1 408"), (status, body[:300])
    assert "did not arrive in time" in body or "nåede ikke frem" in body
    wait_for(lambda: "POST /caseworker/login 408" in server_log(served), 10, "the 408 in the access log")


def test_an_admin_job_id_of_any_shape_is_a_404(served):
    admin = served.as_("admin")
    for job in ("a" * 5000, "..", "20261206T000000-0123abcd"):
        answer = admin.get(f"/admin/jobs/{job}")
        assert answer.status_code == 404, (job[:20], answer.text[:200])


@pytest.mark.parametrize(
    "route, body",
    [
        ("/admin/promote", {"version": True}),
        ("/admin/promote", {"version": "1"}),
        ("/admin/promote", {"version": 1.0}),
        ("/admin/retrain", {"dry_run": "yes"}),
        ("/admin/retrain", {"dry_run": 1}),
    ],
)
def test_the_admin_api_converts_no_types(served, route, body):
    answer = served.as_("admin").post(route, json=body)
    assert answer.status_code == 422, answer.text
    assert [e["loc"][-1] for e in answer.json()["detail"]] == [next(iter(body))]


def test_promoting_an_unknown_version_names_no_tracking_server(served):
    answer = served.as_("admin").post("/admin/promote", json={"version": 999})
    assert answer.status_code == 404
    assert answer.json() == {"error": "bip-job-chance has no version 999"}


@pytest.mark.parametrize("path", ["/model", "/metrics"])
def test_head_is_answered_where_the_rules_allow_it(served, path):
    assert served.as_("admin").head(path).status_code == 200


def test_a_trailing_slash_is_not_redirected_to_the_clients_host(served):
    admin = served.as_("admin")
    for path, status in {"/metrics/": 200, "/model/": 200, "/admin/jobs/x/": 404}.items():
        answer = admin.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
        assert answer.status_code == status and "location" not in answer.headers, (path, answer.headers)


def signed_in(served: Served):
    import httpx
    from conftest_service import PASSWORD

    client = httpx.Client(base_url=served.url, timeout=60, follow_redirects=True)
    answer = client.post("/caseworker/login", data={"name": "caseworker", "password": PASSWORD})
    assert answer.status_code == 200 and "bip_session" in str(client.cookies.jar), answer.text[:200]
    return client


def test_a_form_token_belongs_to_its_session_and_ends_with_it(served, citizens):
    first, second = signed_in(served), signed_in(served)
    page = f"/caseworker/citizen/{citizens['own']}"
    tokens = [dict(re.findall(r'name="(view|form_token)" value="([^"]*)"', c.get(page).text)) for c in (first, second)]
    assert tokens[0]["form_token"] != tokens[1]["form_token"]
    # A token of one session is refused in the other, and the session's own is taken.
    crossed = second.post("/caseworker/assessments", data={**tokens[0], "assessment": "agree"})
    assert crossed.status_code == 403
    own = first.post("/caseworker/assessments", data={**tokens[0], "assessment": "agree"}, follow_redirects=False)
    assert own.status_code == 303
    # Signed out, the session's token is worth nothing in a new one.
    assert first.post("/caseworker/logout", data={"form_token": tokens[0]["form_token"]}).status_code == 200
    third = signed_in(served)
    replayed = third.post("/caseworker/assessments", data={**tokens[0], "assessment": "agree"})
    assert replayed.status_code == 403
