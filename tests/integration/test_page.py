"""The caseworker page end to end: the real BentoML server (fixture `served` of conftest_service.py)
with the simulated dataset ingested into its store, driven by a real headless browser (Playwright
with Debian's chromium, installed by `make test`; never skipped).

The browser signs in through the page's own login form, as a caseworker of every job centre
(`caseworker`) or of the first one only (`caseworker-a`); the form posts (CSRF) are also sent with
httpx and a caseworker's API token, which the page accepts as well.

Set BIP_SCREENSHOT_DIR=docs/screenshots to refresh the screenshots in the documentation.

(About 730 lines: 21 browser tests share one served store and one signed-in browser; split, each file
would start its own server.)
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import small_dataset
from conftest_service import PASSWORD, Served
from conftest_service import served as served  # noqa: F401  (the module fixture)

from bip.settings import Settings
from features import store
from features.catalogue import INDICATOR_CODES, INDICATORS, indicator
from serving import accounts, audit
from serving.access import PRINCIPAL, SESSION_COOKIE, Sessions
from serving.accounts import Principal, Role
from serving.histories import history_from_dataset
from serving.page.text import TEXT
from serving.schemas import CitizenHistory

pytestmark = pytest.mark.xdist_group("page")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PAGE = "/caseworker"
SEARCH_LIMIT = 50  # serving.page.app.SEARCH_LIMIT: the ids an empty search lists


@pytest.fixture(scope="module")
def page_store(served: Served) -> str:
    """The server's store (BIP_HOME/store.db) holding the simulated dataset the model was trained on."""
    url = Settings(home=served.home).store_url
    assert url == served.store_url
    store.ingest(served.dataset, url, source="test_page")
    return url


@pytest.fixture(scope="module")
def jobcentre_of(served: Served) -> dict[str, str]:
    return served.dataset.citizens.set_index("citizen_id")["jobcentre"].to_dict()


@pytest.fixture(scope="module")
def jobcentre_a(served: Served) -> str:
    """The one job centre of `caseworker-a` (conftest_service.make_accounts: the first in order)."""
    return sorted(served.dataset.citizens["jobcentre"].unique())[0]


@pytest.fixture(scope="module")
def citizen_id(served: Served, page_store: str) -> str:
    """A citizen with a long history and interventions: every part of the page has something to show."""
    rounds = served.dataset.measurements["citizen_id"].value_counts()
    with_interventions = set(served.dataset.interventions["citizen_id"])
    return sorted(c for c in rounds.index[:40] if c in with_interventions)[0]


def measured_citizens(served: Served, jobcentre_of: dict[str, str], inside: bool, jobcentre: str) -> list[str]:
    measured = set(served.dataset.measurements["citizen_id"])
    return sorted(c for c in measured if (jobcentre_of[c] == jobcentre) == inside)


@pytest.fixture(scope="module")
def citizen_of_a(served: Served, page_store: str, jobcentre_of, jobcentre_a) -> str:
    return measured_citizens(served, jobcentre_of, True, jobcentre_a)[0]


@pytest.fixture(scope="module")
def citizen_of_b(served: Served, page_store: str, jobcentre_of, jobcentre_a) -> str:
    """A stored citizen of another job centre than caseworker-a's."""
    return measured_citizens(served, jobcentre_of, False, jobcentre_a)[0]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is missing: `make test` installs Debian's chromium (make browser)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Tab:
    """A browser page that remembers every URL it requested."""

    def __init__(self, page, base: str) -> None:
        self.page, self.base, self.requested = page, base, []
        page.on("request", lambda request: self.requested.append(request.url))

    def open(self, path: str):
        response = self.page.goto(self.base + path)
        assert response is not None
        return response

    def session_cookies(self) -> list[dict]:
        return [c for c in self.page.context.cookies() if c["name"] == SESSION_COOKIE]


def sign_in(page, base: str, name: str, password: str = PASSWORD, from_login_page: bool = True):
    """Sign in through the login form (opened first, unless the page shows it already); the answer
    the browser ends on."""
    if from_login_page:
        page.goto(f"{base}{PAGE}/login")
    page.locator("#name").fill(name)
    page.locator("#password").fill(password)
    with page.expect_navigation() as navigation:
        page.locator("#login-button").click()
    return navigation.value


def new_context(browser, storage_state: dict | None = None):
    return browser.new_context(viewport={"width": 1100, "height": 900}, locale="da-DK", storage_state=storage_state)


