"""The caseworker page: one citizen's chance, what lies behind it and what could move it, served by
the prediction service itself (mounted with `@bentoml.asgi_app(create_app(...), path=PAGE_PATH)`).

Server-rendered HTML (Jinja2) with inline SVG charts laid out here in Python, each chart followed by
a table of the same numbers: nothing loads from the network, the page works without JavaScript and
with the keyboard alone. The chance comes from the service's own `Predictor`, through the same
`predict` call as POST /predict, so page and API show the same number (and the view is audited).

Routes under the mount path (Danish by default, `?lang=en` for English):
    GET  /                    find a citizen by the start of their pseudonymous id (`?q=`)
    GET  /citizen/{id}        the citizen's page (404 unknown citizen, 503 no model loaded)
    POST /assessments         record the caseworker's own assessment (form), then back to the page
    GET  /model               what the model is trained on and how accurate it is
    GET  /static/...          the style sheet
The POST body is an HTML form (application/x-www-form-urlencoded), at most MAX_FORM_BYTES.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from features import store
from features.catalogue import GROUP_LABELS, GROUPS, INDICATORS, INTERVENTION_GROUP, INTERVENTIONS, SCORE_MAX, SCORE_MIN
from serving.core import ModelUnavailable, Predictor, history_from_dataset, score
from serving.schemas import CitizenHistory, Factor, ModelInfo, Prediction

PAGE_PATH = "/caseworker"
INTERVENTION_BY_CODE = {i.code: i for i in INTERVENTIONS}
HERE = Path(__file__).resolve().parent
LANGUAGES = ("da", "en")
SEARCH_LIMIT = 50
MAX_FORM_BYTES = 16 * 1024
MAX_REASON_CHARS = 1000
MAX_ID_CHARS = 64

# Plain-language bands of the chance: (upper bound, band), checked in order.
BANDS: tuple[tuple[float, str], ...] = ((0.10, "low"), (0.25, "moderate"), (math.inf, "good"))

# The page's own words. Indicator, group and background labels come from features.catalogue.
TEXT: dict[str, dict[str, str]] = {
    "da": {
        "title": "Jobchance — sagsbehandlerens side",
        "skip": "Spring til indhold",
        "switch": "English",
        "search_heading": "Find en borger",
        "search_label": "Borgerens pseudonyme id (eller begyndelsen af det)",
        "search_button": "Søg",
        "search_none": "Ingen borgere i målingsdatabasen har et id, der begynder med »{q}«.",
        "search_empty_store": "Målingsdatabasen er tom: indlæs data med `bip ingest`.",
        "search_found": "Borgere, hvis id begynder med »{q}«",
        "search_first": "De første borgere i målingsdatabasen",
        "back_to_search": "Find en anden borger",
        "citizen": "Borger",
        "jobcentre": "Jobcenter",
        "enrolled": "Med i forløbet siden",
        "rounds": "Målinger",
        "chance_heading": "Chance for job eller uddannelse inden for et år",
        "band_low": "lav",
        "band_moderate": "middel",
        "band_good": "god",
        "band_sentence": "En {band} chance lige nu. Det er et udgangspunkt, ikke en skæbne: "
        "se nedenfor, hvad der kan flytte den.",
        "model_line": "Model {name}, version {version} · beregnet ud fra målingen {measured_on} · {today}",
        "statement_heading": "Hvad tallet er — og ikke er",
        "statement_trained": "Tallet er en statistisk vurdering fra en model, der er trænet på {rows} målinger "
        "af {citizens} borgere fra {first} til {last}: hvordan det gik borgere med lignende svar og forløb.",
        "statement_accuracy": "På data, som modellen ikke var trænet på, skelner den mellem borgere, der kom i job "
        "eller uddannelse, og borgere, der ikke gjorde, med en AUC på {auc} (0,5 er gætværk, 1 er perfekt), "
        "og dens chancer ligger i gennemsnit {ece} procentpoint fra det, der faktisk skete.",
        "statement_not": "Tallet er ikke en dom over borgeren og ikke en forudsigelse af, hvad der vil ske. "
        "BIP fandt, at din egen tro på borgeren og jeres samarbejde ændrer chancen. Du træffer beslutningen.",
        "statement_link": "Modellens træningsdata og nøjagtighed",
        "factors_heading": "Hvad trækker op, og hvad trækker ned",
        "factors_intro": "Hver søjle viser, hvor meget en indikator — borgerens og dit svar tilsammen — "
        "trækker chancen op (til højre) eller ned (til venstre) i forhold til en gennemsnitlig borger.",
        "raises": "trækker op",
        "lowers": "trækker ned",
        "axis_lowers": "← trækker ned",
        "axis_raises": "trækker op →",
        "table_caption_factors": "Indikatorernes bidrag (samme tal som diagrammet)",
        "indicator": "Indikator",
        "citizen_answer": "Borgerens svar",
        "caseworker_answer": "Sagsbehandlerens svar",
        "direction": "Retning",
        "size": "Størrelse (log-odds)",
        "other_factors": "Andre forhold, modellen tager med (kan ikke ændres direkte)",
        "factor": "Forhold",
        "moves_heading": "Hvad kan flytte chancen — hvor I kan arbejde sammen",
        "moves_intro": "For hver indikator, borgeren kan rykke sig på: chancen, hvis både borgerens og dit "
        "seneste svar var ét trin højere (højst 5), mens alt andet er uændret. Det viser, hvor modellen ser "
        "mest at vinde — ikke en garanti, og ikke en årsagssammenhæng.",
        "now": "Nu (borger / sagsbehandler)",
        "if_one_step": "Chance ved ét trin op",
        "change": "Ændring",
        "points": "procentpoint",
        "no_gain": "ingen gevinst i modellen",
        "at_top": "Allerede på 5 (eller ikke besvaret) i seneste måling: {labels}.",
        "assessment_heading": "Din vurdering",
        "assessment_intro": "Du kender borgeren. Skriv, om du er enig i chancen, og hvorfor — "
        "din vurdering gemmes ved siden af tallet og i revisionsloggen.",
        "assessment_legend": "Din vurdering af chancen på {percent}",
        "assessment_agree": "Enig — chancen passer med mit indtryk",
        "assessment_higher": "Jeg vurderer chancen højere",
        "assessment_lower": "Jeg vurderer chancen lavere",
        "reason": "Begrundelse (højst {n} tegn)",
        "save": "Gem vurdering",
        "saved": "Din vurdering er gemt.",
        "assessments_caption": "Tidligere vurderinger",
        "assessments_none": "Ingen vurderinger endnu.",
        "recorded_at": "Tidspunkt",
        "assessment": "Vurdering",
        "probability_shown": "Chance vist",
        "model_version": "Modelversion",
        "history_heading": "Indikatorerne over tid",
        "history_intro": "Borgerens svar (fuld linje, cirkler) og dit svar (stiplet linje, firkanter) "
        "i hver måling, 1 = lavest og 5 = højest.",
        "legend_citizen": "Borgerens svar",
        "legend_caseworker": "Sagsbehandlerens svar",
        "history_table": "Vis som tabel",
        "history_caption": "Svar pr. måling (borger / sagsbehandler; – = ikke besvaret)",
        "interventions_heading": "Indsatser",
        "interventions_intro": "Hver indsats som en bjælke fra start til slut, farvet efter type. "
        "Lodrette streger er målingerne.",
        "interventions_none": "Ingen indsatser registreret.",
        "running": "i gang",
        "intervention": "Indsats",
        "group": "Type",
        "started": "Start",
        "ended": "Slut",
        "timeline_table": "Vis som tabel",
        "timeline_caption": "Indsatser (samme som tidslinjen)",
        "measured_on": "Måling",
        "model_heading": "Modellen bag tallet",
        "metric": "Mål",
        "value": "Værdi",
        "metrics_cv": "Krydsvalidering (borgere, modellen ikke så)",
        "metrics_oot": "Senere periode (målinger efter træningsperioden)",
        "json_link": "Alle oplysninger som JSON",
        "fingerprint_caption": "Træningsdata",
        "back": "Tilbage",
        "error_404": "Borgeren findes ikke",
        "error_404_text": "Der er ingen målinger for borgeren »{citizen_id}« i målingsdatabasen.",
        "error_503": "Ingen model lige nu",
        "error_503_text": "Tjenesten har ingen model indlæst endnu, så der kan ikke vises en chance. "
        "Prøv igen om lidt, eller bed en administrator om at træne og registrere en model.",
        "error_store": "Målingsdatabasen svarer ikke",
        "error_400": "Vurderingen blev ikke gemt",
        "error_415": "Formularen skal sendes som almindelig HTML-formular.",
        "error_413": "Formularen er for stor.",
    },
    "en": {
        "title": "Job chance — caseworker page",
        "skip": "Skip to content",
        "switch": "Dansk",
        "search_heading": "Find a citizen",
        "search_label": "The citizen's pseudonymous id (or its beginning)",
        "search_button": "Search",
        "search_none": "No citizen in the measurement store has an id beginning with “{q}”.",
        "search_empty_store": "The measurement store is empty: load data with `bip ingest`.",
        "search_found": "Citizens whose id begins with “{q}”",
        "search_first": "The first citizens in the measurement store",
        "back_to_search": "Find another citizen",
        "citizen": "Citizen",
        "jobcentre": "Job centre",
        "enrolled": "Followed since",
        "rounds": "Measurements",
        "chance_heading": "Chance of a job or education within a year",
        "band_low": "low",
        "band_moderate": "moderate",
        "band_good": "good",
        "band_sentence": "A {band} chance right now. It is a starting point, not a fate: see below what can move it.",
        "model_line": "Model {name}, version {version} · from the measurement of {measured_on} · {today}",
        "statement_heading": "What the number is — and is not",
        "statement_trained": "The number is a statistical estimate from a model trained on {rows} measurements "
        "of {citizens} citizens from {first} to {last}: how things went for citizens with similar answers "
        "and courses.",
        "statement_accuracy": "On data it was not trained on, it tells apart citizens who entered a job or "
        "education from those who did not with an AUC of {auc} (0.5 is guessing, 1 is perfect), and its "
        "chances lie on average {ece} percentage points from what actually happened.",
        "statement_not": "The number is not a verdict on the citizen and not a forecast of what will happen. "
        "BIP found that your own belief in the citizen and your work together change the chance. "
        "You make the decision.",
        "statement_link": "The model's training data and accuracy",
        "factors_heading": "What raises and what lowers the chance",
        "factors_intro": "Each bar shows how much an indicator — the citizen's and your answer together — "
        "raises the chance (to the right) or lowers it (to the left) compared with an average citizen.",
        "raises": "raises",
        "lowers": "lowers",
        "axis_lowers": "← lowers",
        "axis_raises": "raises →",
        "table_caption_factors": "The indicators' contributions (the same numbers as the chart)",
        "indicator": "Indicator",
        "citizen_answer": "Citizen's answer",
        "caseworker_answer": "Caseworker's answer",
        "direction": "Direction",
        "size": "Size (log-odds)",
        "other_factors": "Other things the model takes into account (not directly changeable)",
        "factor": "Factor",
        "moves_heading": "What would move it — where to work together",
        "moves_intro": "For each indicator the citizen can progress on: the chance if both the citizen's and "
        "your latest answer were one step higher (at most 5), everything else held. It shows where the model "
        "sees most to gain — not a guarantee, and not a cause and effect.",
        "now": "Now (citizen / caseworker)",
        "if_one_step": "Chance one step up",
        "change": "Change",
        "points": "percentage points",
        "no_gain": "no gain in the model",
        "at_top": "Already at 5 (or unanswered) in the latest measurement: {labels}.",
        "assessment_heading": "Your assessment",
        "assessment_intro": "You know the citizen. Record whether you agree with the chance, and why — "
        "your assessment is stored next to the number and in the audit log.",
        "assessment_legend": "Your assessment of the chance of {percent}",
        "assessment_agree": "Agree — the chance matches my impression",
        "assessment_higher": "I judge the chance higher",
        "assessment_lower": "I judge the chance lower",
        "reason": "Reason (at most {n} characters)",
        "save": "Save assessment",
        "saved": "Your assessment has been saved.",
        "assessments_caption": "Earlier assessments",
        "assessments_none": "No assessments yet.",
        "recorded_at": "Time",
        "assessment": "Assessment",
        "probability_shown": "Chance shown",
        "model_version": "Model version",
        "history_heading": "The indicators over time",
        "history_intro": "The citizen's answer (solid line, circles) and your answer (dashed line, squares) "
        "in each measurement, 1 = lowest and 5 = highest.",
        "legend_citizen": "Citizen's answer",
        "legend_caseworker": "Caseworker's answer",
        "history_table": "Show as a table",
        "history_caption": "Answers per measurement (citizen / caseworker; – = unanswered)",
        "interventions_heading": "Interventions",
        "interventions_intro": "Each intervention as a bar from start to end, coloured by type. "
        "Vertical lines are the measurements.",
        "interventions_none": "No interventions recorded.",
        "running": "running",
        "intervention": "Intervention",
        "group": "Type",
        "started": "Start",
        "ended": "End",
        "timeline_table": "Show as a table",
        "timeline_caption": "Interventions (the same as the timeline)",
        "measured_on": "Measurement",
        "model_heading": "The model behind the number",
        "metric": "Measure",
        "value": "Value",
        "metrics_cv": "Cross-validation (citizens the model did not see)",
        "metrics_oot": "Later period (measurements after the training period)",
        "json_link": "Everything as JSON",
        "fingerprint_caption": "Training data",
        "back": "Back",
        "error_404": "Citizen not found",
        "error_404_text": "The measurement store holds no measurements of the citizen “{citizen_id}”.",
        "error_503": "No model right now",
        "error_503_text": "The service has no model loaded yet, so no chance can be shown. Try again shortly, "
        "or ask an administrator to train and register a model.",
        "error_store": "The measurement store does not answer",
        "error_400": "The assessment was not saved",
        "error_415": "The form must be sent as an ordinary HTML form.",
        "error_413": "The form is too large.",
    },
}

METRIC_LABELS: dict[str, tuple[str, str]] = {
    "roc_auc": ("AUC (skelneevne)", "AUC (discrimination)"),
    "pr_auc": ("PR-AUC", "PR-AUC"),
    "brier": ("Brier-score (lavere er bedre)", "Brier score (lower is better)"),
    "log_loss": ("Log-loss (lavere er bedre)", "Log loss (lower is better)"),
    "ece": ("Kalibreringsfejl, ECE (lavere er bedre)", "Calibration error, ECE (lower is better)"),
}


# ---------------------------------------------------------------------------------------------
# Numbers in words


def band(probability: float) -> str:
    """The plain-language band of a chance: low (<10%), moderate (10-25%) or good (>25%)."""
    return next(name for bound, name in BANDS if probability < bound)


def percent(probability: float, lang: str) -> str:
    """A chance as a whole percentage, '<1 %' below half a percent (Danish puts a space before %)."""
    value = 100 * probability
    text = "<1" if value < 0.5 else f"{value:.0f}"
    return f"{text}\u00a0%" if lang == "da" else f"{text}%"


def number(value: float, digits: int, lang: str, signed: bool = False) -> str:
    """A decimal number in the page's language (decimal comma in Danish)."""
    if round(value, digits) == 0:
        value = 0.0  # no "-0.00", and no sign on what rounds to nothing
        signed = False
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    text = text.replace("-", "\u2212")
    return text.replace(".", ",") if lang == "da" else text


