"""The caseworker page's words: its UI sentences in Danish and English (`TEXT`), numbers and chances
written in the page's language, and the sentences about the model.

Indicator, intervention, group and background labels are domain labels: they come from
`features.catalogue`, where Danish and English are written once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from serving.schemas import ModelInfo

LANGUAGES = ("da", "en")

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
        "card_link": "Modelkort: brug, data, kvalitet, retfærdighed og klageadgang",
        "card_missing": "Denne version har intet modelkort (registreret før modelkort, eller registret svarer ikke).",
        "fingerprint_caption": "Træningsdata",
        "back": "Tilbage",
        "error_404": "Borgeren findes ikke",
        "error_404_text": "Der er ingen målinger for borgeren »{citizen_id}« i målingsdatabasen.",
        "error_503": "Ingen model lige nu",
        "error_503_text": "Tjenesten har ingen model indlæst endnu, så der kan ikke vises en chance. "
        "Prøv igen om lidt, eller bed en administrator om at træne og registrere en model.",
        "error_store": "Målingsdatabasen svarer ikke",
        "error_400": "Vurderingen blev ikke gemt",
        "error_search": "Søgningen kunne ikke udføres",
        "error_search_text": "Søgeteksten (q) indeholder kontroltegn.",
        "error_415": "Formularen skal sendes som almindelig HTML-formular.",
        "error_413": "Formularen er for stor.",
        "error_408": "Formularen nåede ikke frem i tide: prøv igen.",
        "error_403_form": "Formularen kom ikke fra denne side (eller sessionen er udløbet): åbn siden igen.",
        "error_403_view": "Vurderingen hører ikke til en visning, du selv har åbnet: åbn borgerens side igen.",
        "waterfall_heading": "Fra gennemsnittet til denne borger",
        "waterfall_intro": "En gennemsnitlig borger har en chance på {base}. Hver række viser, hvor mange "
        "procentpoint et forhold flytter chancen, lagt til i rækkefølge, indtil borgerens egen chance på {chance}.",
        "waterfall_caption": "Trinene i procentpoint (samme tal som diagrammet)",
        "waterfall_base": "Gennemsnitlig borger",
        "waterfall_others": "Øvrige forhold tilsammen",
        "waterfall_result": "Denne borger",
        "chance_after": "Chance derefter",
        "login_heading": "Log ind",
        "login_intro": "Log ind med dit brugernavn og din adgangskode fra jobcentrets administrator.",
        "login_name": "Brugernavn",
        "login_password": "Adgangskode",
        "login_button": "Log ind",
        "login_failed": "Forkert brugernavn eller adgangskode.",
        "login_limited": "For mange mislykkede forsøg: vent et kvarter, eller kontakt en administrator.",
        "login_proxy": "Du logger ind via jobcentrets fælles login (single sign-on). Gå til tjenestens adresse igen.",
        "login_not_here": "Denne installation bruger ikke indbyggede brugere.",
        "signed_in_as": "Logget ind som {user}",
        "logout": "Log ud",
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
        "card_link": "Model card: use, data, quality, fairness and how to contest a score",
        "card_missing": "This version has no model card (registered before cards, or the registry is not answering).",
        "fingerprint_caption": "Training data",
        "back": "Back",
        "error_404": "Citizen not found",
        "error_404_text": "The measurement store holds no measurements of the citizen “{citizen_id}”.",
        "error_503": "No model right now",
        "error_503_text": "The service has no model loaded yet, so no chance can be shown. Try again shortly, "
        "or ask an administrator to train and register a model.",
        "error_store": "The measurement store does not answer",
        "error_400": "The assessment was not saved",
        "error_search": "The search could not be run",
        "error_search_text": "The search text (q) contains control characters.",
        "error_415": "The form must be sent as an ordinary HTML form.",
        "error_413": "The form is too large.",
        "error_408": "The form did not arrive in time: try again.",
        "error_403_form": "The form did not come from this page (or the session has expired): open the page again.",
        "error_403_view": "The assessment does not answer a view you opened yourself: open the citizen's page again.",
        "waterfall_heading": "From the average to this citizen",
        "waterfall_intro": "An average citizen has a chance of {base}. Each row shows how many percentage points "
        "a factor moves the chance, added in turn, up to the citizen's own chance of {chance}.",
        "waterfall_caption": "The steps in percentage points (the same numbers as the chart)",
        "waterfall_base": "Average citizen",
        "waterfall_others": "Other factors together",
        "waterfall_result": "This citizen",
        "chance_after": "Chance after",
        "login_heading": "Sign in",
        "login_intro": "Sign in with the user name and password you got from the job centre's administrator.",
        "login_name": "User name",
        "login_password": "Password",
        "login_button": "Sign in",
        "login_failed": "Wrong user name or password.",
        "login_limited": "Too many failed attempts: wait a quarter of an hour, or ask an administrator.",
        "login_proxy": "You sign in through the job centre's single sign-on. Go to the service's address again.",
        "login_not_here": "This installation does not use built-in users.",
        "signed_in_as": "Signed in as {user}",
        "logout": "Sign out",
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


def pick(labels: tuple[str, str], lang: str) -> str:
    """The Danish or the English of a (Danish, English) pair of the catalogue."""
    return labels[0] if lang == "da" else labels[1]


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
            (pick(labels, lang), number(float(info.metrics[f"{split}_{name}"]), 3, lang))
            for name, labels in METRIC_LABELS.items()
            if isinstance(info.metrics.get(f"{split}_{name}"), int | float)
        ]
        if rows:
            out.append((TEXT[lang][f"metrics_{split}"], rows))
    return out
