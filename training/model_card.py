"""The model card of a registered version: what the model is for, what it learnt from, how good and how
fair it is, and how a citizen contests a score — the technical documentation a high-risk AI system needs.

`bip train` and `bip retrain` write one for every version they register (`log_model_card`): the facts
(`card_facts`, JSON-ready) are rendered as Markdown and HTML (templates in training/templates) and
logged, with a reliability plot as SVG, under `model_card/` of the run that logged the model; the
version's tag `model_card` points at them. Everything in it is an aggregate of the validation the
run already did (its metrics with bootstrap intervals, its fairness table, its out-of-time
predictions), never a row: no citizen's id, answer or date goes into a card.

The service shows it on /caseworker/model: `served_card_html` reads the facts back from the version's
run (once per version) and renders them with the same template, escaped, so that nothing written into
the artifact store can put markup into the page.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from training import evaluation
from training.data import labelled_rows

if TYPE_CHECKING:
    from training.config import TrainConfig
    from training.tracking import RunLog
    from training.train import FamilyResult
    from training.validation import Split

CARD_FOLDER = "model_card"
CARD_TAG = "model_card"
FACTS_FILE = "model_card.json"
TEMPLATES = Path(__file__).resolve().parent / "templates"
METRIC_LABELS: dict[str, str] = {
    "roc_auc": "ROC AUC (higher is better)",
    "pr_auc": "PR AUC (higher is better)",
    "brier": "Brier score (lower is better)",
    "log_loss": "log loss (lower is better)",
    "ece": "expected calibration error (lower is better)",
}
SPLIT_LABELS: dict[str, str] = {
    "cv": "grouped cross-validation, training period (out of fold)",
    "oot": "out of time, after the training period",
    "window": "retraining window: outcomes new since the previous champion's data",
}
FAIRNESS_COLUMNS: tuple[str, ...] = ("gender", "origin", "age_band", "jobcentre", "education")
PLOT = 240  # the reliability plot's side, in SVG units


def _number(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def metric_rows(metrics: Mapping[str, float], prefixes: tuple[str, ...] = ("cv", "oot")) -> list[dict[str, Any]]:
    """Each metric of each split with its 95 % bootstrap interval over citizens, as training logged it."""
    rows = []
    for prefix in prefixes:
        for name in evaluation.METRICS:
            key = f"{prefix}_{name}"
            if key in metrics:
                rows.append(
                    {
                        "split": SPLIT_LABELS.get(prefix, prefix),
                        "metric": METRIC_LABELS[name],
                        "estimate": _number(metrics[key]),
                        "low": _number(metrics.get(f"{key}_low")),
                        "high": _number(metrics.get(f"{key}_high")),
                    }
                )
    return rows


def jobcentre_fairness(frame: pd.DataFrame, probability: np.ndarray, config: TrainConfig) -> pd.DataFrame:
    """The fairness table by job centre, on the same out-of-fold predictions, threshold and rule as
    `evaluation.evaluation_metrics`' table by gender, origin, age band and education."""
    labelled = labelled_rows(frame)
    if "jobcentre" not in frame.columns or not labelled.any():
        return pd.DataFrame()
    p = probability[labelled]
    threshold = evaluation.threshold_for_top_share(p, config.fairness_top_share)
    table, _ = evaluation.fairness_table(
        frame["label"].to_numpy(float)[labelled],
        p,
        frame["ipcw_weight"].to_numpy(float)[labelled],
        frame.loc[labelled, ["jobcentre"]].reset_index(drop=True),
        threshold,
        citizens=frame["citizen_id"].to_numpy()[labelled],
    )
    return table


def fairness_rows(tables: list[pd.DataFrame]) -> list[dict[str, Any]]:
    """The fairness tables as rows, grouped by column in FAIRNESS_COLUMNS order."""
    frames = [t for t in tables if len(t)]
    if not frames:
        return []
    table = pd.concat(frames, ignore_index=True)
    order = {column: i for i, column in enumerate(FAIRNESS_COLUMNS)}
    table = table.assign(_order=table["column"].map(order).fillna(len(order))).sort_values(["_order", "group"])
    return [
        {
            "column": str(row["column"]),
            "group": str(row["group"]),
            "n": int(row["n"]),
            **{key: _number(row[key]) for key in ("roc_auc", "ece", "mean_predicted", "observed_rate")},
            "false_negative_rate": _number(row["false_negative_rate"]),
        }
        for _, row in table.iterrows()
    ]


