"""The request and response bodies of the prediction service, in the data contract's terms.

A request holds one citizen's history: register background, measurement rounds (each with the
citizen's and the caseworker's answers per indicator, 1-5), intervention episodes and, optionally,
the caseworkers' job orientation. Everything a client can get wrong is checked here, so that the
service answers 400 naming the field and never fails later on a client's mistake. Codes, bounds,
required fields, the date range and the CPR rule for ids come from the contract's declaration
(`features.contract_declaration`), so that every citizen `bip validate` accepts is a valid request
(tests/data/test_request_schema.py checks it); nothing is spelled out twice.

Decisions where the contract is silent:
- Answers are grouped per round as `citizen: {indicator: score}` and `caseworker: {indicator:
  score}` rather than flat `cit_`/`cw_` keys: an unknown indicator is then an unknown key, named in
  the error, and the OpenAPI schema lists the questions each side answers.
- `as_of` defaults to the latest date in the history; anything dated after it is an error. The
  score is that of the last measurement: features are as of its date, as in training.
- Two rounds on one day are allowed, as in the contract: they are ordered by measurement_id, as in
  the store (a round without one is `round-<n>`, n its position in the request).
- A caseworker missing from `caseworkers` has an unknown job orientation, as an empty cell would.
- Ids are any non-empty text, as in the contract (the body size caps their length); a history
  holds at most MAX_MEASUREMENTS rounds and MAX_INTERVENTIONS episodes, a batch at most MAX_BATCH
  citizens. These are request limits, not rules of the data.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from features.catalogue import INDICATORS
from features.contract_declaration import CODES, CONTROL, CPR_LIKE, CPR_MESSAGE, DATES, MAX_ID_LENGTH, RANGES

MAX_MEASUREMENTS = 200
MAX_INTERVENTIONS = 1000
MAX_CASEWORKERS = 200
MAX_BATCH = 5000
MAX_BATCH_MEASUREMENTS = 100_000
FIRST_DATE, LAST_DATE = DATES
KINDS = ("indicator", "intervention_group", "history", "caseworker", "background")


# Strict: pydantic's own checks, in Rust, without lax coercion. In JSON a whole number must be a JSON
# integer (not 3.0, "3" or true) and a date a "YYYY-MM-DD" string (a number would read as Unix time);
# from Python, `int` and `datetime.date` objects.
# Ids: at most MAX_ID_LENGTH characters, none of them a control character, as in an export
# (features.contract_declaration.ID_TEXT): a NUL cannot be stored in PostgreSQL, where the audit trail
# keeps the id, and a line break would split a log line.


def _no_control_characters(value: str) -> str:
    if CONTROL.search(value):
        raise PydanticCustomError("control_character", "must not contain control characters (e.g. NUL, line breaks)")
    return value


Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(_no_control_characters)]
Day = Annotated[date, Field(strict=True, ge=FIRST_DATE, le=LAST_DATE)]
WholeNumber = Annotated[int, Field(strict=True)]


def _bounds(table: str, column: str) -> dict[str, float]:
    """The contract's inclusive bounds of a column as pydantic's `ge`/`le`."""
    low, high = RANGES[table, column]
    return {"ge": low} if high is None else {"ge": low, "le": high}


def _codes(table: str, column: str) -> Any:
    """The contract's codes of a column as a Literal type."""
    return Literal[CODES[table, column]]  # type: ignore[valid-type]


def _not_cpr_like(citizen_id: str) -> str:
    if re.fullmatch(CPR_LIKE, citizen_id):
        raise PydanticCustomError("cpr_like", "the citizen_id " + CPR_MESSAGE)
    return citizen_id


CitizenId = Annotated[Id, AfterValidator(_not_cpr_like)]

_FORBID = ConfigDict(extra="forbid", hide_input_in_errors=True)


def _answers(name: str, codes: list[str], side: str, prefix: str) -> type[BaseModel]:
    """A model with one optional score per indicator code, bounded as the contract's `prefix + code`
    column; any other key is an error."""
    labels = {i.code: i.label_en for i in INDICATORS}
    fields: dict[str, Any] = {}
    for code in codes:
        bounds = _bounds("measurements", prefix + code)
        scale = f"{bounds['ge']}-{bounds['le']}"
        score = Annotated[WholeNumber, Field(**bounds)]
        description = f"{labels[code]} ({side}), {scale}; leave out if unanswered"
        fields[code] = (score | None, Field(default=None, description=description))
    return create_model(name, __config__=_FORBID, __doc__=f"The {side}'s answers of one round.", **fields)


