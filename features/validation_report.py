"""A validation report for the people who fix exports: every problem of a dataset folder, grouped by rule.

`bip validate DIR --report FILE.json|FILE.html` (and `bip ingest --report`) writes it. The terminal
shows the first problems only; the report lists every problem found (up to `REPORT_MAX_PROBLEMS`,
with the true total beside them), and groups them by table, column and rule with the count of each
and a few examples, so that a job centre's IT department can fix its extract rule by rule.

Messages are the contract's own: a value in a column that describes a citizen is never shown
("the value"), so the report may be passed on like the data's documentation, not like the data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bip.errors import UserError
from features.contract import DEFAULT_MAX_BYTES, ContractError, checked_folder
from features.contract_problems import SHOWN_PROBLEMS, Hits, Problem, merged
from features.contract_rules import coverage_warnings
from features.dataset import TABLES, Dataset, canonical

REPORT_MAX_PROBLEMS = 100_000
EXAMPLES = 5
REPORT_FORMATS: tuple[str, ...] = (".json", ".html")
# The value a message starts with: "the value", a quoted text, a number or a date.
_LEADING_VALUE = re.compile(r"^(?:the value|'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|-?[\d.:-]+)\s+")


@dataclass(frozen=True)
class RuleGroup:
    """The problems of one rule in one column: how many in all, and the first few."""

    table: str
    column: str | None
    rule: str
    count: int
    examples: list[Problem]


@dataclass
class ValidationReport:
    """Everything found in a dataset folder: the problems (by rule and one by one) and the warnings."""

    folder: str
    strict: bool
    total: int
    groups: list[RuleGroup]
    problems: list[Problem]
    warnings: list[str]
    sources: dict[str, str]
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def valid(self) -> bool:
        return self.total == 0

    def error(self) -> ContractError:
        """The error the command line raises for an invalid dataset (its first problems)."""
        return ContractError(self.problems[:SHOWN_PROBLEMS], self.total, self.sources)

    def location(self, problem: Problem) -> str:
        """Where a problem is, as the terminal says it (the error's own wording, on these sources)."""
        return ContractError.location(self, problem)  # type: ignore[arg-type]  # it reads `sources` only

    def as_json(self) -> dict[str, Any]:
        def problem(p: Problem) -> dict[str, Any]:
            where = {"table": p.table, "file": self.sources.get(p.table), "row": p.row, "column": p.column}
            return {**where, "message": p.message}

        return {
            "folder": self.folder,
            "created": self.created,
            "strict": self.strict,
            "valid": self.valid,
            "total_problems": self.total,
            "listed_problems": len(self.problems),
            "rules": [
                {
                    "table": g.table,
                    "file": self.sources.get(g.table),
                    "column": g.column,
                    "rule": g.rule,
                    "count": g.count,
                    "examples": [problem(p) for p in g.examples],
                }
                for g in self.groups
            ],
            "problems": [problem(p) for p in self.problems],
            "warnings": self.warnings,
        }


def rule_of(message: str) -> str:
    """A problem's message without the value it starts with: the rule, the same for every cell it hits."""
    return _LEADING_VALUE.sub("a value ", message, count=1)


def rule_groups(hits: list[Hits], examples: int = EXAMPLES) -> list[RuleGroup]:
    """One group per (table, column, rule), in table order, with the full count of each rule's hits."""
    counts: dict[tuple[str, str | None, str], int] = {}
    shown: dict[tuple[str, str | None, str], list[Problem]] = {}
    for hit in hits:
        if not hit.problems:
            continue
        places = {(p.table, p.column) for p in hit.problems}
        for problem in hit.problems:
            key = (problem.table, problem.column, rule_of(problem.message))
            shown.setdefault(key, [])
            if len(shown[key]) < examples:
                shown[key].append(problem)
        if len(places) == 1:  # one rule on one column: its count includes the problems not kept
            key = (hit.problems[0].table, hit.problems[0].column, rule_of(hit.problems[0].message))
            counts[key] = counts.get(key, 0) + hit.count
        else:
            for problem in hit.problems:
                key = (problem.table, problem.column, rule_of(problem.message))
                counts[key] = counts.get(key, 0) + 1
    keys = sorted(shown, key=lambda k: (TABLES.index(k[0]), k[1] or "", -counts.get(k, 0)))
    return [RuleGroup(*key, max(counts.get(key, 0), len(shown[key])), shown[key]) for key in keys]


def validation_report(
    folder: Path,
    strict: bool = False,
    max_problems: int = REPORT_MAX_PROBLEMS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[ValidationReport, Dataset | None]:
    """Check a dataset folder and report every problem; the Dataset too when it is valid."""
    checked = checked_folder(Path(folder), max_problems, max_bytes, strict)
    problems, total = merged(checked.hits, max_problems)
    dataset, warnings = None, list(checked.warnings)
    if not problems:
        dataset = Dataset(**{table: canonical(table, checked.typed.pop(table)) for table in TABLES})
        warnings += coverage_warnings(dataset)
    report = ValidationReport(
        str(folder), strict, total, rule_groups(checked.hits), problems, warnings, dict(checked.sources)
    )
    return report, dataset


def checked_report_path(path: Path) -> Path:
    """`path` when it names a report format; else a UserError saying what to write."""
    path = Path(path)
    if path.suffix.lower() not in REPORT_FORMATS:
        raise UserError(f"--report {path}: name a .json or .html file, e.g. report.html")
    return path


def write_report(report: ValidationReport, path: Path) -> Path:
    """The report as JSON or as one self-contained HTML page, by the file's suffix."""
    path = checked_report_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(report.as_json(), indent=1, ensure_ascii=False), encoding="utf-8")
    else:
        path.write_text(report_html(report), encoding="utf-8")
    return path


def report_html(report: ValidationReport) -> str:
    from jinja2 import Environment

    environment = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return environment.from_string(HTML).render(report=report)


HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Validation report: {{ report.folder }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 70rem; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #bbb; padding: .25rem .5rem; text-align: left; vertical-align: top; }
td.num { text-align: right; }
.valid { color: #0a5d1a; } .invalid { color: #9b1c1c; }
</style>
</head>
<body>
<h1>Validation report</h1>
<p>Folder <code>{{ report.folder }}</code>, checked {{ report.created }}{% if report.strict %} (strict){% endif %}.</p>
{% if report.valid %}
<p class="valid">The dataset meets the data contract.</p>
{% else %}
<p class="invalid">The dataset breaks the data contract: {{ report.total }} problem{{ "s" if report.total != 1 }}
in {{ report.groups | length }} rule{{ "s" if report.groups | length != 1 }}. Nothing was stored.</p>
{% endif %}
{% if report.groups %}
<h2>Problems by rule</h2>
<table>
<thead><tr><th>file</th><th>column</th><th>rule</th><th>count</th><th>examples</th></tr></thead>
<tbody>
{% for g in report.groups %}
<tr><td>{{ report.sources.get(g.table, g.table) }}</td><td>{{ g.column or "" }}</td><td>{{ g.rule }}</td>
<td class="num">{{ g.count }}</td>
<td><ul>{% for p in g.examples %}
<li>{{ "row %d: " % p.row if p.row is not none }}{{ p.message }}</li>
{% endfor %}</ul></td></tr>
{% endfor %}
</tbody>
</table>
<h2>Every problem</h2>
<p>{{ report.problems | length }} of {{ report.total }} listed, in file, row and column order.</p>
<table>
<thead><tr><th>where</th><th>problem</th></tr></thead>
<tbody>
{% for p in report.problems %}
<tr><td>{{ report.location(p) }}</td><td>{{ p.message }}</td></tr>
{% endfor %}
</tbody>
</table>
{% endif %}
{% if report.warnings %}
<h2>Warnings</h2>
<ul>{% for w in report.warnings %}<li>{{ w }}</li>{% endfor %}</ul>
{% endif %}
</body>
</html>
"""
