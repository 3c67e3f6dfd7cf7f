"""The feature columns that `build_features` writes: their names, meaning, labels and monotonicity.

The naming scheme is defined once here, so that the feature builders, training (what X is) and
the explanation page (which indicator or intervention group a column belongs to) agree. Codes and
their Danish/English labels come from `features.catalogue`; only the wording of a derivation
("change since the previous measurement") is written here.

Naming scheme (`<source>__<derivation>` wherever a column is derived from another):
- `cit_<indicator>`, `cw_<indicator>`: the score at this measurement (levels, monotone +1);
- `<score>__change_prev`, `<score>__change_first`, `<score>__slope_3r`: changes of a score;
- `rounds`, `days_since_enrolment`, `days_since_prev`: the citizen's measurement history;
- `grp_<group>__active|days_91|days_182|days_365|episodes`: interventions of a group;
- `int_<code>__episodes`: episodes of one intervention so far;
- `pattern_3m` (categorical) and `pattern_3m__<pattern>` (0/1): the BIP pattern of 3 months;
- `days_since_job_intervention`: days since the last job-oriented episode (0 while one runs);
- `caseworker_job_orientation`, `caseworker_changed`, `caseworker_changes`;
- background: `age`, `children`, `benefit_share_5y`, `gender`, `origin`, `civil_status`,
  `education`, `jobcentre`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from features.catalogue import (
    BACKGROUND_LABELS,
    CIVIL_STATUSES,
    EDUCATIONS,
    GENDERS,
    GROUP_LABELS,
    GROUPS,
    INTERVENTION_GROUP,
    INTERVENTIONS,
    KIND_LABELS,
    ORIGINS,
    PATTERN_LABELS,
    PATTERNS,
    SCORE_COLUMNS,
    indicator,
)

ID_COLUMNS: tuple[str, ...] = ("measurement_id", "citizen_id", "measured_on")
LABEL_COLUMNS: tuple[str, ...] = ("label", "censored", "time_to_event_days", "event_observed", "ipcw_weight")

# Slopes are per 90 days (about one round), so that irregular spacing of rounds does not inflate them.
SLOPE_DAYS = 90
SLOPE_ROUNDS = 3
CHANGES: tuple[str, ...] = ("change_prev", "change_first", "slope_3r")
HISTORY_COLUMNS: tuple[str, ...] = ("rounds", "days_since_enrolment", "days_since_prev")
WINDOWS_DAYS: tuple[int, ...] = (91, 182, 365)
PATTERN_WINDOW_DAYS = 91
GROUP_FEATURES: tuple[str, ...] = ("active", *(f"days_{w}" for w in WINDOWS_DAYS), "episodes")
PATTERN_COLUMN = "pattern_3m"
DAYS_SINCE_JOB = "days_since_job_intervention"
CASEWORKER_FEATURES: tuple[str, ...] = ("caseworker_job_orientation", "caseworker_changed", "caseworker_changes")
BACKGROUND_NUMERIC: tuple[str, ...] = ("age", "children", "benefit_share_5y")
BACKGROUND_CATEGORIES: tuple[str, ...] = ("gender", "origin", "civil_status", "education", "jobcentre")

KINDS: tuple[str, ...] = ("indicator", "intervention_group", "history", "caseworker", "background")


def change_column(score: str, change: str) -> str:
    """Name of a change feature of a score column, e.g. `cit_self_efficacy__change_prev`."""
    return f"{score}__{change}"


def group_column(group: str, feature: str) -> str:
    """Name of an intervention-group feature, e.g. `grp_job__days_91`."""
    return f"grp_{group}__{feature}"


def code_column(code: str) -> str:
    """Name of the per-intervention episode count, e.g. `int_wage_subsidy__episodes`."""
    return f"int_{code}__episodes"


def pattern_column(pattern: str) -> str:
    """Name of the 0/1 column of one BIP pattern, e.g. `pattern_3m__job_only`."""
    return f"{PATTERN_COLUMN}__{pattern}"


LEVEL_COLUMNS: tuple[str, ...] = SCORE_COLUMNS
CHANGE_COLUMNS: tuple[str, ...] = tuple(change_column(s, c) for s in SCORE_COLUMNS for c in CHANGES)
INTERVENTION_COLUMNS: tuple[str, ...] = (
    *(group_column(g, f) for g in GROUPS for f in GROUP_FEATURES),
    *(code_column(i.code) for i in INTERVENTIONS),
    *(pattern_column(p) for p in PATTERNS),
    DAYS_SINCE_JOB,
)
# Numeric features are float64 (NaN = unknown); the categorical ones come after them: pandas
# Categoricals with the contract's levels (the same categories in training and serving), and
# `jobcentre` as a string, whose values are the data's. Training owns their numeric encoding.
CATEGORY_LEVELS: dict[str, tuple[str, ...]] = {
    PATTERN_COLUMN: PATTERNS,
    "gender": GENDERS,
    "origin": ORIGINS,
    "civil_status": CIVIL_STATUSES,
    "education": EDUCATIONS,
}
NUMERIC_FEATURES: tuple[str, ...] = (
    *LEVEL_COLUMNS,
    *CHANGE_COLUMNS,
    *HISTORY_COLUMNS,
    *INTERVENTION_COLUMNS,
    *CASEWORKER_FEATURES,
    *BACKGROUND_NUMERIC,
)
CATEGORICAL_FEATURES: tuple[str, ...] = (PATTERN_COLUMN, *BACKGROUND_CATEGORIES)
FEATURE_COLUMNS: tuple[str, ...] = NUMERIC_FEATURES + CATEGORICAL_FEATURES


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of a `build_features` frame that are model inputs (X): not ids, not labels."""
    not_features = set(ID_COLUMNS) | set(LABEL_COLUMNS)
    return [c for c in frame.columns if c not in not_features]


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    belongs_to: (
        str  # an indicator code, an intervention group, "pattern", "history", "caseworker", or a background item
    )
    kind: str  # one of KINDS
    label_da: str
    label_en: str
    monotone: int  # +1: a higher value never lowers the chance (score levels); 0: no constraint
    dtype: str  # "float", "category" or "str"