def count(n: int, lang: str) -> str:
    """A whole number with thousands separated (3.880 in Danish, 3,880 in English)."""
    return f"{n:,}".replace(",", "." if lang == "da" else ",")


def label(item: Any, lang: str) -> str:
    """The label of a catalogue item or factor (anything with `label_da` and `label_en`) in `lang`."""
    return getattr(item, f"label_{lang}")


def _pick(labels: tuple[str, str], lang: str) -> str:
    """The Danish or the English of a (Danish, English) pair of the catalogue."""
    return labels[0] if lang == "da" else labels[1]


# ---------------------------------------------------------------------------------------------
# Chart layouts: geometry computed here, drawn by templates/charts.html


def label_room(labels: Sequence[str]) -> int:
    """Room for the longest of the labels left of a chart (13px text: about 7.2 px a character)."""
    return int(max((len(text) for text in labels), default=0) * 7.2) + 16


@dataclass(frozen=True)
class Bar:
    key: str
    label: str
    contribution: float
    direction: str
    citizen: int | None
    caseworker: int | None
    y: float
    x: float
    width: float


@dataclass(frozen=True)
class BarChart:
    bars: list[Bar]
    width: int
    height: int
    zero: float
    label_width: int
    row: int


def contribution_chart(factors: Sequence[Factor], lang: str) -> BarChart:
    """One horizontal bar per indicator, from a zero line: right raises, left lowers; largest raise first."""
    plot, row = 380, 30
    indicators = sorted((f for f in factors if f.kind == "indicator"), key=lambda f: -f.contribution)
    label_width = max(240, label_room([label(f, lang) for f in indicators]))
    largest = max([abs(f.contribution) for f in indicators] + [1e-9])
    zero = label_width + plot / 2
    scale = (plot / 2 - 50) / largest  # room for the value beside the bar
    bars = []
    for k, f in enumerate(indicators):
        length = abs(f.contribution) * scale
        bars.append(
            Bar(
                key=f.key,
                label=label(f, lang),
                contribution=f.contribution,
                direction=f.direction,
                citizen=f.scores.citizen if f.scores else None,
                caseworker=f.scores.caseworker if f.scores else None,
                y=28 + k * row,
                x=zero if f.contribution >= 0 else zero - length,
                width=max(length, 1.0),
            )
        )
    return BarChart(bars, label_width + plot, 28 + len(bars) * row + 8, zero, label_width, row)


