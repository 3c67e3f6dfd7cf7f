"""The indicator and intervention catalogues of the data contract: codes, groups and labels.

Every other module takes codes, groups and Danish/English labels from here, so that a label is
written once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Indicator:
    code: str
    label_da: str
    label_en: str
    citizen_answers: bool


@dataclass(frozen=True)
class Intervention:
    code: str
    group: str
    label_da: str
    label_en: str


INDICATORS: tuple[Indicator, ...] = (
    Indicator(
        "job_market_knowledge",
        "Viden om arbejdsmarkedet og egne muligheder",
        "Knowledge of the job market and own options",
        True,
    ),
    Indicator("concentration", "Koncentrationsevne", "Ability to concentrate", True),
    Indicator("self_efficacy", "Tro på at kunne klare et job", "Belief in being able to hold a job", True),
    Indicator("caseworker_belief", "Sagsbehandlers tro på job", "Caseworker's belief in a job", False),
    Indicator("purposefulness", "Målrettethed", "Acts purposefully towards a job", True),
    Indicator("contact_ability", "Kontaktevne", "Ability to make contact", True),
    Indicator("cooperation", "Samarbejdsevne", "Ability to cooperate", True),
    Indicator("network_support", "Netværksstøtte", "Support from a network", True),
    Indicator("everyday_coping", "Hverdagsmestring", "Coping with everyday life", True),
    Indicator("health_coping", "Helbredsmestring", "Coping with health challenges", True),
    Indicator("job_search", "Jobsøgningsadfærd", "Job-search behaviour", True),
)

INDICATOR_CODES: tuple[str, ...] = tuple(i.code for i in INDICATORS)
CITIZEN_COLUMNS: tuple[str, ...] = tuple(f"cit_{i.code}" for i in INDICATORS if i.citizen_answers)
CASEWORKER_COLUMNS: tuple[str, ...] = tuple(f"cw_{i.code}" for i in INDICATORS)
SCORE_COLUMNS: tuple[str, ...] = CITIZEN_COLUMNS + CASEWORKER_COLUMNS
SCORE_MIN, SCORE_MAX = 1, 5

GROUPS: tuple[str, ...] = ("job", "upskilling", "social", "health")
GROUP_LABELS: dict[str, tuple[str, str]] = {
    "job": ("Jobrettet indsats", "Job-oriented intervention"),
    "upskilling": ("Opkvalificering", "Upskilling"),
    "social": ("Social indsats", "Social intervention"),
    "health": ("Helbredsrettet indsats", "Health intervention"),
}

INTERVENTIONS: tuple[Intervention, ...] = (
    Intervention("job_market_knowledge", "job", "Viden om arbejdsmarkedet", "Knowledge of the job market"),
    Intervention("job_search_course", "job", "Jobsøgning", "Job search"),
    Intervention("mentor", "job", "Virksomheds-/uddannelses-/jobcentermentor", "Company/education/job-centre mentor"),
    Intervention("internal_internship", "job", "Intern praktik", "Internal work placement"),
    Intervention("external_internship", "job", "Ekstern praktik", "External work placement"),
    Intervention("company_centre", "job", "Virksomhedscenter", "Company centre"),
    Intervention("wage_subsidy", "job", "Løntilskud", "Wage subsidy"),
    Intervention("temp_hours", "job", "Vikartimer", "Temporary hours"),
    Intervention("job_rotation", "job", "Jobrotation", "Job rotation"),
    Intervention("general_education", "upskilling", "Almenfaglig opkvalificering", "General upskilling"),
    Intervention("vocational_education", "upskilling", "Fagfaglig opkvalificering", "Vocational upskilling"),
    Intervention("pre_rehabilitation", "upskilling", "Forrevalidering", "Pre-rehabilitation"),
    Intervention("rehabilitation", "upskilling", "Revalidering", "Rehabilitation"),
    Intervention("social_skills", "social", "Sociale og personlige kompetencer", "Social and personal skills"),
    Intervention("network_building", "social", "Styrkelse af netværk", "Strengthening the network"),
    Intervention("everyday_coping_support", "social", "Hverdagsmestring", "Everyday coping"),
    Intervention("social_mentor", "social", "Social mentor / støttekontaktperson", "Social mentor / support contact"),
    Intervention("diet_exercise", "health", "Kost og motion", "Diet and exercise"),
    Intervention(
        "assessment_treatment",
        "health",
        "Udredning / behandling inkl. genoptræning",
        "Assessment / treatment incl. rehabilitation training",
    ),
    Intervention(
        "health_coping_support",
        "health",
        "Mestring af psykisk / fysisk helbred",
        "Coping with mental / physical health",
    ),
    Intervention("addiction_treatment", "health", "Misbrugsbehandling", "Addiction treatment"),
)

INTERVENTION_CODES: tuple[str, ...] = tuple(i.code for i in INTERVENTIONS)
INTERVENTION_GROUP: dict[str, str] = {i.code: i.group for i in INTERVENTIONS}

# The BIP pattern of the last three months: which groups a citizen took part in.
PATTERNS: tuple[str, ...] = ("job_and_other", "job_only", "other_only", "none")
PATTERN_LABELS: dict[str, tuple[str, str]] = {
    "job_and_other": ("Jobrettet kombineret med anden indsats", "Job-oriented combined with another type"),
    "job_only": ("Jobrettet uden parallel indsats", "Job-oriented alone"),
    "other_only": ("Kun andre indsatser", "Only other types"),
    "none": ("Ingen indsats", "No intervention"),
}

# Register-data categories of the contract.
GENDERS: tuple[str, ...] = ("F", "M")
ORIGINS: tuple[str, ...] = ("danish", "western", "non_western")
CIVIL_STATUSES: tuple[str, ...] = ("single", "couple")
EDUCATIONS: tuple[str, ...] = ("basic", "upper_secondary", "vocational", "higher")
EVENTS: tuple[str, ...] = ("job", "education", "none")

BACKGROUND_LABELS: dict[str, tuple[str, str]] = {
    "age": ("Alder", "Age"),
    "gender": ("Køn", "Gender"),
    "origin": ("Herkomst", "Origin"),
    "civil_status": ("Civilstand", "Civil status"),
    "children": ("Hjemmeboende børn", "Children at home"),
    "education": ("Uddannelse", "Education"),
    "benefit_share_5y": ("Andel på offentlig forsørgelse, 5 år", "Share on public support, 5 years"),
    "jobcentre": ("Jobcenter", "Job centre"),
}

# Labels of explanation factors that no single catalogue entry names.
KIND_LABELS: dict[str, tuple[str, str]] = {
    "history": ("Forløb og målinger indtil nu", "Course and measurements so far"),
    "caseworker": ("Sagsbehandler", "Caseworker"),
    "pattern": ("Indsatsmønster de seneste 3 måneder", "Intervention pattern of the last 3 months"),
}


def indicator(code: str) -> Indicator:
    """The catalogue entry of an indicator code; KeyError names the unknown code."""
    for item in INDICATORS:
        if item.code == code:
            return item
    raise KeyError(f"unknown indicator code {code!r}")


def factor_label(key: str, kind: str) -> tuple[str, str]:
    """Danish and English label of an explanation factor (a feature's `belongs_to`, of `kind`).

    The kind decides first: `job_market_knowledge` is both an indicator and an intervention code.
    """
    if kind == "indicator" and key in INDICATOR_CODES:
        item = indicator(key)
        return item.label_da, item.label_en
    if key in GROUP_LABELS:
        return GROUP_LABELS[key]
    if key in BACKGROUND_LABELS:
        return BACKGROUND_LABELS[key]
    return KIND_LABELS.get(key, (key, key))