_SOURCE_LABELS = {
    "cit": ("borgerens svar", "citizen's answer"),
    "cw": ("sagsbehandlerens vurdering", "caseworker's assessment"),
}
_CHANGE_LABELS = {
    "change_prev": ("ændring siden forrige måling", "change since the previous measurement"),
    "change_first": ("ændring siden første måling", "change since the first measurement"),
    "slope_3r": (
        f"hældning over de seneste {SLOPE_ROUNDS} målinger, pr. {SLOPE_DAYS} dage",
        f"slope over the last {SLOPE_ROUNDS} measurements, per {SLOPE_DAYS} days",
    ),
}
_GROUP_FEATURE_LABELS = {
    "active": ("i gang nu", "running now"),
    **{f"days_{w}": (f"dage de seneste {w} dage", f"days in the last {w} days") for w in WINDOWS_DAYS},
    "episodes": ("forløb indtil nu", "episodes so far"),
}
_OTHER_LABELS = {
    "rounds": ("Antal målinger indtil nu", "Measurements so far"),
    "days_since_enrolment": ("Dage siden indskrivning", "Days since enrolment"),
    "days_since_prev": ("Dage siden forrige måling", "Days since the previous measurement"),
    DAYS_SINCE_JOB: ("Dage siden seneste jobrettede indsats", "Days since the last job-oriented intervention"),
    PATTERN_COLUMN: KIND_LABELS["pattern"],
    "caseworker_job_orientation": ("Sagsbehandlerens jobfokus", "Caseworker's job orientation"),
    "caseworker_changed": (
        "Ny sagsbehandler siden forrige måling",
        "Caseworker changed since the previous measurement",
    ),
    "caseworker_changes": ("Antal sagsbehandlerskift indtil nu", "Caseworker changes so far"),
}


def _score_infos() -> list[FeatureInfo]:
    out = []
    for score in SCORE_COLUMNS:
        source, code = score.split("_", 1)
        item = indicator(code)
        da, en = f"{item.label_da} ({_SOURCE_LABELS[source][0]})", f"{item.label_en} ({_SOURCE_LABELS[source][1]})"
        out.append(FeatureInfo(score, code, "indicator", da, en, 1, "float"))
        for change in CHANGES:
            cda, cen = _CHANGE_LABELS[change]
            out.append(
                FeatureInfo(change_column(score, change), code, "indicator", f"{da}, {cda}", f"{en}, {cen}", 0, "float")
            )
    return out


def _intervention_infos() -> list[FeatureInfo]:
    out = []
    for group in GROUPS:
        gda, gen = GROUP_LABELS[group]
        for feature in GROUP_FEATURES:
            fda, fen = _GROUP_FEATURE_LABELS[feature]
            out.append(
                FeatureInfo(
                    group_column(group, feature),
                    group,
                    "intervention_group",
                    f"{gda}: {fda}",
                    f"{gen}: {fen}",
                    0,
                    "float",
                )
            )
    for item in INTERVENTIONS:
        en = item.label_en
        fda, fen = _GROUP_FEATURE_LABELS["episodes"]
        out.append(
            FeatureInfo(
                code_column(item.code),
                INTERVENTION_GROUP[item.code],
                "intervention_group",
                f"{item.label_da}: {fda}",
                f"{en}: {fen}",
                0,
                "float",
            )
        )
    pda, pen = _OTHER_LABELS[PATTERN_COLUMN]
    for pattern in PATTERNS:
        lda, len_ = PATTERN_LABELS[pattern]
        out.append(
            FeatureInfo(
                pattern_column(pattern), "pattern", "intervention_group", f"{pda}: {lda}", f"{pen}: {len_}", 0, "float"
            )
        )
    out.append(FeatureInfo(PATTERN_COLUMN, "pattern", "intervention_group", pda, pen, 0, "category"))
    out.append(FeatureInfo(DAYS_SINCE_JOB, "job", "intervention_group", *_OTHER_LABELS[DAYS_SINCE_JOB], 0, "float"))
    return out


