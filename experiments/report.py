"""Run the six research analyses, log each as an MLflow run, and render them into one HTML report.

`build_report` is what `bip report` calls: analyses (experiments.analyses and friends) → one child
run per analysis under a "research-report" run (params, metrics, tables as CSV, plots as PNG,
findings as markdown) → `report.html` in the output folder, with every plot embedded (base64) and
every table and plot also written beside it as files.
"""

from __future__ import annotations

import base64
import io
import json
import math
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from bip.progress import QUIET, Progress, step
from experiments.analyses import (
    Analysis,
    ResearchConfig,
    ResearchData,
    caseworker_practice_analysis,
    fit_hazard_models,
    indicator_analysis,
    practice_spec,
    research_data,
)
from experiments.caseworker_effects import caseworker_effect_analysis
from experiments.learning_curve import learning_curve_analysis
from experiments.model_comparison import model_comparison_analysis
from experiments.progression import progression_analysis
from features.dataset import Dataset
from training.registry import shown_uri

TEMPLATES = Path(__file__).parent / "templates"
REPORT_FILE = "report.html"
DEFAULT_EXPERIMENT = "bip-research"
# Tables longer than this are folded away (<details>) in the HTML; the CSV always has every row.
FOLDED_ROWS = 25
_PARAM_LENGTH = 500


@dataclass(frozen=True)
class Importance:
    """SHAP importance per indicator and where it comes from (None when there is no model)."""

    values: pd.Series | None
    source: str


def champion_importance(settings: Any, features: pd.DataFrame) -> Importance | None:
    """Mean |SHAP contribution| per indicator of the registered champion on `features`, or None
    when the registry holds no champion."""
    from bip.errors import UserError
    from training.evaluation import importance_by_indicator
    from training.model import load_champion

    try:
        model, version = load_champion(settings)
    except UserError:
        return None
    contributions = model.contributions(model.matrix(features))[:, :-1]
    belongs_to = dict(zip(model.catalogue["name"], model.catalogue["belongs_to"], strict=True))
    values = importance_by_indicator(contributions, list(model.feature_names), belongs_to)
    return Importance(values, f"the registered champion {settings.model_name} version {version.version}")


def run_analyses(
    data: ResearchData,
    config: ResearchConfig,
    importance: Importance | None = None,
    progress: Progress = QUIET,
    truth: pd.DataFrame | None = None,
) -> list[Analysis]:
    """The six analyses in report order. Without `importance` (a champion's SHAP importance),
    analysis 1 uses the monotone XGBoost that analysis 5 fits. `progress` counts the analyses and the
    hazard models they share. `truth` (the simulator's true probabilities) is for evaluation only:
    analyses 5 and 6 compare the predictions with it."""
    with progress.task("report: analyses", total=7) as task:
        comparison = model_comparison_analysis(data.dataset, config, truth)
        task.advance()
        curve = learning_curve_of(data, config, truth)
        task.advance()
        if importance is None:
            importance = Importance(comparison.importance, comparison.importance_source)
        models = fit_hazard_models(data, practice_spec(config), nodes=config.quadrature_nodes)
        task.advance()
        analyses = []
        for analysis in (
            lambda: indicator_analysis(data, models, config, importance.values, importance.source),
            lambda: caseworker_practice_analysis(data, models, config),
            lambda: progression_analysis(data, config),
            lambda: caseworker_effect_analysis(data, models, config),
        ):
            analyses.append(analysis())
            task.advance()
    return [*analyses, comparison.analysis, curve]


def learning_curve_of(data: ResearchData, config: ResearchConfig, truth: pd.DataFrame | None) -> Analysis:
    """Analysis 6, the learning curve, on the research data's feature rows (training's censoring weights)."""
    from experiments.model_comparison import train_config
    from training.data import with_weights
    from training.evaluation import truth_of

    tc = train_config(config)
    features = with_weights(data.features, tc.horizon_months, tc.weighting)
    return learning_curve_analysis(features, truth_of(features, truth), tc)


# --- files ------------------------------------------------------------------------------------------