@dataclass(frozen=True)
class Panel:
    code: str
    label: str
    citizen: list[tuple[float, float, int]]  # x, y, answer
    caseworker: list[tuple[float, float, int]]
    citizen_path: str
    caseworker_path: str
    cells: list[tuple[int | None, int | None]]  # (citizen, caseworker) answer in each round


PANEL_W, PANEL_H, PANEL_PAD = 260, 120, 24


def answer_y(answer: int) -> float:
    """The height of an answer (1-5) in a history panel."""
    return PANEL_H - 16 - (answer - 1) / (SCORE_MAX - 1) * (PANEL_H - 30)


PANEL_GRID: tuple[tuple[int, float], ...] = tuple((a, answer_y(a)) for a in range(SCORE_MIN, SCORE_MAX + 1))


def _path(points: Sequence[tuple[float, float, int]]) -> str:
    return " ".join(f"{'M' if k == 0 else 'L'}{x:.1f},{y:.1f}" for k, (x, y, _) in enumerate(points))


def history_panels(history: CitizenHistory, lang: str) -> list[Panel]:
    """One small line chart per indicator: the citizen's and the caseworker's answers over the rounds."""
    rounds = sorted(history.measurements, key=lambda m: m.measured_on)
    first, last = rounds[0].measured_on, rounds[-1].measured_on
    span = max((last - first).days, 1)

    def x(day: date) -> float:
        if first == last:
            return PANEL_W / 2
        return PANEL_PAD + (day - first).days / span * (PANEL_W - 2 * PANEL_PAD)

    panels = []
    for item in INDICATORS:
        cells = [(getattr(m.citizen, item.code, None), getattr(m.caseworker, item.code)) for m in rounds]
        cit = [(x(m.measured_on), answer_y(a), a) for m, (a, _) in zip(rounds, cells, strict=True) if a is not None]
        cw = [(x(m.measured_on), answer_y(b), b) for m, (_, b) in zip(rounds, cells, strict=True) if b is not None]
        panels.append(Panel(item.code, label(item, lang), cit, cw, _path(cit), _path(cw), cells))
    return panels