def _all_infos() -> dict[str, FeatureInfo]:
    infos = _score_infos() + _intervention_infos()
    infos += [FeatureInfo(c, "history", "history", *_OTHER_LABELS[c], 0, "float") for c in HISTORY_COLUMNS]
    infos += [FeatureInfo(c, "caseworker", "caseworker", *_OTHER_LABELS[c], 0, "float") for c in CASEWORKER_FEATURES]
    infos += [FeatureInfo(c, c, "background", *BACKGROUND_LABELS[c], 0, "float") for c in BACKGROUND_NUMERIC]
    infos += [
        FeatureInfo(c, c, "background", *BACKGROUND_LABELS[c], 0, "category" if c in CATEGORY_LEVELS else "str")
        for c in BACKGROUND_CATEGORIES
    ]
    by_name = {i.name: i for i in infos}
    return {name: by_name[name] for name in FEATURE_COLUMNS}


def feature_catalogue(columns: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per feature column (all of FEATURE_COLUMNS when None): belongs_to, kind, labels, monotone.

    Raises KeyError naming any column that is not a feature of `build_features`.
    """
    infos = _all_infos()
    names = list(FEATURE_COLUMNS if columns is None else columns)
    unknown = [c for c in names if c not in infos]
    if unknown:
        raise KeyError(f"not feature columns of build_features: {', '.join(unknown)}")
    return pd.DataFrame([asdict(infos[c]) for c in names], columns=[f.name for f in fields(FeatureInfo)])


def feature_catalogue_markdown(columns: Sequence[str] | None = None) -> str:
    """The feature catalogue as a markdown page (docs/feature-catalogue.md is this, written out)."""
    table = feature_catalogue(columns)
    ids, labels = (", ".join(f"`{c}`" for c in names) for names in (ID_COLUMNS, LABEL_COLUMNS))
    lines = [
        "# Feature catalogue",
        "",
        "Generated by `python -m features.feature_catalogue docs/feature-catalogue.md` from",
        "`features/feature_catalogue.py`; do not edit by hand.",
        "",
        "One row per measurement, sorted by citizen, date and measurement id: the ids",
        f"({ids}), then the features below, then the labels",
        f"({labels}), which are never features.",
        "Numeric features are float64 (NaN = unknown); `category` ones are pandas Categoricals over the",
        "contract's values (the same categories for one citizen as for a register); `jobcentre` is a string.",
        "",
        "Point in time: a row uses only data dated on or before its measurement date t. An intervention",
        "episode covers the days from `started_on` to `ended_on` inclusive (empty `ended_on` = running);",
        "one that started after t does not exist, one running at t is active and counts up to t only.",
        "`days_W` counts the days of (t - W days, t] on which at least one episode of the group ran",
        f"(parallel episodes count once). The pattern looks at the last {PATTERN_WINDOW_DAYS} days.",
        "",
        "Missing answers stay NaN, and so does every change computed from one. `__change_prev` compares",
        "with the previous measurement and `__change_first` with the first (0 at the first when answered);",
        f"`__slope_3r` is the least-squares slope of the answered values of the last {SLOPE_ROUNDS} measurements",
        f"(this one included) against their dates, per {SLOPE_DAYS} days, NaN with fewer than two answers.",
        "",
        "Labels (horizon H months, default 12): `label` 1 if a job or education starts in (t, t + H months],",
        "0 if not and follow-up reaches t + H months, NaN (`censored`) otherwise, never 0.",
        "`time_to_event_days` runs from t to the event or, without one after t, to the end of follow-up;",
        "`event_observed` says which. `ipcw_weight` is 1 / G(min(time, H)-) for labelled rows and 0 for",
        "censored ones, G the Kaplan-Meier probability of remaining uncensored, estimated over the rows",
        "built together (so only meaningful for a training set).",
        "",
        "`belongs_to` groups columns for explanations: an indicator (cit_, cw_ and their changes), an",
        "intervention group, `pattern`, `history`, `caseworker` or the background item itself.",
        "`monotone` +1: a higher value should never lower the predicted chance (the score levels).",
        "",
        "| column | kind | belongs to | monotone | type | dansk | English |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples(index=False):
        cells = (f"`{row.name}`", row.kind, row.belongs_to, f"{row.monotone:+d}", row.dtype, row.label_da, row.label_en)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_feature_catalogue(path: Path) -> Path:
    """Write the markdown feature catalogue to `path` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(feature_catalogue_markdown(), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write_feature_catalogue(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/feature-catalogue.md")))