def png_bytes(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def write_files(analysis: Analysis, folder: Path) -> list[Path]:
    """Every table (CSV), plot (PNG) and the findings (markdown) of one analysis, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in analysis.tables:
        path = folder / f"{table.name}.csv"
        table.frame.to_csv(path, index=False)
        paths.append(path)
    for plot in analysis.plots:
        path = folder / f"{plot.name}.png"
        path.write_bytes(png_bytes(plot.figure))
        paths.append(path)
    findings = folder / "findings.md"
    findings.write_text(
        f"# {analysis.title}\n\n{analysis.question}\n\n{analysis.method}\n\n"
        + "\n".join(f"- {line}" for line in analysis.findings)
        + "\n",
        encoding="utf-8",
    )
    return [*paths, findings]


# --- MLflow -----------------------------------------------------------------------------------------


def loggable_params(params: dict[str, Any]) -> dict[str, str]:
    return {k: str(v)[:_PARAM_LENGTH] for k, v in params.items()}


def loggable_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def log_analyses(
    analyses: list[Analysis], tracking_uri: str, artifact_root: Path, experiment: str, run_params: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    """One "research-report" run with a child run per analysis (params, metrics, tables, plots,
    findings); returns the parent run id and each analysis's run id."""
    from training.tracking import experiment_id, started_run, tracking_client

    client = tracking_client(tracking_uri)
    runs: dict[str, str] = {}
    experiment_key = experiment_id(experiment, artifact_root, tracking_uri)
    with (
        tempfile.TemporaryDirectory() as tmp,
        started_run(client, experiment_key, "research-report") as parent,
    ):
        parent.params(loggable_params(run_params))
        for analysis in analyses:
            with started_run(client, experiment_key, analysis.key, parent=parent) as child:
                child.tags({"analysis": analysis.key, "title": analysis.title})
                child.params(loggable_params(analysis.params))
                child.metrics(loggable_metrics(analysis.metrics))
                folder = Path(tmp) / analysis.key
                write_files(analysis, folder)
                child.artifacts(folder)
                runs[analysis.key] = child.run_id
        return parent.run_id, runs


def log_report(run_id: str, tracking_uri: str, path: Path) -> None:
    """Attach the rendered report to the parent run."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).log_artifact(run_id, str(path))


# --- HTML -------------------------------------------------------------------------------------------


def number(value: Any) -> str:
    """A table cell: integers as they are, other numbers with 3 significant decimals, NaN empty."""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table_html(frame: pd.DataFrame) -> Markup:
    html = frame.to_html(
        index=False, na_rep="", border=0, classes="data", formatters={c: number for c in frame.columns}
    )
    return Markup(html)


def render_html(analyses: list[Analysis], meta: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (plots embedded as base64 PNG)."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    sections = [
        {
            "key": a.key,
            "title": a.title,
            "question": a.question,
            "method": a.method,
            "findings": a.findings,
            "tables": [
                {
                    "name": t.name,
                    "caption": t.caption,
                    "html": table_html(t.frame),
                    "folded": len(t.frame) > FOLDED_ROWS,
                    "rows": len(t.frame),
                }
                for t in a.tables
            ],
            "plots": [
                {
                    "name": p.name,
                    "caption": p.caption,
                    "src": "data:image/png;base64," + base64.b64encode(png_bytes(p.figure)).decode("ascii"),
                }
                for p in a.plots
            ],
            "run_id": meta.get("runs", {}).get(a.key, ""),
        }
        for a in analyses
    ]
    return env.get_template("report.html.j2").render(sections=sections, meta=meta)


def dataset_summary(dataset: Dataset) -> dict[str, Any]:
    m = dataset.measurements
    return {
        "citizens": len(dataset.citizens),
        "measurements": len(m),
        "caseworkers": len(dataset.caseworkers),
        "first_measured_on": str(pd.Timestamp(m["measured_on"].min()).date()) if len(m) else "",
        "last_measured_on": str(pd.Timestamp(m["measured_on"].max()).date()) if len(m) else "",
    }


def build_report(
    dataset: Dataset,
    out: Path,
    settings: Any,
    experiment: str = DEFAULT_EXPERIMENT,
    config: ResearchConfig | None = None,
    source: str = "",
    progress: Progress = QUIET,
    truth: pd.DataFrame | None = None,
) -> Path:
    """Run the analyses, log them to MLflow (the settings' tracking store) and write
    `out/report.html` with every table and plot, plus each analysis's files in `out/<analysis>/`."""
    config = config or ResearchConfig(horizon_months=settings.horizon_months)
    with step(progress, "report: research data"):
        data = research_data(dataset, config.horizon_months)
    analyses = run_analyses(data, config, champion_importance(settings, data.features), progress, truth)
    out = Path(out)
    for analysis in analyses:
        write_files(analysis, out / analysis.key)
    summary = dataset_summary(dataset)
    run_params = {
        "source": source,
        **summary,
        "config": json.dumps({k: v for k, v in vars(config).items() if k != "train"}, default=str),
    }
    settings.home.mkdir(parents=True, exist_ok=True)
    parent, runs = log_analyses(analyses, settings.tracking_uri, settings.artifact_root, experiment, run_params)
    meta = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "source": source or "the measurement store",
        "dataset": summary,
        "experiment": experiment,
        "tracking_uri": shown_uri(settings.tracking_uri),  # the report is logged: no password in it
        "parent_run": parent,
        "runs": runs,
        "config": config,
    }
    path = out / REPORT_FILE
    path.write_text(render_html(analyses, meta), encoding="utf-8")
    log_report(parent, settings.tracking_uri, path)
    return path