CitizenAnswers = _answers("CitizenAnswers", [i.code for i in INDICATORS if i.citizen_answers], "citizen", "cit_")
CaseworkerAnswers = _answers("CaseworkerAnswers", [i.code for i in INDICATORS], "caseworker", "cw_")

InterventionCode = _codes("interventions", "intervention")


class Citizen(BaseModel):
    """Register background of the citizen (table `citizens` of the contract)."""

    model_config = _FORBID
    citizen_id: CitizenId = Field(description="Pseudonymous id; never a personal identification number (CPR).")
    jobcentre: Annotated[str, Field(min_length=1)]  # a name, not an id: the contract lets it hold any text
    birth_year: Annotated[WholeNumber, Field(**_bounds("citizens", "birth_year"))]
    gender: _codes("citizens", "gender")
    origin: _codes("citizens", "origin")
    civil_status: _codes("citizens", "civil_status")
    children: Annotated[WholeNumber, Field(**_bounds("citizens", "children"))]
    education: _codes("citizens", "education")
    benefit_share_5y: Annotated[
        float, Field(**_bounds("citizens", "benefit_share_5y"), allow_inf_nan=False, strict=True)
    ] = Field(description="Share of the previous 5 years on public income support, 0-1.")
    enrolled_on: Day


class Measurement(BaseModel):
    """One progression round: the citizen's and the caseworker's answers on one date."""

    model_config = _FORBID
    measurement_id: Id | None = Field(default=None, description="Optional; rounds are ordered by measured_on.")
    measured_on: Day
    caseworker_id: Id = Field(description="The caseworker responsible at that date.")
    citizen: CitizenAnswers = Field(default_factory=CitizenAnswers)  # type: ignore[valid-type]
    caseworker: CaseworkerAnswers = Field(default_factory=CaseworkerAnswers)  # type: ignore[valid-type]


class Intervention(BaseModel):
    """One intervention episode; `ended_on` empty while it runs, else on or after `started_on` (checked
    by CitizenHistory, once per history rather than once per episode)."""

    model_config = _FORBID
    intervention: InterventionCode
    started_on: Day
    ended_on: Day | None = None


class Caseworker(BaseModel):
    """A caseworker's job orientation (1-5, from the caseworker survey; empty if unknown)."""

    model_config = _FORBID
    caseworker_id: Id
    job_orientation: (
        Annotated[float, Field(**_bounds("caseworkers", "job_orientation"), allow_inf_nan=False, strict=True)] | None
    ) = None


Problem = tuple[tuple[str | int, ...], str]  # (location in the body, message)


def _repeats(values: list, field: str, loc: tuple[str | int, ...] = ()) -> list[Problem]:
    """One problem per value that an earlier item of the list already had."""
    seen: dict = {}
    problems = []
    for k, value in enumerate(values):
        if value is not None and value in seen:
            problems.append(((*loc, k, field), f"repeats item {seen[value]}"))
        seen.setdefault(value, k)
    return problems


def _raise(model: BaseModel, problems: list[Problem]) -> None:
    """Raise one ValidationError locating every problem in the body, as pydantic's own errors do
    (pydantic prefixes the location of `model` within the body)."""
    if problems:
        raise ValidationError.from_exception_data(
            type(model).__name__,
            [
                InitErrorDetails(type=PydanticCustomError("inconsistent", message), loc=loc, input=None)
                for loc, message in problems
            ],
        )


