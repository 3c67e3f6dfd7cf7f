"""Chart layouts of the caseworker page: the SVG geometry is computed here, in Python, and drawn by
templates/charts.html; every chart has a table of the same numbers beside it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from features.catalogue import GROUP_LABELS, INDICATORS, INTERVENTION_GROUP, INTERVENTIONS, SCORE_MAX, SCORE_MIN
from serving.page.text import label, pick
from serving.schemas import CitizenHistory, Explanation, Factor

INTERVENTION_BY_CODE = {i.code: i for i in INTERVENTIONS}


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


WATERFALL_FACTORS = 8  # the largest factors get a step each; the rest one step together


@dataclass(frozen=True)
class Step:
    key: str  # a factor's key; "base", "others" or "result"
    label: str
    change: float  # probability points (0-1 scale); for base and result the level itself
    before: float
    after: float
    x: float
    width: float
    y: float
    direction: str  # raises, lowers, or level


@dataclass(frozen=True)
class Waterfall:
    steps: list[Step]
    width: int
    height: int
    label_width: int
    row: int
    ticks: list[tuple[float, str]]  # x, label


def waterfall_steps(explanation: Explanation, lang: str, labels: dict[str, str]) -> list[tuple[str, str, float]]:
    """(key, label, probability change) from the average citizen's chance to this citizen's, one step per
    large factor and one for the rest, in the explanation's order: the changes add up to the difference."""
    factors = explanation.factors
    shown = [(f.key, label(f, lang), f.probability_change) for f in factors[:WATERFALL_FACTORS]]
    rest = factors[WATERFALL_FACTORS:]
    if rest:
        shown.append(("others", labels["others"], float(sum(f.probability_change for f in rest))))
    return shown


def waterfall_chart(explanation: Explanation, lang: str, labels: dict[str, str]) -> Waterfall:
    """Floating bars in percentage points: the average chance, each step, this citizen's chance."""
    plot, row, top = 420, 28, 28
    steps = waterfall_steps(explanation, lang, labels)
    levels = [explanation.base_probability]
    for _, _, change in steps:
        levels.append(levels[-1] + change)
    high = max([*levels, explanation.probability, 0.01])
    scale = (plot - 60) / high
    label_width = max(240, label_room([text for _, text, _ in steps] + [labels["base"], labels["result"]]))
    rows = [("base", labels["base"], explanation.base_probability, 0.0, explanation.base_probability, "level")]
    rows += [
        (key, text, change, before, after, "raises" if change >= 0 else "lowers")
        for (key, text, change), before, after in zip(steps, levels[:-1], levels[1:], strict=True)
    ]
    rows.append(("result", labels["result"], explanation.probability, 0.0, explanation.probability, "level"))
    drawn = [
        Step(
            key,
            text,
            change,
            before,
            after,
            x=label_width + min(before, after) * scale,
            width=max(abs(after - before) * scale, 1.0),
            y=top + k * row,
            direction=direction,
        )
        for k, (key, text, change, before, after, direction) in enumerate(rows)
    ]
    step = 0.05 if high <= 0.3 else 0.1
    ticks = [(label_width + v * scale, f"{round(100 * v)}") for v in _range(0.0, high, step)]
    return Waterfall(drawn, label_width + plot, top + len(drawn) * row + 8, label_width, row, ticks)


def _range(start: float, stop: float, step: float) -> list[float]:
    count = int(stop / step + 1e-9) + 1
    return [start + k * step for k in range(count)]


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
                group_label=pick(GROUP_LABELS[group], lang),
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
