"""The data contract's rules, declared once as plain data (/work/shared/data-contract.md).

The contract checker (`features.contract_rules`) builds its pandera schemas from these tables, and
the prediction API's request schema (`serving.schemas`) takes its bounds, codes and required fields
from them too, so that a citizen who passes `bip validate` is also a valid request. Only the
catalogue and the table layout are imported here: no pandas or pandera, so the service can read the
declaration without loading the checker.

Decisions where the contract is silent:
- Dates are written YYYY-MM-DD, so a date lies in the years 1000-9999 (`DATES`).
- A citizen id that looks like a CPR number (ten digits, DDMMYYXXXX or DDMMYY-XXXX) is refused in
  every table that has one: the contract says ids are never personal identification numbers, and
  refusing all ten-digit ids is safer than telling real CPR numbers from look-alikes.
- A message names the table, row and column of a problem but never shows a value of a column that
  describes a citizen (`PERSONAL`): ids, birth years, answers and dates of people stay in the file.
  Values of codes, job centres, caseworkers and measurement ids are shown, since they help to find
  the mistake and tell nothing about a person (a wrong code is nobody's value).
"""

from __future__ import annotations

import re
from datetime import date

from features.catalogue import (
    CIVIL_STATUSES,
    EDUCATIONS,
    EVENTS,
    GENDERS,
    INTERVENTION_CODES,
    ORIGINS,
    SCORE_COLUMNS,
    SCORE_MAX,
    SCORE_MIN,
)
from features.dataset import COLUMNS

NO_EVENT = "none"  # the outcomes.event code for "neither job nor education during follow-up"

# Cells that may be empty; every other cell of the contract is required.
OPTIONAL: frozenset[tuple[str, str]] = frozenset(
    {("caseworkers", "job_orientation"), ("interventions", "ended_on"), ("outcomes", "event_on")}
    | {("measurements", column) for column in SCORE_COLUMNS}
)
# Inclusive bounds; None: no upper bound.
RANGES: dict[tuple[str, str], tuple[float, float | None]] = {
    ("citizens", "birth_year"): (1935, 2010),
    ("citizens", "children"): (0, None),
    ("citizens", "benefit_share_5y"): (0, 1),
    ("caseworkers", "job_orientation"): (1, 5),
    **{("measurements", column): (SCORE_MIN, SCORE_MAX) for column in SCORE_COLUMNS},
}
CODES: dict[tuple[str, str], tuple[str, ...]] = {
    ("citizens", "gender"): GENDERS,
    ("citizens", "origin"): ORIGINS,
    ("citizens", "civil_status"): CIVIL_STATUSES,
    ("citizens", "education"): EDUCATIONS,
    ("interventions", "intervention"): INTERVENTION_CODES,
    ("outcomes", "event"): EVENTS,
}
DATES: tuple[date, date] = (date(1000, 1, 1), date(9999, 12, 31))
# (table, column, referenced table, referenced column): every value must exist there.
REFERENCES: tuple[tuple[str, str, str, str], ...] = (
    ("measurements", "citizen_id", "citizens", "citizen_id"),
    ("measurements", "caseworker_id", "caseworkers", "caseworker_id"),
    ("interventions", "citizen_id", "citizens", "citizen_id"),
    ("outcomes", "citizen_id", "citizens", "citizen_id"),
)
# (table, later date, table of the earlier date, earlier date): later >= earlier where both are
# set. An earlier date in another table is the citizen's, joined on citizen_id.
DATE_ORDER: tuple[tuple[str, str, str, str], ...] = (
    ("measurements", "measured_on", "citizens", "enrolled_on"),
    ("interventions", "ended_on", "interventions", "started_on"),
    ("outcomes", "followed_until", "outcomes", "event_on"),
    ("outcomes", "followed_until", "citizens", "enrolled_on"),
)
# A CPR number: birth date DDMMYY and four digits, with or without a dash.
CPR_LIKE = r"\d{6}-?\d{4}"
NOT_CPR: tuple[tuple[str, str], ...] = tuple((t, "citizen_id") for t in COLUMNS if "citizen_id" in COLUMNS[t])
CPR_MESSAGE = (
    "looks like a CPR number (ten digits, DDMMYY-XXXX); citizen ids must be pseudonymous: export the pseudonym instead"
)
# Ids: text of at most MAX_ID_LENGTH characters without control characters. The contract says only
# "string"; a NUL cannot be stored in PostgreSQL, and a line break or a page of text is no id (the API
# refuses the same: serving.schemas).
ID_TEXT: tuple[tuple[str, str], ...] = tuple((t, c) for t in COLUMNS for c in COLUMNS[t] if c.endswith("_id"))
MAX_ID_LENGTH = 128
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"
CONTROL = re.compile(CONTROL_CHARACTERS)  # for one value at a time (the API, the page, accounts)
ID_TEXT_MESSAGE = (
    f"is longer than {MAX_ID_LENGTH} characters or holds a control character (e.g. NUL, a line break); "
    "export the id as plain text"
)


def plain_id(value: str) -> bool:
    """Whether one text is an id as the contract's rule has them (at most MAX_ID_LENGTH characters, no
    control character): anything else is no stored id, and PostgreSQL refuses a NUL."""
    return len(value) <= MAX_ID_LENGTH and not CONTROL.search(value)


# Free text (a job centre's name): any text but a NUL, which PostgreSQL cannot store (a contract gap, as
# for ids; a line break in a quoted CSV cell stays allowed).
FREE_TEXT: tuple[tuple[str, str], ...] = (("citizens", "jobcentre"), ("caseworkers", "jobcentre"))
NUL = "\x00"
FREE_TEXT_MESSAGE = "holds a NUL character, which the store cannot hold; export the name as plain text"
# Columns whose values describe a person (a citizen, or a caseworker by id): a problem in them is
# reported without the value; the table, row and column say where it is.
PERSONAL: frozenset[tuple[str, str]] = frozenset(
    {(table, "citizen_id") for table, _ in NOT_CPR}
    | {("measurements", "measurement_id"), ("measurements", "caseworker_id"), ("caseworkers", "caseworker_id")}
    | {("caseworkers", "job_orientation")}  # a caseworker's own answer
    | {("citizens", c) for c in ("birth_year", "children", "benefit_share_5y", "enrolled_on")}
    | {("measurements", c) for c in ("measured_on", *SCORE_COLUMNS)}
    | {("interventions", c) for c in ("started_on", "ended_on")}
    | {("outcomes", c) for c in ("event_on", "followed_until")}
)