@dataclass(frozen=True)
class Episode:
    code: str
    label: str
    group: str
    group_label: str
    started_on: date
    ended_on: date | None
    x: float
    y: float
    width: float


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Timeline:
    episodes: list[Episode]
    measurements: list[float]
    years: list[Tick]
    width: int
    height: int
    label_width: int
    plot_right: int


def intervention_timeline(history: CitizenHistory, lang: str) -> Timeline:
    """One bar per intervention episode on a time axis from enrolment to the prediction date."""
    plot, row, top = 460, 22, 24
    episodes = sorted(history.interventions, key=lambda e: (e.started_on, e.intervention))
    labels = [label(INTERVENTION_BY_CODE[e.intervention], lang) for e in episodes]
    label_width = max(300, label_room(labels))
    end = history.effective_as_of
    start = min([history.citizen.enrolled_on, *(m.measured_on for m in history.measurements)])
    start = min([start, *(e.started_on for e in episodes)])
    span = max((end - start).days, 1)

    def x(day: date) -> float:
        return label_width + (day - start).days / span * plot

    bars = []
    for k, (e, text) in enumerate(zip(episodes, labels, strict=True)):
        group = INTERVENTION_GROUP[e.intervention]
        stop = e.ended_on or end
        bars.append(
            Episode(
                code=e.intervention,
                label=text,
                group=group,
                group_label=_pick(GROUP_LABELS[group], lang),
                started_on=e.started_on,
                ended_on=e.ended_on,
                x=x(e.started_on),
                y=top + k * row,
                width=max(x(stop) - x(e.started_on), 3.0),
            )
        )
    # A year's label sits right of its line; the last one is left out where it would not fit.
    years = [Tick(x(date(y, 1, 1)), str(y)) for y in range(start.year + 1, end.year + 1)]
    years = [tick for tick in years if tick.x + 32 <= label_width + plot]
    height = top + len(bars) * row + 10
    return Timeline(
        bars,
        [x(m.measured_on) for m in history.measurements],
        years,
        label_width + plot + 10,
        height,
        label_width,
        label_width + plot,
    )