class CitizenHistory(BaseModel):
    """Everything known about one citizen up to `as_of`: the input of one prediction."""

    model_config = _FORBID
    citizen: Citizen
    # MAX_MEASUREMENTS is a request limit checked by the service (422), not a rule of the data.
    measurements: list[Measurement] = Field(min_length=1)
    interventions: list[Intervention] = Field(default_factory=list, max_length=MAX_INTERVENTIONS)
    caseworkers: list[Caseworker] = Field(default_factory=list, max_length=MAX_CASEWORKERS)
    as_of: Day | None = Field(
        default=None, description="Date the history is known up to; default: its latest date. Nothing may be later."
    )

    @model_validator(mode="after")
    def _consistent(self) -> CitizenHistory:
        """Rules across fields: dates in order, nothing after as_of, no repeated round id or episode."""
        m, e = self.measurements, self.interventions
        enrolled = self.citizen.enrolled_on
        problems = [
            (("measurements", k, "measured_on"), "is before citizen.enrolled_on")
            for k, x in enumerate(m)
            if x.measured_on < enrolled
        ]
        problems += [
            (("interventions", k, "ended_on"), "is before started_on")
            for k, x in enumerate(e)
            if x.ended_on is not None and x.ended_on < x.started_on
        ]
        if self.as_of is not None:
            problems += [
                (("measurements", k, "measured_on"), "is after as_of")
                for k, x in enumerate(m)
                if x.measured_on > self.as_of
            ]
            problems += [
                (("interventions", k, "started_on"), "is after as_of")
                for k, x in enumerate(e)
                if x.started_on > self.as_of
            ]
        problems += _repeats([x.measurement_id for x in m], "measurement_id", ("measurements",))
        problems += _repeats([(x.intervention, x.started_on) for x in e], "started_on", ("interventions",))
        problems += _repeats([x.caseworker_id for x in self.caseworkers], "caseworker_id", ("caseworkers",))
        _raise(self, problems)
        return self

    @property
    def effective_as_of(self) -> date:
        """`as_of`, or the latest measurement or intervention start when it is left out."""
        if self.as_of is not None:
            return self.as_of
        return max([x.measured_on for x in self.measurements] + [x.started_on for x in self.interventions])


EXAMPLE_HISTORY: dict[str, Any] = {
    "citizen": {
        "citizen_id": "C000123",
        "jobcentre": "Aarhus",
        "birth_year": 1975,
        "gender": "F",
        "origin": "danish",
        "civil_status": "single",
        "children": 1,
        "education": "vocational",
        "benefit_share_5y": 0.8,
        "enrolled_on": "2014-01-06",
    },
    "measurements": [
        {
            "measured_on": "2014-01-20",
            "caseworker_id": "W0017",
            "citizen": {"self_efficacy": 2, "job_search": 2, "health_coping": 3, "concentration": 3},
            "caseworker": {"self_efficacy": 2, "caseworker_belief": 2, "job_search": 2},
        },
        {
            "measured_on": "2014-04-22",
            "caseworker_id": "W0017",
            "citizen": {"self_efficacy": 3, "job_search": 4, "health_coping": 3, "concentration": 3},
            "caseworker": {"self_efficacy": 3, "caseworker_belief": 3, "job_search": 3},
        },
    ],
    "interventions": [
        {"intervention": "mentor", "started_on": "2014-02-01", "ended_on": "2014-04-30"},
        {"intervention": "wage_subsidy", "started_on": "2014-05-01"},
    ],
    "caseworkers": [{"caseworker_id": "W0017", "job_orientation": 3.6}],
    "as_of": "2014-05-15",
}


class PredictRequest(CitizenHistory):
    """One citizen's history; `feature_contributions` adds the contribution of every feature."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, json_schema_extra={"example": EXAMPLE_HISTORY})
    feature_contributions: bool = Field(
        default=False, strict=True, description="Also return each feature's contribution."
    )


class BatchRequest(BaseModel):
    """Many citizens' histories, scored together (one feature build, one model call)."""

    model_config = ConfigDict(
        extra="forbid", hide_input_in_errors=True, json_schema_extra={"example": {"citizens": [EXAMPLE_HISTORY]}}
    )
    citizens: list[CitizenHistory] = Field(min_length=1, max_length=MAX_BATCH)

    @model_validator(mode="after")
    def _distinct_citizens(self) -> BatchRequest:
        ids = [h.citizen.citizen_id for h in self.citizens]
        problems = [((*loc[:2], "citizen", "citizen_id"), msg) for loc, msg in _repeats(ids, "", ("citizens",))]
        _raise(self, problems)
        return self


class ModelRef(BaseModel):
    name: str
    version: str


class IndicatorScores(BaseModel):
    """The scores of the indicator at the scored round and their change since the round before."""

    citizen: int | None = None
    caseworker: int | None = None
    citizen_change: float | None = None
    caseworker_change: float | None = None


