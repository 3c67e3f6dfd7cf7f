"""The page's forms (the assessment, the login): reading and checking their bodies."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.requests import Request

from features.contract_declaration import CONTROL
from serving.audit import ASSESSMENTS
from serving.page.text import LANGUAGES

MAX_FORM_BYTES = 16 * 1024
MAX_REASON_CHARS = 1000
MAX_ID_CHARS = 64
MAX_VIEW_ID = 2**31 - 1  # the audit trail's ids are 32-bit integers on PostgreSQL


class FormError(ValueError):
    """A form the page refuses, with the HTTP status and the message key to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AssessmentForm:
    """An assessment as posted: the view it answers (the server's own record of the probability and
    model version shown), the judgement, the reason, and the form token that proves the page sent it."""

    view_id: int
    assessment: str
    reason: str | None
    form_token: str
    lang: str


@dataclass(frozen=True)
class LoginForm:
    name: str
    password: str
    next: str
    lang: str


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # in free text: tabs and line breaks allowed


def form_fields(body: bytes) -> Callable[[str, bool], str]:
    """A reader of one field of a form body: FormError(400) naming a field given twice or missing."""
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as error:
        raise FormError(400, "the form cannot be read (not UTF-8 form data)") from error

    def one(name: str, required: bool = True) -> str:
        values = fields.get(name, [])
        if len(values) > 1:
            raise FormError(400, f"{name}: given {len(values)} times")
        if required and (not values or not values[0].strip()):
            raise FormError(400, f"{name}: missing")
        return values[0] if values else ""

    return one


def form_token(body: bytes) -> str:
    """The form (CSRF) token of a posted form, '' when there is none; FormError(400) for a body that is
    no form at all (not UTF-8, too many fields, the token given twice), so that the answer says so."""
    return form_fields(body)("form_token", False)


def parse_assessment(body: bytes) -> AssessmentForm:
    """The fields of an assessment form body; FormError(400) naming the first wrong field."""
    one = form_fields(body)
    token = one("form_token", False)
    view = one("view", True)
    if not (view.isascii() and view.isdigit()) or len(view) > 10 or int(view) > MAX_VIEW_ID:
        raise FormError(400, "view: not a page view")
    assessment = one("assessment", True)
    if assessment not in ASSESSMENTS:
        raise FormError(400, f"assessment: must be one of {', '.join(ASSESSMENTS)}")
    reason = one("reason", False).replace("\r\n", "\n").strip()
    if len(reason) > MAX_REASON_CHARS:
        raise FormError(400, f"reason: at most {MAX_REASON_CHARS} characters, got {len(reason)}")
    if _CONTROL.search(reason):
        raise FormError(400, "reason: contains control characters")
    lang = one("lang", False)
    return AssessmentForm(int(view), assessment, reason or None, token, lang if lang in LANGUAGES else "da")


def parse_login(body: bytes) -> LoginForm:
    """The fields of the login form; FormError(400) naming the first wrong field."""
    one = form_fields(body)
    name, password = one("name", True).strip(), one("password", True)
    if len(name) > MAX_ID_CHARS or len(password) > 1024:
        raise FormError(400, "name / password: too long")
    if CONTROL.search(name) or "\x00" in password:  # no user has one; PostgreSQL refuses a NUL
        raise FormError(400, "name / password: contains control characters")
    lang = one("lang", False)
    return LoginForm(name, password, safe_next(one("next", False)), lang if lang in LANGUAGES else "da")


def safe_next(target: str, home: str = "/caseworker/") -> str:
    """Where to go after signing in: a path of the page itself, never another site."""
    bad = _CONTROL.search(target) or "\\" in target or "://" in target
    return target if target.startswith("/caseworker/") and not bad else home


async def read_form(request: Request, seconds: float, limit: int = MAX_FORM_BYTES) -> bytes:
    """The body of an HTML form post, at most `limit` bytes, arrived within `seconds` (FormError 415, 413
    or 408 otherwise: a body shorter than its Content-Length would hold the request until BentoML's
    timeout answers 504)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise FormError(415, "error_415")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FormError(413, "error_413")
    try:
        async with asyncio.timeout(seconds):
            return await _body(request, limit)
    except TimeoutError:
        raise FormError(408, "error_408") from None


async def _body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FormError(413, "error_413")
        chunks.append(chunk)
    return b"".join(chunks)