# ---------------------------------------------------------------------------------------------
# What would move it


@dataclass(frozen=True)
class StepUp:
    code: str
    label: str
    citizen: int | None
    caseworker: int | None
    probability: float
    change: float


def stepped_up(history: CitizenHistory, code: str, variant_id: str) -> CitizenHistory:
    """The history with both answers to `code` in the last round one step higher (capped at 5), under
    another citizen id so that several variants can be scored in one batch."""
    data = history.model_dump()
    data["citizen"]["citizen_id"] = variant_id
    last = max(data["measurements"], key=lambda m: m["measured_on"])
    for side in ("citizen", "caseworker"):
        if (answer := last[side].get(code)) is not None:
            last[side][code] = min(SCORE_MAX, answer + 1)
    return CitizenHistory.model_validate(data)


def step_ups(predictor: Predictor, history: CitizenHistory, now: Prediction, lang: str) -> tuple[list[StepUp], list]:
    """For each indicator the citizen answers and could still progress on, the chance one step up
    (largest gain first), and the labels of those already at the top or unanswered.

    Like `Predictor.what_if`, but all variants are scored in one batch (one feature build and one
    model call instead of ten); not audited.
    """
    last = max(history.measurements, key=lambda m: m.measured_on)
    movable, at_top = [], []
    for item in INDICATORS:
        if not item.citizen_answers:
            continue
        answers = (getattr(last.citizen, item.code), getattr(last.caseworker, item.code))
        present = [a for a in answers if a is not None]
        (movable if present and min(present) < SCORE_MAX else at_top).append((item, answers))
    variants = [stepped_up(history, item.code, f"what-if-{k}") for k, (item, _) in enumerate(movable)]
    predictions = score(predictor.loaded, variants) if variants else []
    rows = [
        StepUp(
            code=item.code,
            label=label(item, lang),
            citizen=answers[0],
            caseworker=answers[1],
            probability=p.probability,
            change=p.probability - now.probability,
        )
        for (item, answers), p in zip(movable, predictions, strict=True)
    ]
    rows.sort(key=lambda r: -r.change)
    return rows, [label(item, lang) for item, _ in at_top]