class Factor(BaseModel):
    """The summed contribution of the features that belong to one indicator, intervention group,
    history, caseworker or background item, on the calibrated log-odds scale."""

    key: str = Field(
        description="Indicator code, intervention group, 'pattern', 'history', 'caseworker' or background item."
    )
    kind: str = Field(description="One of " + ", ".join(KINDS) + ".")
    label_da: str
    label_en: str
    contribution: float
    probability_change: float = Field(
        description="The waterfall step: how much adding this factor, after the ones before it in the list, moves "
        "the probability (from base_probability; the steps add up to probability - base_probability)."
    )
    direction: Literal["raises", "lowers"]
    scores: IndicatorScores | None = Field(default=None, description="Indicators only.")


class FeatureContribution(BaseModel):
    name: str
    belongs_to: str
    value: float | str | None
    contribution: float


class Explanation(BaseModel):
    """base_value + the sum of the factors' contributions = log_odds; probability = 1/(1+exp(-log_odds))."""

    scale: str = Field(default="log-odds", description="Always log-odds: base_value, contributions and log_odds.")
    base_value: float
    base_probability: float = Field(description="The average citizen's chance: 1/(1+exp(-base_value)).")
    log_odds: float
    probability: float
    factors: list[Factor] = Field(description="Largest |contribution| first.")
    features: list[FeatureContribution] | None = None


EXAMPLE_PREDICTION: dict[str, Any] = {
    "citizen_id": "C000123",
    "as_of": "2014-05-15",
    "measured_on": "2014-04-22",
    "measurement_id": "round-2",
    "horizon_months": 12,
    "probability": 0.31,
    "model": {"name": "bip-job-chance", "version": "3"},
    "explanation": {
        "scale": "log-odds",
        "base_value": -1.02,
        "base_probability": 0.265,
        "log_odds": -0.80,
        "probability": 0.31,
        "factors": [
            {
                "key": "job_search",
                "kind": "indicator",
                "label_da": "Jobsøgningsadfærd",
                "label_en": "Job-search behaviour",
                "contribution": 0.35,
                "probability_change": 0.0735,
                "direction": "raises",
                "scores": {"citizen": 4, "caseworker": 3, "citizen_change": 2.0, "caseworker_change": 1.0},
            },
            {
                "key": "benefit_share_5y",
                "kind": "background",
                "label_da": "Andel på offentlig forsørgelse, 5 år",
                "label_en": "Share on public support, 5 years",
                "contribution": -0.13,
                "probability_change": -0.0285,
                "direction": "lowers",
                "scores": None,
            },
        ],
        "features": None,
    },
}


class Prediction(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE_PREDICTION})
    citizen_id: str
    as_of: date
    measured_on: date = Field(description="Date of the scored (last) measurement; the features are as of it.")
    measurement_id: str
    horizon_months: int
    probability: float = Field(description="Calibrated probability of a job or education within the horizon.")
    model: ModelRef
    explanation: Explanation


class BatchPrediction(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"model": EXAMPLE_PREDICTION["model"], "predictions": [EXAMPLE_PREDICTION]}}
    )
    model: ModelRef
    predictions: list[Prediction] = Field(description="In the order of the request.")


class FeatureEntry(BaseModel):
    name: str
    belongs_to: str
    kind: str
    label_da: str
    label_en: str
    monotone: int


class ModelInfo(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "name": "bip-job-chance",
                "version": "3",
                "alias": "champion",
                "horizon_months": 12,
                "training_fingerprint": {"rows": 27000, "citizens": 4000, "sha256": "9f2c..."},
                "metrics": {"cv_roc_auc": 0.74, "cv_brier": 0.17},
                "features": [
                    {
                        "name": "cit_self_efficacy",
                        "belongs_to": "self_efficacy",
                        "kind": "indicator",
                        "label_da": "Tro på at kunne klare et job (borgerens svar)",
                        "label_en": "Belief in being able to hold a job (citizen's answer)",
                        "monotone": 1,
                    }
                ],
            }
        }
    )
    name: str
    version: str
    alias: str
    horizon_months: int
    training_fingerprint: dict[str, Any]
    metrics: dict[str, Any]
    features: list[FeatureEntry]
    model_card_url: str | None = Field(
        default=None,
        description="Where the version's model card is shown (intended use, training data, metrics with "
        "intervals, fairness, limitations, how to contest a score).",
    )
    registry_checked_seconds_ago: float | None = Field(
        default=None,
        description="Seconds since the registry last answered the service's look for the champion: large "
        "while the registry is down (the loaded version keeps serving).",
    )
