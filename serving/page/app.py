"""The caseworker page as a Starlette app: its routes, each rendering a Jinja2 template.

The templates (serving/templates) and the style sheet (serving/static) sit beside this package, in
the `serving` package folder, so that the package data stays where it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from features import store
from features.catalogue import GROUP_LABELS, GROUPS, indicator
from features.contract_declaration import MAX_ID_LENGTH, plain_id
from serving import accounts, audit
from serving.access import Sessions, principal_of
from serving.accounts import Principal
from serving.audit import ASSESSMENTS, AuditTrail, Event, UnknownView, prediction_event
from serving.core import Predictor, model_info, score_stored, step_ups
from serving.histories import history_from_dataset
from serving.page.charts import (
    PANEL_GRID,
    PANEL_H,
    PANEL_W,
    contribution_chart,
    history_panels,
    intervention_timeline,
    waterfall_chart,
)
from serving.page.forms import (
    MAX_REASON_CHARS,
    FormError,
    form_token,
    parse_assessment,
    parse_login,
    read_form,
    safe_next,
)
from serving.page.text import LANGUAGES, TEXT, band, label, metric_rows, number, percent, pick, statement
from serving.schemas import Prediction

PAGE_PATH = "/caseworker"
SERVING = Path(__file__).resolve().parent.parent  # templates/ and static/ are package data of `serving`
SEARCH_LIMIT = 50


def language(request: Request) -> str:
    lang = request.query_params.get("lang", "da")
    return lang if lang in LANGUAGES else "da"


@dataclass(frozen=True)
class PageContext:
    """What the page needs from the running service: the model, the settings, the audit trail, the
    session signer and the metrics (one object, read once per request)."""

    predictor: Predictor
    settings: Any
    audit: AuditTrail
    sessions: Sessions
    metrics: Any = None
    directory: Any = None  # serving.accounts.Directory, to forget a user who signed out

    def count(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.page(kind)


def create_app(context: Callable[[], PageContext], model_json_url: str = "/model") -> Starlette:
    """The caseworker page as an ASGI app.

    `context` returns the service's PageContext when called (at request time, so the app can be built
    at import time, before the service exists). Who may call each route is `serving.access.RULES`; the
    handlers add what only they can check: a caseworker sees only the citizens of their job centres,
    and a citizen of another job centre answers exactly as an unknown one. `model_json_url` is the
    API's GET /model.
    """
    env = Environment(
        loader=FileSystemLoader(SERVING / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["percent"] = percent
    env.filters["number"] = number
    env.filters["label"] = label
    env.filters["indicator_label"] = lambda code, lang: label(indicator(code), lang)
    env.filters["pathquote"] = lambda value: quote(str(value), safe="")

    def page(request: Request, template: str, lang: str, status: int = 200, **values: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        query = {k: v for k, v in request.query_params.items() if k not in ("lang", "saved")}
        switch = "en" if lang == "da" else "da"
        switch_url = request.url.path + "?" + urlencode({**query, "lang": switch})
        principal = principal_of(request.scope)
        html = env.get_template(template).render(
            t=TEXT[lang],
            lang=lang,
            base=base,
            lang_query="" if lang == "da" else "?lang=en",
            switch_url=switch_url,
            model_json_url=model_json_url,
            principal=principal,
            logout_token=context().sessions.form_token(principal) if principal is not None else "",
            **values,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def error(request: Request, lang: str, status: int, heading: str, text: str) -> HTMLResponse:
        return page(request, "error.html", lang, status=status, heading=heading, text=text)

    def unknown(request: Request, lang: str, citizen_id: str) -> HTMLResponse:
        t = TEXT[lang]
        return error(request, lang, 404, t["error_404"], t["error_404_text"].format(citizen_id=citizen_id))

    def search(request: Request) -> Response:
        lang, ctx = language(request), context()
        principal = principal_of(request.scope)
        q = request.query_params.get("q", "").strip()[:MAX_ID_LENGTH]
        if not plain_id(q) and q:
            return error(request, lang, 400, TEXT[lang]["error_search"], TEXT[lang]["error_search_text"])
        try:
            ids = store.citizen_ids(ctx.settings.store_url, q, SEARCH_LIMIT, principal.jobcentres)
        except SQLAlchemyError as failure:
            return error(request, lang, 503, TEXT[lang]["error_store"], str(failure.__class__.__name__))
        ctx.count("search")
        return page(request, "search.html", lang, q=q, ids=ids, limit=SEARCH_LIMIT)

    def citizen(request: Request) -> Response:
        lang, t, ctx = language(request), TEXT[language(request)], context()
        principal = principal_of(request.scope)
        citizen_id = request.path_params["citizen_id"]
        url = ctx.settings.store_url
        if not plain_id(citizen_id):  # no stored id is longer or holds a control character (the contract)
            return unknown(request, lang, citizen_id)
        try:
            # Whether the caseworker may see the citizen, in one look-up that costs the same for a citizen
            # of another job centre as for an unknown id: the same answer, and the same time, for both.
            if not store.visible(url, citizen_id, principal.jobcentres):
                return unknown(request, lang, citizen_id)
            rows = store.load(url, [citizen_id])  # read once: shown as a history, scored as arrays
        except SQLAlchemyError as failure:
            return error(request, lang, 503, t["error_store"], str(failure.__class__.__name__))
        # Checked again on the rows read, before anything is made of the citizen's data.
        jobcentres = rows.citizens.loc[rows.citizens["citizen_id"] == citizen_id, "jobcentre"].tolist()
        if len(jobcentres) != 1 or not principal.sees(jobcentres[0]):
            return unknown(request, lang, citizen_id)
        try:
            history = history_from_dataset(rows, citizen_id)
        except KeyError:
            return unknown(request, lang, citizen_id)
        loaded = ctx.predictor.current()  # one model reference for the whole page
        if loaded is None:
            return error(request, lang, 503, t["error_503"], t["error_503_text"])
        (prediction,) = score_stored(loaded, rows, [history])
        info = model_info(loaded)
        moves, at_top = step_ups(loaded, history, prediction)
        try:
            (view_id,) = ctx.audit.append([page_view(principal, prediction)])
            assessments = audit.assessments(url, citizen_id)
        except SQLAlchemyError as failure:
            return error(request, lang, 503, t["error_store"], str(failure.__class__.__name__))
        ctx.count("view")
        factors = prediction.explanation.factors
        return page(
            request,
            "citizen.html",
            lang,
            history=history,
            prediction=prediction,
            band=band(prediction.probability),
            today=date.today().isoformat(),
            statement=statement(info, lang),
            chart=contribution_chart(factors, lang),
            waterfall=waterfall_chart(prediction.explanation, lang, waterfall_labels(lang)),
            others=[f for f in factors if f.kind != "indicator"],
            moves=moves,
            at_top=at_top,
            panels=history_panels(history, lang),
            panel=(PANEL_W, PANEL_H),
            grid=PANEL_GRID,
            rounds=sorted(history.measurements, key=lambda m: m.measured_on),
            timeline=intervention_timeline(history, lang),
            groups=[(g, pick(GROUP_LABELS[g], lang)) for g in GROUPS],
            assessments=assessments,
            assessment_labels={a: t[f"assessment_{a}"] for a in ASSESSMENTS},
            saved=request.query_params.get("saved") == "1",
            form_error=None,
            max_reason=MAX_REASON_CHARS,
            view_id=view_id,
            form_token=ctx.sessions.form_token(principal),
        )

    async def record(request: Request) -> Response:
        lang, ctx = language(request), context()
        principal = principal_of(request.scope)
        try:
            body = await read_form(request, ctx.settings.body_seconds)
            if not same_origin(request) or not ctx.sessions.form_token_valid(form_token(body), principal):
                raise FormError(403, "error_403_form")
            form = parse_assessment(body)
        except FormError as failure:
            message = str(failure)
            text = TEXT[lang].get(message, message)
            return error(request, lang, failure.status, TEXT[lang]["error_400"], text)
        lang, t = form.lang, TEXT[form.lang]
        try:
            _, citizen_id = await run_in_threadpool(
                ctx.audit.record_assessment, principal, form.view_id, form.assessment, form.reason
            )
        except UnknownView:
            return error(request, lang, 403, t["error_400"], t["error_403_view"])
        except SQLAlchemyError as failure:
            return error(request, lang, 503, t["error_store"], str(failure.__class__.__name__))
        ctx.count("assessment")
        base = request.scope.get("root_path", "").rstrip("/")
        query = urlencode({"saved": "1", **({"lang": "en"} if lang == "en" else {})})
        target = f"{base}/citizen/{quote(citizen_id, safe='')}?{query}#assessment"
        return RedirectResponse(target, status_code=303)

    def model(request: Request) -> Response:
        lang, t = language(request), TEXT[language(request)]
        ctx = context()
        loaded = ctx.predictor.current()
        if loaded is None:
            return error(request, lang, 503, t["error_503"], t["error_503_text"])
        info = model_info(loaded)
        from training.model_card import served_card_html  # here: it brings training's plotting libraries

        card = served_card_html(getattr(ctx.settings, "tracking_uri", None), loaded.name, loaded.version)
        return page(
            request,
            "model.html",
            lang,
            info=info,
            statement=statement(info, lang),
            metric_rows=metric_rows(info, lang),
            card=card,
        )

    def login_form(request: Request) -> Response:
        lang = language(request)
        proxy = context().settings.auth == "proxy"
        target = safe_next(request.query_params.get("next", ""))
        return page(request, "login.html", lang, next=target, proxy=proxy, failed=None)

    async def login(request: Request) -> Response:
        lang, ctx = language(request), context()
        t = TEXT[lang]
        if ctx.settings.auth != "builtin":
            return error(request, lang, 403, t["login_heading"], t["login_not_here"])
        if not same_origin(request):
            return error(request, lang, 403, t["login_heading"], t["error_403_form"])
        try:
            form = parse_login(await read_form(request, ctx.settings.body_seconds))
        except FormError as failure:
            message = str(failure)
            return error(request, lang, failure.status, t["login_heading"], t.get(message, message))
        lang, t = form.lang, TEXT[form.lang]
        url = ctx.settings.store_url
        since = datetime.now(UTC) - timedelta(minutes=ctx.settings.login_window_minutes)
        # Failures are counted per name tried, known or not, so that the limit tells nobody which names exist.
        known = await run_in_threadpool(accounts.exists, url, form.name)
        key = form.name if known else "unknown:" + hashlib.sha256(form.name.encode()).hexdigest()[:16]
        failures = await run_in_threadpool(audit.count_since, url, "login_failed", key, since)
        if failures >= ctx.settings.login_attempts:
            ctx.count("login_limited")
            response = page(request, "login.html", lang, 429, next=form.next, proxy=False, failed=t["login_limited"])
            response.headers["Retry-After"] = str(int(ctx.settings.login_window_minutes * 60))
            return response
        principal = await run_in_threadpool(accounts.login, url, form.name, form.password)
        if principal is None:
            await run_in_threadpool(ctx.audit.append, [Event("login_failed", user_id=key)])
            ctx.count("login_failed")
            return page(request, "login.html", lang, 401, next=form.next, proxy=False, failed=t["login_failed"])
        await run_in_threadpool(ctx.audit.append, [Event.by(principal, "login")])
        ctx.count("login")
        target = form.next if lang == "da" or "lang=" in form.next else with_query(form.next, lang=lang)
        response = RedirectResponse(target, status_code=303)
        response.headers["Set-Cookie"] = ctx.sessions.cookie(principal.user_id)
        return response

    async def logout(request: Request) -> Response:
        ctx = context()
        principal = principal_of(request.scope)
        lang = language(request)
        try:
            body = await read_form(request, ctx.settings.body_seconds)
            if not same_origin(request) or not ctx.sessions.form_token_valid(form_token(body), principal):
                raise FormError(403, "error_403_form")
        except FormError as failure:
            message = str(failure)
            return error(request, lang, failure.status, TEXT[lang]["logout"], TEXT[lang].get(message, message))
        if principal.via == "session":
            await run_in_threadpool(accounts.end_sessions, ctx.settings.store_url, principal.user_id)
            if ctx.directory is not None:
                ctx.directory.forget(principal.user_id)
        await run_in_threadpool(ctx.audit.append, [Event.by(principal, "logout")])
        base = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(f"{base}/login", status_code=303)
        response.headers["Set-Cookie"] = ctx.sessions.ended()
        return response

    return Starlette(
        routes=[
            Route("/", search, name="search"),
            Route("/citizen/{citizen_id:path}", citizen, name="citizen"),
            Route("/assessments", record, methods=["POST"], name="assessments"),
            Route("/model", model, name="model"),
            Route("/login", login_form, methods=["GET"], name="login_form"),
            Route("/login", login, methods=["POST"], name="login"),
            Route("/logout", logout, methods=["POST"], name="logout"),
            Mount("/static", StaticFiles(directory=SERVING / "static"), name="static"),
        ]
    )


def with_query(target: str, **values: str) -> str:
    """`target` (a path, perhaps with a query) with `values` added to its query."""
    return f"{target}{'&' if '?' in target else '?'}{urlencode(values)}"


def waterfall_labels(lang: str) -> dict[str, str]:
    t = TEXT[lang]
    return {"base": t["waterfall_base"], "others": t["waterfall_others"], "result": t["waterfall_result"]}


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site: `Sec-Fetch-Site`, or an `Origin`
    (or `Referer`) of another host. Our pages send `Referrer-Policy: no-referrer`, under which browsers
    send `Origin: null` with our own forms, so "null" proves nothing either way: the form token is the
    check that counts; this one is defence in depth."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin") or request.headers.get("referer") or "null"
    return origin == "null" or urlsplit(origin).netloc == request.headers.get("host", "")


def page_view(principal: Principal, prediction: Prediction) -> Event:
    """The audit event of one citizen page view: who saw which score from which model version."""
    return prediction_event(principal, "page_view", prediction.model_dump(mode="json"))


# Nothing may load from elsewhere: the browser refuses any script, style, image or font not served here.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # a citizen's page stays out of every cache
}