# ---------------------------------------------------------------------------------------------
# The statement and the model page


def metric(metrics: Mapping[str, Any], name: str) -> float | None:
    """The held-out value of a metric: out-of-time when the model has it, else cross-validated."""
    for split in ("oot", "cv"):
        value = metrics.get(f"{split}_{name}")
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return None


def statement(info: ModelInfo, lang: str) -> list[str]:
    """The sentences of 'what the number is and is not', with the model's own fingerprint and metrics."""
    t, fp = TEXT[lang], info.training_fingerprint
    sentences = []
    if fp.get("rows"):
        sentences.append(
            t["statement_trained"].format(
                rows=count(fp["rows"], lang),
                citizens=count(fp.get("citizens", 0), lang),
                first=fp.get("first_measured_on", "?"),
                last=fp.get("last_measured_on", "?"),
            )
        )
    auc, ece = metric(info.metrics, "roc_auc"), metric(info.metrics, "ece")
    if auc is not None and ece is not None:
        sentences.append(t["statement_accuracy"].format(auc=number(auc, 2, lang), ece=number(100 * ece, 1, lang)))
    sentences.append(t["statement_not"])
    return sentences


def metric_rows(info: ModelInfo, lang: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """The model's headline metrics as (split heading, [(label, value)]) for the model page."""
    out = []
    for split in ("cv", "oot"):
        rows = [
            (_pick(labels, lang), number(float(info.metrics[f"{split}_{name}"]), 3, lang))
            for name, labels in METRIC_LABELS.items()
            if isinstance(info.metrics.get(f"{split}_{name}"), int | float)
        ]
        if rows:
            out.append((TEXT[lang][f"metrics_{split}"], rows))
    return out


# ---------------------------------------------------------------------------------------------
# The assessment form


class FormError(ValueError):
    """A form the page refuses, with the HTTP status and the message key to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AssessmentForm:
    citizen_id: str
    assessment: str
    reason: str | None
    probability_shown: float
    model_name: str
    model_version: str
    lang: str


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NAME = re.compile(r"^[\w.@:/-]{1,128}$")


def parse_assessment(body: bytes) -> AssessmentForm:
    """The fields of an assessment form body; FormError(400) naming the first wrong field."""
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as error:
        raise FormError(400, f"the form cannot be read: {error}") from error

    def one(name: str, required: bool = True) -> str:
        values = fields.get(name, [])
        if len(values) > 1:
            raise FormError(400, f"{name}: given {len(values)} times")
        if required and (not values or not values[0].strip()):
            raise FormError(400, f"{name}: missing")
        return values[0] if values else ""

    citizen_id = one("citizen_id")
    if len(citizen_id) > MAX_ID_CHARS or _CONTROL.search(citizen_id):
        raise FormError(400, "citizen_id: not a citizen id")
    assessment = one("assessment")
    if assessment not in store.ASSESSMENTS:
        raise FormError(400, f"assessment: must be one of {', '.join(store.ASSESSMENTS)}")
    reason = one("reason", required=False).replace("\r\n", "\n").strip()
    if len(reason) > MAX_REASON_CHARS:
        raise FormError(400, f"reason: at most {MAX_REASON_CHARS} characters, got {len(reason)}")
    if _CONTROL.search(reason):
        raise FormError(400, "reason: contains control characters")
    try:
        probability = float(one("probability_shown"))
    except ValueError as error:
        raise FormError(400, "probability_shown: not a number") from error
    if not 0.0 <= probability <= 1.0:
        raise FormError(400, "probability_shown: must lie in [0, 1]")
    model_name, model_version = one("model_name"), one("model_version")
    if not (_NAME.match(model_name) and _NAME.match(model_version)):
        raise FormError(400, "model_name / model_version: not a model reference")
    lang = one("lang", required=False)
    return AssessmentForm(
        citizen_id,
        assessment,
        reason or None,
        probability,
        model_name,
        model_version,
        lang if lang in LANGUAGES else "da",
    )


class AssessmentAudit:
    """Appends one JSON line per recorded assessment to the audit log (same file and rule as
    `serving.audit.AuditLog`: no personal data, so the free-text reason stays in the store only)."""

    # TODO(lead): fold into serving.audit.AuditLog as a general `append(record)`.

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def record(self, form: AssessmentForm, assessment_id: int) -> None:
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": "caseworker_assessment",
            "model": form.model_name,
            "model_version": form.model_version,
            "citizen_id": form.citizen_id,
            "probability_shown": round(form.probability_shown, 6),
            "assessment": form.assessment,
            "assessment_id": assessment_id,
        }
        data = (json.dumps(line, ensure_ascii=False) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, data)  # one small append: atomic beside the service's own lines
            finally:
                os.close(fd)


async def read_form(request: Request, limit: int = MAX_FORM_BYTES) -> bytes:
    """The body of an HTML form post, at most `limit` bytes (FormError 415/413 otherwise)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise FormError(415, "error_415")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FormError(413, "error_413")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FormError(413, "error_413")
        chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# The application


def language(request: Request) -> str:
    lang = request.query_params.get("lang", "da")
    return lang if lang in LANGUAGES else "da"


def create_app(
    predictor: Callable[[], Predictor],
    settings: Callable[[], Any] | None = None,
    model_json_url: str = "/model",
) -> Starlette:
    """The caseworker page as an ASGI app.

    `predictor` returns the service's Predictor when called (at request time, so the app can be built
    at import time, before the service exists); `settings` returns the `bip.settings.Settings` with the
    store URL and audit log path (default: the predictor's). `model_json_url` is the API's GET /model.
    """
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["percent"] = percent
    env.filters["number"] = number
    env.filters["label"] = label
    env.filters["pathquote"] = lambda value: quote(str(value), safe="")
    audits: dict[Path, AssessmentAudit] = {}

    def current_settings() -> Any:
        return settings() if settings is not None else predictor().settings

    def page(request: Request, template: str, lang: str, status: int = 200, **context: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        query = {k: v for k, v in request.query_params.items() if k not in ("lang", "saved")}
        switch = "en" if lang == "da" else "da"
        switch_url = request.url.path + "?" + urlencode({**query, "lang": switch})
        html = env.get_template(template).render(
            t=TEXT[lang],
            lang=lang,
            base=base,
            lang_query="" if lang == "da" else "?lang=en",
            switch_url=switch_url,
            model_json_url=model_json_url,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def error(request: Request, lang: str, status: int, heading: str, text: str) -> HTMLResponse:
        return page(request, "error.html", lang, status=status, heading=heading, text=text)

    def search(request: Request) -> Response:
        lang = language(request)
        q = request.query_params.get("q", "").strip()[:MAX_ID_CHARS]
        try:
            ids = store.citizen_ids(current_settings().store_url, q, SEARCH_LIMIT)
        except SQLAlchemyError as failure:
            return error(request, lang, 503, TEXT[lang]["error_store"], str(failure.__class__.__name__))
        return page(request, "search.html", lang, q=q, ids=ids, limit=SEARCH_LIMIT)

    def citizen(request: Request) -> Response:
        lang, t = language(request), TEXT[language(request)]
        citizen_id = request.path_params["citizen_id"]
        url = current_settings().store_url
        try:
            history = history_from_dataset(store.load(url, [citizen_id]), citizen_id)
            assessments = store.assessments(url, citizen_id)
        except KeyError:
            return error(request, lang, 404, t["error_404"], t["error_404_text"].format(citizen_id=citizen_id))
        except SQLAlchemyError as failure:
            return error(request, lang, 503, t["error_store"], str(failure.__class__.__name__))
        service = predictor()
        try:
            prediction = service.predict(history)
            info = service.model_info()
            moves, at_top = step_ups(service, history, prediction, lang)
        except ModelUnavailable:
            return error(request, lang, 503, t["error_503"], t["error_503_text"])
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
            others=[f for f in factors if f.kind != "indicator"],
            moves=moves,
            at_top=at_top,
            panels=history_panels(history, lang),
            panel=(PANEL_W, PANEL_H),
            grid=PANEL_GRID,
            rounds=sorted(history.measurements, key=lambda m: m.measured_on),
            timeline=intervention_timeline(history, lang),
            groups=[(g, _pick(GROUP_LABELS[g], lang)) for g in GROUPS],
            assessments=assessments,
            assessment_labels={a: t[f"assessment_{a}"] for a in store.ASSESSMENTS},
            saved=request.query_params.get("saved") == "1",
            form_error=None,
            max_reason=MAX_REASON_CHARS,
        )

    async def record(request: Request) -> Response:
        lang = language(request)
        try:
            form = parse_assessment(await read_form(request))
        except FormError as failure:
            message = str(failure)
            text = TEXT[lang].get(message, message)
            return error(request, lang, failure.status, TEXT[lang]["error_400"], text)
        lang, t = form.lang, TEXT[form.lang]
        s = current_settings()
        try:
            known = await run_in_threadpool(store.citizen_ids, s.store_url, form.citizen_id, 1)
            if known != [form.citizen_id]:
                text = t["error_404_text"].format(citizen_id=form.citizen_id)
                return error(request, lang, 404, t["error_404"], text)
            assessment_id = await run_in_threadpool(
                store.record_assessment,
                s.store_url,
                citizen_id=form.citizen_id,
                probability_shown=form.probability_shown,
                model_version=form.model_version,
                assessment=form.assessment,
                reason=form.reason,
            )
        except SQLAlchemyError as failure:
            return error(request, lang, 503, t["error_store"], str(failure.__class__.__name__))
        audit = audits.setdefault(Path(s.audit_log_path), AssessmentAudit(s.audit_log_path))
        await run_in_threadpool(audit.record, form, assessment_id)
        base = request.scope.get("root_path", "").rstrip("/")
        query = urlencode({"saved": "1", **({"lang": "en"} if lang == "en" else {})})
        target = f"{base}/citizen/{quote(form.citizen_id, safe='')}?{query}#assessment"
        return RedirectResponse(target, status_code=303)

    def model(request: Request) -> Response:
        lang, t = language(request), TEXT[language(request)]
        try:
            info = predictor().model_info()
        except ModelUnavailable:
            return error(request, lang, 503, t["error_503"], t["error_503_text"])
        return page(
            request,
            "model.html",
            lang,
            info=info,
            statement=statement(info, lang),
            metric_rows=metric_rows(info, lang),
        )

    return Starlette(
        routes=[
            Route("/", search, name="search"),
            Route("/citizen/{citizen_id:path}", citizen, name="citizen"),
            Route("/assessments", record, methods=["POST"], name="assessments"),
            Route("/model", model, name="model"),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
    )


# Nothing may load from elsewhere: the browser refuses any script, style, image or font not served here.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