def reliability_rows(frame: pd.DataFrame, probability: np.ndarray) -> list[dict[str, Any]]:
    """The reliability table of the out-of-time predictions: per bin, mean prediction and observed rate."""
    rows = labelled_rows(frame)
    if not rows.any():
        return []
    table = evaluation.reliability_table(
        frame["label"].to_numpy(float)[rows], probability[rows], frame["ipcw_weight"].to_numpy(float)[rows]
    )
    return [
        {
            "mean_predicted": _number(r.mean_predicted),
            "observed_rate": _number(r.observed_rate),
            "n": int(r.n),
        }
        for r in table.itertuples()
    ]


def monotone_rows(catalogue: pd.DataFrame) -> list[dict[str, Any]]:
    """The features whose effect is constrained: a higher value never lowers (+1) or raises (-1) the chance."""
    constrained = catalogue[catalogue["monotone"].astype(int) != 0]
    return [
        {
            "feature": str(r.name),
            "label_en": str(r.label_en),
            "label_da": str(r.label_da),
            "direction": "never lowers the chance" if int(r.monotone) > 0 else "never raises the chance",
        }
        for r in constrained.itertuples(index=False)
    ]


def card_facts(
    *,
    model_name: str,
    version: int,
    made_by: str,
    run_id: str,
    result: FamilyResult,
    split: Split,
    config: TrainConfig,
    data_print: Mapping[str, Any],
    extra_metrics: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Everything the card says, as JSON-ready aggregates of what the run computed (`made_by`: "train"
    or "retrain"; `data_print`: the fingerprint of the data the registered model was refitted on;
    `extra_metrics`: a retrain's `window_*` metrics)."""
    fairness = [result.tables.get("fairness_cv", pd.DataFrame())]
    fairness.append(jobcentre_fairness(split.period, result.cv_probability, config))
    return {
        "model_name": model_name,
        "version": int(version),
        "family": result.name,
        "made_by": made_by,
        "run_id": run_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "horizon_months": config.horizon_months,
        "data": {str(k): v for k, v in data_print.items()},
        "out_of_time_cutoff": str(split.cutoff.date()),
        "training_period_rows": len(split.period),
        "out_of_time_rows": len(split.test),
        "folds": config.folds,
        "bootstrap_replicates": config.n_boot,
        "fairness_top_share": config.fairness_top_share,
        "chosen_params": {str(k): v for k, v in result.params.items()},
        "calibration": [float(v) for v in result.calibration],
        "metrics": metric_rows(result.metrics) + metric_rows(extra_metrics or {}, ("window",)),
        "reliability": reliability_rows(split.test, result.oot_probability),
        "fairness": fairness_rows(fairness),
        "monotone": monotone_rows(split.encoding.catalogue),
    }


# --- rendering ------------------------------------------------------------------------------------


def reliability_svg(rows: list[dict[str, Any]]) -> str:
    """The reliability plot as an SVG: observed rate against mean prediction per bin, and the diagonal.
    Presentation attributes only (no style), so the page's content security policy lets it through."""
    size, pad = PLOT, 32

    def x(p: float) -> float:
        return round(pad + p * (size - 2 * pad), 1)

    def y(p: float) -> float:
        return round(size - pad - p * (size - 2 * pad), 1)

    points = [
        (r["mean_predicted"], r["observed_rate"]) for r in rows if None not in (r["mean_predicted"], r["observed_rate"])
    ]
    path = " ".join(f"{'M' if i == 0 else 'L'}{x(p)},{y(o)}" for i, (p, o) in enumerate(points))
    dots = "".join(f'<circle cx="{x(p)}" cy="{y(o)}" r="3" fill="#1f5fa8"/>' for p, o in points)
    ticks = "".join(
        f'<text x="{x(t)}" y="{size - pad + 14}" font-size="10" text-anchor="middle">{t:g}</text>'
        f'<text x="{pad - 6}" y="{y(t) + 3}" font-size="10" text-anchor="end">{t:g}</text>'
        for t in (0, 0.5, 1)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" width="{size}" height="{size}" '
        'role="img" aria-labelledby="reliability-title">'
        '<title id="reliability-title">Reliability: observed rate against predicted chance, out of time</title>'
        f'<rect x="{pad}" y="{pad}" width="{size - 2 * pad}" height="{size - 2 * pad}" fill="none" stroke="#999"/>'
        f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="#999" stroke-dasharray="4 3"/>'
        f'<path d="{path}" fill="none" stroke="#1f5fa8" stroke-width="2"/>{dots}{ticks}'
        f'<text x="{size / 2}" y="{size - 4}" font-size="10" text-anchor="middle">predicted chance</text>'
        f'<text x="10" y="{size / 2}" font-size="10" text-anchor="middle" transform="rotate(-90 10 {size / 2})">'
        "observed rate</text></svg>"
    )


def _environment(autoescape: bool):
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["num"] = lambda v, digits=3: "–" if v is None else f"{v:.{digits}f}"
    environment.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.1f} %"
    return environment


def card_markdown(facts: Mapping[str, Any]) -> str:
    return _environment(autoescape=False).get_template("model_card.md.j2").render(card=facts)


def card_fragment(facts: Mapping[str, Any]) -> str:
    """The card as an HTML fragment (an <article>), every value escaped: for the standalone page and
    the caseworker page alike."""
    from markupsafe import Markup

    plot = Markup(reliability_svg(facts.get("reliability", [])))
    return _environment(autoescape=True).get_template("model_card.html.j2").render(card=facts, plot=plot)


def card_html(facts: Mapping[str, Any]) -> str:
    """The card as one self-contained HTML document."""
    title = f"Model card: {facts['model_name']} version {facts['version']}"
    from markupsafe import escape

    return (
        f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        "<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}"
        "table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid #bbb;padding:.2rem .5rem}"
        "td.num{text-align:right}</style>\n</head>\n<body>\n"
        f"{card_fragment(facts)}\n</body>\n</html>\n"
    )


def write_card(facts: Mapping[str, Any], folder: Path) -> Path:
    """model_card.md, model_card.html, model_card.json and reliability.svg in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FACTS_FILE).write_text(json.dumps(facts, indent=1, ensure_ascii=False), encoding="utf-8")
    (folder / "model_card.md").write_text(card_markdown(facts), encoding="utf-8")
    (folder / "model_card.html").write_text(card_html(facts), encoding="utf-8")
    (folder / "reliability.svg").write_text(reliability_svg(facts.get("reliability", [])), encoding="utf-8")
    return folder


def log_model_card(run: RunLog, facts: Mapping[str, Any], tracking_uri: str) -> str:
    """Write the card into the artifacts of `run` (the run that logged the model) under model_card/ and
    tag the registered version with where it is; that location (runs:/RUN/model_card)."""
    from training import registry

    with tempfile.TemporaryDirectory() as tmp:
        run.artifacts(write_card(facts, Path(tmp) / CARD_FOLDER), CARD_FOLDER)
    where = f"runs:/{run.run_id}/{CARD_FOLDER}"
    registry.client(tracking_uri).set_model_version_tag(facts["model_name"], str(facts["version"]), CARD_TAG, where)
    return where


# --- reading it back (the service) -----------------------------------------------------------------


_SERVED_CARDS: dict[tuple[str, str, str], dict[str, Any]] = {}


def served_card_facts(tracking_uri: str, model_name: str, version: str) -> dict[str, Any] | None:
    """The card facts of a registered version, read from its run once (a card does not change); None
    for a version without a card yet, asked again next time (the alias can move before the card is
    logged), or one registered before cards existed."""
    from training import registry

    key = (tracking_uri, model_name, str(version))
    if key in _SERVED_CARDS:
        return _SERVED_CARDS[key]
    client = registry.client(tracking_uri)
    where = client.get_model_version(model_name, str(version)).tags.get(CARD_TAG)
    if not where or not where.startswith("runs:/"):
        return None
    run_id, _, folder = where.removeprefix("runs:/").partition("/")
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, f"{folder}/{FACTS_FILE}", tmp)
        facts = json.loads(Path(local).read_text(encoding="utf-8"))
    if len(_SERVED_CARDS) >= 16:  # a few versions at most are served in a process's life
        _SERVED_CARDS.clear()
    _SERVED_CARDS[key] = facts
    return facts


def served_card_html(tracking_uri: str | None, model_name: str, version: str) -> str | None:
    """The card of a served version as an HTML fragment, or None when there is none to show (no registry,
    no card, or the registry not answering: the model page still shows what the model carries)."""
    if tracking_uri is None:
        return None
    from mlflow.exceptions import MlflowException

    try:
        facts = served_card_facts(tracking_uri, model_name, str(version))
    except (MlflowException, OSError, ValueError):
        return None
    return None if facts is None else card_fragment(facts)