@pytest.fixture(scope="module")
def caseworker_session(browser, served: Served, page_store: str) -> dict:
    """The browser state of `caseworker` signed in through the real login form: its session cookie."""
    context = new_context(browser)
    page = context.new_page()
    answer = sign_in(page, served.url, served.accounts["caseworker"].name)
    assert answer.status == 200 and urlsplit(page.url).path == f"{PAGE}/", page.url
    (cookie,) = [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    state = context.storage_state()
    context.close()
    return state


@pytest.fixture
def open_tab(browser, served: Served, page_store: str) -> Iterator[Callable[..., Tab]]:
    """Opens browser tabs, each in a context of its own: signed in as the account `key`, with the saved
    `storage_state`, or (neither) signed out. Each must load nothing from elsewhere."""
    opened: list[tuple[object, Tab]] = []

    def open_one(key: str | None = None, storage_state: dict | None = None) -> Tab:
        context = new_context(browser, storage_state)
        tab = Tab(context.new_page(), served.url)
        opened.append((context, tab))
        if key is not None:
            answer = sign_in(tab.page, served.url, served.accounts[key].name)
            assert answer.status == 200, answer.status
        return tab

    yield open_one
    outside = [
        u for _, t in opened for u in t.requested if not (u.startswith(served.url + "/") or u.startswith("data:"))
    ]
    for context, _ in opened:
        context.close()
    assert not outside, f"the page loaded something from elsewhere: {outside}"


@pytest.fixture
def tab(open_tab, caseworker_session) -> Tab:
    """A tab of `caseworker`, signed in (every job centre)."""
    return open_tab(storage_state=caseworker_session)


def api_prediction(served: Served, history: CitizenHistory | dict) -> dict:
    body = history if isinstance(history, dict) else history.model_dump(mode="json")
    answer = served.client.post("/predict", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def percent_text(probability: float) -> str:
    return f"{100 * probability:.0f}\u00a0%"


def test_search_finds_the_citizen_and_opens_the_page(tab, citizen_id):
    page = tab.page
    tab.open(f"{PAGE}/")
    page.get_by_label("Borgerens pseudonyme id").fill(citizen_id[:-1])
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/caseworker/\?q="))
    link = page.locator("#results a", has_text=citizen_id)
    assert link.count() == 1
    link.click()
    page.wait_for_url(f"**{PAGE}/citizen/{citizen_id}")
    assert page.locator("#citizen-id").inner_text() == citizen_id


def test_the_percentage_equals_the_api_and_says_what_it_is(tab, served, page_store, citizen_id):
    response = tab.open(f"{PAGE}/citizen/{citizen_id}")
    assert response.status == 200
    headers = response.headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'none'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer" and headers["cache-control"] == "no-store"
    page = tab.page
    api = api_prediction(served, history_from_dataset(store.load(page_store, [citizen_id]), citizen_id))
    shown = page.locator("#chance-percent")
    assert float(shown.get_attribute("data-probability")) == pytest.approx(api["probability"], abs=1e-12)
    assert shown.inner_text() == percent_text(api["probability"])
    band = page.locator("#chance-band").get_attribute("data-band")
    assert band == ("low" if api["probability"] < 0.10 else "moderate" if api["probability"] < 0.25 else "good")
    model_line = page.locator("#model-line").inner_text()
    assert f"version {api['model']['version']}" in model_line and api["measured_on"] in model_line
    statement = page.locator("#statement").inner_text()
    info = served.client.get("/model").json()
    assert f"{info['training_fingerprint']['rows']:,}".replace(",", ".") in statement
    assert "AUC" in statement and "Du træffer beslutningen" in statement
    page.locator("#metrics-link").click()
    assert page.locator("h1").inner_text() == "Modellen bag tallet"
    assert page.locator("table.metrics").count() >= 2  # cross-validated and out of time (and the model card)


def test_one_bar_per_indicator_and_the_same_in_a_table(tab, served, citizen_id):
    tab.open(f"{PAGE}/citizen/{citizen_id}")
    page = tab.page
    bars = page.locator("#contribution-chart rect.bar")
    assert bars.count() == len(INDICATORS)
    assert {bars.nth(k).get_attribute("data-indicator") for k in range(bars.count())} == set(INDICATOR_CODES)
    rows = page.locator("#factor-table tbody tr")
    assert rows.count() == len(INDICATORS)
    api = api_prediction(served, history_from_dataset(served.dataset, citizen_id))
    direction = {f["key"]: f["direction"] for f in api["explanation"]["factors"]}
    for k in range(bars.count()):
        bar = bars.nth(k)
        assert direction[bar.get_attribute("data-indicator")] in bar.get_attribute("class").split()
    # The history has a chart and a table per indicator; the interventions a bar per episode.
    assert page.locator("#history-panels figure").count() == len(INDICATORS)
    episodes = (served.dataset.interventions["citizen_id"] == citizen_id).sum()
    assert page.locator("#intervention-timeline rect.episode").count() == episodes
    assert page.locator("#intervention-table tbody tr").count() == episodes


def test_the_waterfall_goes_from_the_average_to_the_shown_chance(tab, served, citizen_id):
    tab.open(f"{PAGE}/citizen/{citizen_id}?lang=en")
    page = tab.page
    shown = float(page.locator("#chance-percent").get_attribute("data-probability"))
    rows = page.locator("#waterfall-table tbody tr")
    keys = [rows.nth(k).get_attribute("data-step") for k in range(rows.count())]
    assert keys[0] == "base" and keys[-1] == "result" and len(keys) >= 4
    changes = [float(rows.nth(k).get_attribute("data-change")) for k in range(1, rows.count() - 1)]
    base = float(rows.nth(0).get_attribute("data-after"))
    assert base + sum(changes) == pytest.approx(shown, abs=1e-6)  # the steps add up to the chance shown (float32 SHAP)
    assert float(rows.last.get_attribute("data-after")) == pytest.approx(shown, abs=1e-12)
    # The numbers a person reads, in percentage points to one decimal: they add up within rounding.
    read = [
        float(rows.nth(k).locator("td").first.inner_text().split()[0].replace("\u2212", "-"))
        for k in range(1, rows.count() - 1)
    ]
    assert abs(100 * base + sum(read) - 100 * shown) <= 0.05 * len(read) + 1e-6  # 0.05 per rounded step
    api = api_prediction(served, history_from_dataset(served.dataset, citizen_id))
    assert api["explanation"]["base_probability"] == pytest.approx(base, abs=1e-12)
    assert page.locator("#waterfall-chart rect.step").count() == rows.count()


def test_what_would_move_it_matches_the_api(tab, served, citizen_id):
    tab.open(f"{PAGE}/citizen/{citizen_id}")
    top = tab.page.locator("#what-if tbody tr").first
    code = top.get_attribute("data-indicator")
    history = history_from_dataset(served.dataset, citizen_id)
    data = history.model_dump(mode="json")
    last = data["measurements"][-1]
    for side in ("citizen", "caseworker"):
        if last[side].get(code) is not None:
            last[side][code] = min(5, last[side][code] + 1)
    api = api_prediction(served, data)
    assert float(top.get_attribute("data-probability")) == pytest.approx(api["probability"], abs=1e-9)


def test_the_language_switch_changes_the_labels(tab, citizen_id):
    tab.open(f"{PAGE}/citizen/{citizen_id}")
    page = tab.page
    item = indicator("self_efficacy")
    chart = page.locator("#contribution-chart")
    assert page.locator("html").get_attribute("lang") == "da"
    assert item.label_da in chart.inner_html() and item.label_en not in chart.inner_html()
    with page.expect_navigation():
        page.locator("#language-switch").click()
    assert page.url.endswith("?lang=en")
    assert page.locator("html").get_attribute("lang") == "en"
    assert item.label_en in chart.inner_html() and item.label_da not in chart.inner_html()
    assert page.locator("#factors-heading").inner_text() == "What raises and what lowers the chance"
    with page.expect_navigation():
        page.locator("#language-switch").click()
    assert page.locator("html").get_attribute("lang") == "da"


def test_an_assessment_made_with_the_keyboard_is_stored_with_who_made_it_and_the_servers_view(
    tab, served, page_store, citizen_id
):
    tab.open(f"{PAGE}/citizen/{citizen_id}?lang=en")
    page = tab.page
    radios = {a: page.locator(f"#assessment-{a}") for a in audit.ASSESSMENTS}
    assert not any(radio.is_checked() for radio in radios.values()), "an assessment is preselected"
    view_id = int(page.locator("#assessment-form input[name=view]").get_attribute("value"))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    reason = "Has started a mentor course and is motivated; I expect more than the model does."
    shown = float(page.locator("#chance-percent").get_attribute("data-probability"))
    page.focus("#assessment-agree")
    assert not radios["agree"].is_checked()  # reaching the choices chooses nothing
    page.keyboard.press("ArrowDown")  # radio group: the next choice, "higher"
    assert radios["higher"].is_checked() and not radios["agree"].is_checked()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "reason"
    page.keyboard.type(reason)
    page.keyboard.press("Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "saved=1" in page.url
    assert page.locator("#saved").is_visible()
    page.reload()
    table = page.locator("#assessments")
    assert reason in table.inner_text() and "I judge the chance higher" in table.inner_text()
    # The stored assessment: who made it, and the probability and version of the server's own view.
    stored = audit.assessments(page_store, citizen_id)[-1]
    assert (stored["assessment"], stored["reason"]) == ("higher", reason)
    assert (stored["user_id"], stored["role"], stored["view_id"]) == ("caseworker", "caseworker", view_id)
    (view,) = [e for e in audit.events(page_store, citizen_id=citizen_id) if e["id"] == view_id]
    assert (view["event"], view["user_id"], view["role"]) == ("page_view", "caseworker", "caseworker")
    assert stored["probability_shown"] == view["probability"] == pytest.approx(shown, abs=1e-6)
    assert stored["model_version"] == view["model_version"] == served.client.get("/model").json()["version"]
    # Its audit row, with the principal, in the same store.
    rows = audit.events(page_store, citizen_id=citizen_id, event="assessment")
    (row,) = [r for r in rows if r["detail"]["assessment_id"] == stored["id"]]
    assert (row["user_id"], row["role"]) == ("caseworker", "caseworker")
    assert (row["probability"], row["model_version"]) == (view["probability"], view["model_version"])
    assert (row["detail"]["assessment"], row["detail"]["view_id"]) == ("higher", view_id)
    everything = json.dumps(audit.events(page_store), default=str)
    assert reason not in everything  # free text may hold personal data: the assessment table only


def test_screenshots(browser, served, page_store, citizen_id, caseworker_session, tmp_path):
    folder = Path(os.environ.get("BIP_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    context = new_context(browser, caseworker_session)
    page = context.new_page()
    for lang, query in (("da", ""), ("en", "?lang=en")):
        page.goto(f"{served.url}{PAGE}/citizen/{citizen_id}{query}")
        assert page.locator("#citizen-id").inner_text() == citizen_id
        path = folder / f"caseworker-page-{lang}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 20_000
    context.close()


# --- who sees what ------------------------------------------------------------------------------------


def result_ids(tab: Tab) -> list[str]:
    links = tab.page.locator("#results a")
    return [links.nth(k).inner_text() for k in range(links.count())]


def test_a_caseworker_of_one_job_centre_finds_only_its_citizens(
    open_tab, served, jobcentre_of, jobcentre_a, citizen_of_b
):
    tab = open_tab("caseworker_a")
    tab.open(f"{PAGE}/")
    listed = result_ids(tab)
    of_a = sorted(c for c, centre in jobcentre_of.items() if centre == jobcentre_a)
    assert listed == of_a[:SEARCH_LIMIT]
    assert {jobcentre_of[c] for c in listed} == {jobcentre_a}
    # The exact id of a citizen of another job centre finds nothing, where a caseworker of every
    # job centre finds that citizen.
    page = tab.page
    page.get_by_label("Borgerens pseudonyme id").fill(citizen_of_b)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/caseworker/\?q="))
    assert result_ids(tab) == []
    with served.as_("caseworker") as everywhere:
        answer = everywhere.get(f"{PAGE}/", params={"q": citizen_of_b})
    assert f'/citizen/{citizen_of_b}"' in answer.text


def test_a_citizen_of_another_job_centre_answers_as_an_unknown_one(open_tab, served, citizen_of_b):
    made_up = "QX" + citizen_of_b[2:] + "-nobody"
    tab = open_tab("caseworker_a")
    shown = {}
    for citizen in (citizen_of_b, made_up):
        response = tab.open(f"{PAGE}/citizen/{citizen}")
        text = tab.page.locator("body").inner_text()
        assert citizen in text
        shown[citizen] = (response.status, tab.page.title(), text.replace(citizen, "{id}"))
    assert shown[citizen_of_b] == shown[made_up]
    assert shown[made_up][0] == 404
    # The same bytes over the API token (no session: no per-session form token in the page).
    with served.as_("caseworker_a") as caseworker_a:
        answers = {c: caseworker_a.get(f"{PAGE}/citizen/{c}") for c in (citizen_of_b, made_up)}
    bodies = {c: a.text.replace(c, "{id}") for c, a in answers.items()}
    assert answers[citizen_of_b].status_code == answers[made_up].status_code == 404
    assert bodies[citizen_of_b] == bodies[made_up]
    assert answers[citizen_of_b].headers["content-type"] == answers[made_up].headers["content-type"]
    with served.as_("caseworker") as everywhere:  # the citizen exists: a caseworker of every job centre sees it
        assert everywhere.get(f"{PAGE}/citizen/{citizen_of_b}").status_code == 200


def test_a_signed_out_visit_goes_to_the_login_without_citizen_data_and_back_after_it(open_tab, served, citizen_id):
    tab = open_tab()
    asked = f"{PAGE}/citizen/{citizen_id}"
    response = tab.open(asked)
    page = tab.page
    assert urlsplit(page.url).path == f"{PAGE}/login"
    redirect = response.request.redirected_from
    assert redirect is not None and redirect.response().status == 303
    visible = page.locator("body").inner_text()
    assert citizen_id not in visible and "%" not in visible
    assert page.locator("#citizen-id, #chance-percent, [data-probability], #assessment-form").count() == 0
    with served.anonymous() as anonymous:
        answer = anonymous.get(asked, follow_redirects=False)
    assert answer.status_code == 303 and "data-probability" not in answer.text and "%" not in answer.text
    assert tab.session_cookies() == []
    answer = sign_in(page, served.url, served.accounts["caseworker"].name, from_login_page=False)
    assert answer.status == 200
    assert urlsplit(page.url).path == asked
    assert page.locator("#citizen-id").inner_text() == citizen_id


def leaver(served: Served, page_store: str, name: str, open_tab) -> Tab:
    """A tab signed in as a caseworker of every job centre made for this test alone: signing out ends
    every session of the user, so it must not be the account the other tests share."""
    centres = sorted(served.dataset.citizens["jobcentre"].unique())
    accounts.add_user(page_store, name, Role.caseworker, centres, PASSWORD)
    tab = open_tab()
    assert sign_in(tab.page, served.url, name).status == 200
    return tab


def test_signing_out_ends_the_session_in_the_browser(open_tab, served, page_store, citizen_id):
    tab = leaver(served, page_store, "leaver-browser", open_tab)
    page = tab.page
    tab.open(f"{PAGE}/citizen/{citizen_id}")
    assert page.locator("#signed-in").inner_text() == TEXT["da"]["signed_in_as"].format(user="leaver-browser")
    with page.expect_navigation():
        page.locator("#logout").click()
    assert urlsplit(page.url).path == f"{PAGE}/login"
    assert tab.session_cookies() == []
    tab.open(f"{PAGE}/citizen/{citizen_id}")
    assert urlsplit(page.url).path == f"{PAGE}/login"
    assert page.locator("#citizen-id").count() == 0
    (row,) = audit.events(page_store, event="logout")[-1:]
    assert (row["user_id"], row["role"]) == ("leaver-browser", "caseworker")


def test_a_session_cookie_is_void_after_signing_out(open_tab, served, page_store, citizen_id):
    """Signing out ends the session on the server too: the cookie of before, sent again, is refused."""
    tab = leaver(served, page_store, "leaver-cookie", open_tab)
    (cookie,) = tab.session_cookies()
    tab.open(f"{PAGE}/")
    with tab.page.expect_navigation():
        tab.page.locator("#logout").click()
    with served.anonymous() as anonymous:
        answer = anonymous.get(
            f"{PAGE}/citizen/{citizen_id}",
            headers={"Cookie": f"{SESSION_COOKIE}={cookie['value']}"},
            follow_redirects=False,
        )
    assert answer.status_code == 303, "a cookie from before signing out still opens citizen pages"
    assert urlsplit(answer.headers["location"]).path == f"{PAGE}/login"


def test_a_wrong_password_sets_no_cookie_and_repeated_failures_are_refused(open_tab, served, page_store, jobcentre_a):
    name = "lockout-test"  # a user of its own: the others must not be locked out
    accounts.add_user(page_store, name, Role.caseworker, [jobcentre_a], PASSWORD)
    attempts = Settings(home=served.home).login_attempts
    tab = open_tab()
    page = tab.page
    for attempt in range(attempts):
        answer = sign_in(page, served.url, name, f"not the password {attempt}")
        assert answer.status == 401, attempt
        assert page.locator("#login-error").inner_text() == TEXT["da"]["login_failed"]
        assert tab.session_cookies() == [] and answer.header_value("set-cookie") is None
    answer = sign_in(page, served.url, name, PASSWORD)
    assert answer.status == 429
    assert page.locator("#login-error").inner_text() == TEXT["da"]["login_limited"]
    assert int(answer.headers["retry-after"]) > 0
    assert tab.session_cookies() == [] and urlsplit(page.url).path == f"{PAGE}/login"
    failed = [r for r in audit.events(page_store, event="login_failed") if r["user_id"] == name]
    assert len(failed) == attempts
    # Another user signs in as before.
    other = open_tab()
    assert sign_in(other.page, served.url, served.accounts["caseworker_a"].name).status == 200
    assert len(other.session_cookies()) == 1


# --- the assessment form: CSRF, its own view, bad forms ----------------------------------------------


def hidden_inputs(page_html: str, form_id: str) -> dict[str, str]:
    """The hidden inputs of the form `form_id` of a page."""
    form = re.search(rf'<form [^>]*id="{form_id}".*?</form>', page_html, re.S)
    assert form is not None, f"no form {form_id}"
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0))
    return {name: html.unescape(value) for name, value in fields}


def fresh_form(client: httpx.Client, citizen_id: str) -> dict[str, str]:
    """The hidden fields (view, form_token, lang) of the assessment form of a new view of the page."""
    answer = client.get(f"{PAGE}/citizen/{citizen_id}")
    assert answer.status_code == 200, answer.text
    fields = hidden_inputs(answer.text, "assessment-form")
    assert set(fields) == {"view", "form_token", "lang"}, fields
    return fields


def stored_counts(url: str, *citizens: str) -> tuple[int, int]:
    """The assessments of these citizens, and the assessment rows of the audit trail."""
    return sum(len(audit.assessments(url, c)) for c in citizens), len(audit.events(url, event="assessment"))


BAD_FORMS = {
    "unknown assessment": ({"assessment": "maybe"}, 400),
    "no assessment": ({"assessment": None}, 400),
    "reason too long": ({"reason": "x" * 1001}, 400),
    "reason with control characters": ({"reason": "a\x00b"}, 400),
    "no view": ({"view": None}, 400),
    "view not a number": ({"view": "12a"}, 400),
    "view too long": ({"view": "1" * 19}, 400),
    "view that does not exist": ({"view": "999999999"}, 403),
    "no form token": ({"form_token": None}, 403),
    "made-up form token": ({"form_token": "made-up.token"}, 403),
}


@pytest.mark.parametrize("case", list(BAD_FORMS))
def test_bad_assessment_forms_answer_4xx_and_store_nothing(served, page_store, citizen_id, case):
    change, status = BAD_FORMS[case]
    with served.as_("caseworker") as client:
        form = {**fresh_form(client, citizen_id), "assessment": "agree", "reason": ""}
        form = {k: v for k, v in {**form, **change}.items() if v is not None}
        before = stored_counts(page_store, citizen_id)
        answer = client.post(f"{PAGE}/assessments", data=form)
    assert answer.status_code == status, answer.text
    assert "<h1>" in answer.text
    assert stored_counts(page_store, citizen_id) == before


def _without_token(form: dict, other: dict) -> tuple[dict, dict]:
    return {k: v for k, v in form.items() if k != "form_token"}, {}


CSRF_CASES: dict[str, tuple[Callable[[dict, dict], tuple[dict, dict]], int]] = {
    # (what the case changes in the caseworker's own correct form and headers, given caseworker-a's form)
    "correct": (lambda form, other: (form, {}), 303),
    "no form token": (_without_token, 403),
    "another user's form token": (lambda form, other: ({**form, "form_token": other["form_token"]}, {}), 403),
    "an Origin of another site": (lambda form, other: (form, {"Origin": "https://elsewhere.example"}), 403),
    "a Referer of another site": (lambda form, other: (form, {"Referer": "https://elsewhere.example/x"}), 403),
    # Under the page's Referrer-Policy: no-referrer a browser sends its own forms with Origin: null,
    # which proves nothing either way: then the form token decides.
    "an opaque Origin": (lambda form, other: (form, {"Origin": "null"}), 303),
    "an opaque Origin and another user's form token": (
        lambda form, other: ({**form, "form_token": other["form_token"]}, {"Origin": "null"}),
        403,
    ),
    "another user's view": (lambda form, other: ({**form, "view": other["view"]}, {}), 403),
}


@pytest.mark.parametrize("case", list(CSRF_CASES))
def test_the_assessment_form_needs_its_token_its_site_and_a_view_of_ones_own(
    served, page_store, citizen_id, citizen_of_a, case
):
    change, status = CSRF_CASES[case]
    with served.as_("caseworker") as caseworker, served.as_("caseworker_a") as caseworker_a:
        other = fresh_form(caseworker_a, citizen_of_a)  # caseworker can see citizen_of_a too
        own = {**fresh_form(caseworker, citizen_id), "assessment": "lower", "reason": f"csrf case {case}"}
        form, headers = change(own, other)
        before = stored_counts(page_store, citizen_id, citizen_of_a)
        answer = caseworker.post(f"{PAGE}/assessments", data=form, headers=headers)
    assert answer.status_code == status, answer.text
    if status != 303:
        assert stored_counts(page_store, citizen_id, citizen_of_a) == before
        return
    assert urlsplit(answer.headers["location"]).path == f"{PAGE}/citizen/{citizen_id}"
    stored = audit.assessments(page_store, citizen_id)[-1]
    assert (stored["reason"], stored["user_id"], stored["role"]) == (f"csrf case {case}", "caseworker", "caseworker")
    assert stored["view_id"] == int(own["view"])


def test_a_view_must_be_a_page_view_not_another_event_of_ones_own(served, page_store, citizen_id):
    with served.anonymous() as anonymous:  # a login of caseworker: an audit row of theirs that is no page view
        signed = anonymous.post(
            f"{PAGE}/login", data={"name": "caseworker", "password": PASSWORD}, follow_redirects=False
        )
    assert signed.status_code == 303
    login = [r for r in audit.events(page_store, event="login") if r["user_id"] == "caseworker"][-1]
    with served.as_("caseworker") as client:
        form = {**fresh_form(client, citizen_id), "assessment": "agree", "view": str(login["id"])}
        before = stored_counts(page_store, citizen_id)
        answer = client.post(f"{PAGE}/assessments", data=form)
    assert answer.status_code == 403, answer.text
    assert stored_counts(page_store, citizen_id) == before


def test_a_form_posted_from_another_site_stores_nothing(open_tab, served, page_store, citizen_id):
    """A page of another site that posts the assessment form from a signed-in browser, even with a real
    view and form token: the SameSite cookie stays home and the Origin is not this site; nothing is stored."""
    tab = open_tab("caseworker")
    tab.open(f"{PAGE}/citizen/{citizen_id}")
    fields = {
        name: tab.page.locator(f"#assessment-form input[name={name}]").get_attribute("value")
        for name in ("view", "form_token", "lang")
    }
    inputs = "".join(f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in fields.items())
    elsewhere = "http://elsewhere.example/"
    attacker = tab.page.context.new_page()  # the same browser (cookies), not a tab of this site
    attacker.route(
        elsewhere,
        lambda route: route.fulfill(
            content_type="text/html",
            body=f'<form method="post" action="{served.url}{PAGE}/assessments">{inputs}'
            '<input type="hidden" name="assessment" value="higher"><button id="go">go</button></form>',
        ),
    )
    attacker.goto(elsewhere)
    before = stored_counts(page_store, citizen_id)
    with attacker.expect_navigation() as navigation:
        attacker.locator("#go").click()
    assert navigation.value.status in (200, 403)  # the login form (no cookie sent), or the refusal
    assert urlsplit(attacker.url).path != f"{PAGE}/citizen/{citizen_id}"
    assert stored_counts(page_store, citizen_id) == before
    attacker.close()


def test_other_bad_requests_answer_4xx(served, page_store, citizen_id):
    with served.as_("caseworker") as client:
        assert client.get(f"{PAGE}/citizen/nobody").status_code == 404
        assert client.get(f"{PAGE}/citizen/{'x' * 500}").status_code == 404
        assert client.get(f"{PAGE}/?q=%FF{'x' * 500}").status_code == 200
        assert client.get(f"{PAGE}/?q=%00x").status_code == 400  # no id holds a control character
        assert client.get(f"{PAGE}/?q=%ED%9F%BF").status_code == 200  # the last code point before the surrogates
        fields = fresh_form(client, citizen_id)
        form = f"view={fields['view']}&form_token={fields['form_token']}&assessment=agree"
        before = stored_counts(page_store, citizen_id)
        as_json = client.post(f"{PAGE}/assessments", json={"view": fields["view"]})
        assert as_json.status_code == 415
        large = client.post(
            f"{PAGE}/assessments",
            content=(form + "&reason=" + "x" * 20_000).encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert large.status_code == 413
        twice = client.post(
            f"{PAGE}/assessments",
            content=(form + "&assessment=lower").encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert twice.status_code == 400
        assert stored_counts(page_store, citizen_id) == before
        assert client.get(f"{PAGE}/citizen/{citizen_id}?lang=xx").status_code == 200
        assert client.get(f"{PAGE}").status_code in (200, 307)


def test_no_model_answers_503_and_the_search_still_works(tmp_path):
    """In-process (no server): the page around a Predictor that has loaded no model yet, called as a
    caseworker of every job centre and as one of Odense only (the principal that AccessControl would
    put in the scope)."""
    from serving.audit import AuditTrail
    from serving.core import Predictor
    from serving.page import PageContext, create_app

    settings = Settings(home=tmp_path)
    store.ingest(small_dataset(), settings.store_url)
    context = PageContext(
        Predictor(settings), settings, AuditTrail(settings.store_url), Sessions("k" * 32, 3600, secure=False)
    )
    page = create_app(lambda: context)

    def as_caseworker(jobcentres: frozenset[str] | None):
        principal = Principal("cw-test", frozenset({Role.caseworker}), jobcentres, "session")

        async def app(scope, receive, send):
            scope[PRINCIPAL] = principal
            await page(scope, receive, send)

        return app

    async def get(app, *paths: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://page") as client:
            return [await client.get(path) for path in paths]

    def listed(answer: httpx.Response) -> set[str]:
        return set(re.findall(r'href="/citizen/([^"?]+)', answer.text))

    # On a thread of its own: Playwright's sync API keeps an event loop running on this one.
    with ThreadPoolExecutor(1) as thread:
        everywhere = as_caseworker(None)
        citizen, model, search = thread.submit(
            asyncio.run, get(everywhere, "/citizen/c10", "/model?lang=en", "/?q=c")
        ).result()
        odense = as_caseworker(frozenset({"Odense"}))
        elsewhere, unknown, scoped = thread.submit(
            asyncio.run, get(odense, "/citizen/c10", "/citizen/c11", "/")
        ).result()
    assert citizen.status_code == 503 and "Ingen model lige nu" in citizen.text
    assert model.status_code == 503 and "No model right now" in model.text
    assert search.status_code == 200 and listed(search) == {"c10", "c2"}
    # Scoped: the Aarhus citizen answers as an unknown one (before any model is needed), the search lists Odense's.
    assert elsewhere.status_code == unknown.status_code == 404
    # The same page but for the id and the sign-out form's token (signed with the time it was made).
    token = re.compile(r'name="form_token" value="[^"]*"')
    assert token.sub("", elsewhere.text.replace("c10", "{id}")) == token.sub("", unknown.text.replace("c11", "{id}"))
    assert scoped.status_code == 200 and listed(scoped) == {"C2"}


def test_the_server_logged_no_server_error(served):
    log = served.log.read_text(errors="replace")
    assert served.process.poll() is None, log[-3000:]
    assert "status=500" not in log, log[-3000:]


def test_the_api_page_shows_the_api_and_loads_nothing_from_elsewhere(open_tab):
    """BentoML's own API page loads Google's tag manager; the service's (serving/static/api.html) runs
    the same Swagger UI from the service's files alone (open_tab fails on any request elsewhere)."""
    tab = open_tab()
    messages: list[str] = []
    tab.page.on("console", lambda message: messages.append(message.text))
    response = tab.open("/")
    assert response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    tab.page.get_by_text("/predict_batch").first.wait_for(timeout=30_000)  # drawn from /api-docs.json
    assert any(url.endswith("/api-docs.json") for url in tab.requested)
    assert not [m for m in messages if "Content Security Policy" in m], messages
