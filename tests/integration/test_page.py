"""The caseworker page end to end: the real BentoML server (fixture `served` of conftest_service.py)
with the simulated dataset ingested into its store, driven by a real headless browser (Playwright
with Debian's chromium, installed by `make test`; never skipped).

Set BIP_SCREENSHOT_DIR=docs/screenshots to refresh the screenshots in the documentation.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import small_dataset
from conftest_service import Served
from conftest_service import served as served  # noqa: F401  (the module fixture)

from bip.settings import Settings
from features import store
from features.catalogue import INDICATOR_CODES, INDICATORS, indicator
from serving.core import history_from_dataset
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


@pytest.fixture(scope="module")
def page_store(served: Served) -> str:
    """The server's store (BIP_HOME/store.db) holding the simulated dataset the model was trained on."""
    url = Settings(home=served.home).store_url
    store.ingest(served.dataset, url, source="test_page")
    return url


@pytest.fixture(scope="module")
def citizen_id(served: Served, page_store: str) -> str:
    """A citizen with a long history and interventions: every part of the page has something to show."""
    rounds = served.dataset.measurements["citizen_id"].value_counts()
    with_interventions = set(served.dataset.interventions["citizen_id"])
    return sorted(c for c in rounds.index[:40] if c in with_interventions)[0]


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


@pytest.fixture
def tab(browser, served: Served, page_store: str) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1100, "height": 900}, locale="da-DK")
    tab = Tab(context.new_page(), served.url)
    yield tab
    outside = [u for u in tab.requested if not (u.startswith(served.url + "/") or u.startswith("data:"))]
    context.close()
    assert not outside, f"the page loaded something from elsewhere: {outside}"


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
    assert "default-src 'self'" in response.headers["content-security-policy"]
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
    assert page.locator("table.metrics").count() == 2


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


def test_an_assessment_made_with_the_keyboard_is_stored_and_shown_after_reload(tab, served, page_store, citizen_id):
    tab.open(f"{PAGE}/citizen/{citizen_id}?lang=en")
    page = tab.page
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    reason = "Has started a mentor course and is motivated; I expect more than the model does."
    shown = float(page.locator("#chance-percent").get_attribute("data-probability"))
    page.focus("#assessment-agree")
    page.keyboard.press("ArrowDown")  # radio group: the next choice, "higher"
    assert page.locator("#assessment-higher").is_checked()
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
    stored = store.assessments(page_store, citizen_id)[-1]
    assert (stored["assessment"], stored["reason"]) == ("higher", reason)
    assert stored["probability_shown"] == pytest.approx(shown, abs=1e-12)
    assert stored["model_version"] == served.client.get("/model").json()["version"]
    lines = [json.loads(line) for line in served.audit_log.read_text().splitlines()]
    audited = [line for line in lines if line.get("event") == "caseworker_assessment"][-1]
    assert [audited[k] for k in ("citizen_id", "assessment", "assessment_id")] == [citizen_id, "higher", stored["id"]]
    assert reason not in served.audit_log.read_text()  # free text may hold personal data: store only
    assert any(line.get("citizen_id") == citizen_id and "probability" in line for line in lines)  # the view


def test_screenshots(browser, served, page_store, citizen_id, tmp_path):
    folder = Path(os.environ.get("BIP_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    for lang, query in (("da", ""), ("en", "?lang=en")):
        page.goto(f"{served.url}{PAGE}/citizen/{citizen_id}{query}")
        path = folder / f"caseworker-page-{lang}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 20_000
    context.close()


BAD_FORMS = {
    "unknown assessment": ({"assessment": "maybe"}, 400),
    "no assessment": ({"assessment": None}, 400),
    "reason too long": ({"reason": "x" * 1001}, 400),
    "reason with control characters": ({"reason": "a\x00b"}, 400),
    "probability above 1": ({"probability_shown": "1.5"}, 400),
    "probability not a number": ({"probability_shown": "nan%"}, 400),
    "no model version": ({"model_version": ""}, 400),
    "citizen id too long": ({"citizen_id": "C" * 65}, 400),
    "unknown citizen": ({"citizen_id": "nobody"}, 404),
}


@pytest.mark.parametrize("case", list(BAD_FORMS))
def test_bad_assessment_forms_answer_4xx_and_store_nothing(served, page_store, citizen_id, case):
    change, status = BAD_FORMS[case]
    form = {
        "citizen_id": citizen_id,
        "assessment": "agree",
        "reason": "",
        "probability_shown": "0.2",
        "model_name": "bip-job-chance",
        "model_version": "1",
    }
    form = {k: v for k, v in {**form, **change}.items() if v is not None}
    before = len(store.assessments(page_store, citizen_id))
    answer = served.client.post(f"{PAGE}/assessments", data=form)
    assert answer.status_code == status, answer.text
    assert "<h1>" in answer.text
    assert len(store.assessments(page_store, citizen_id)) == before


def test_other_bad_requests_answer_4xx(served, page_store, citizen_id):
    client = served.client
    assert client.get(f"{PAGE}/citizen/nobody").status_code == 404
    assert client.get(f"{PAGE}/citizen/{'x' * 500}").status_code == 404
    assert client.get(f"{PAGE}/?q=%00%FF{'x' * 500}").status_code == 200
    form = f"citizen_id={citizen_id}&assessment=agree&probability_shown=0.2&model_name=m&model_version=1"
    as_json = client.post(f"{PAGE}/assessments", json={"citizen_id": citizen_id})
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
    assert client.get(f"{PAGE}/citizen/{citizen_id}?lang=xx").status_code == 200
    assert client.get(f"{PAGE}").status_code in (200, 307)


def test_no_model_answers_503_and_the_search_still_works(tmp_path):
    """In-process (no server): the page around a Predictor that has loaded no model yet."""
    from serving.core import Predictor
    from serving.page import create_app

    settings = Settings(home=tmp_path)
    store.ingest(small_dataset(), settings.store_url)
    app = create_app(lambda: Predictor(settings), lambda: settings)

    async def get(*paths: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://page") as client:
            return [await client.get(path) for path in paths]

    # On a thread of its own: Playwright's sync API keeps an event loop running on this one.
    with ThreadPoolExecutor(1) as thread:
        citizen, model, search = thread.submit(asyncio.run, get("/citizen/c10", "/model?lang=en", "/?q=c")).result()
    assert citizen.status_code == 503 and "Ingen model lige nu" in citizen.text
    assert model.status_code == 503 and "No model right now" in model.text
    assert search.status_code == 200 and "c10" in search.text and "c2" in search.text


def test_the_server_logged_no_server_error(served):
    log = served.log.read_text(errors="replace")
    assert served.process.poll() is None, log[-3000:]
    assert "status=500" not in log, log[-3000:]
