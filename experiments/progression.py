"""BIP's third question: which patterns of interventions citizens follow, and how their indicators
change after each pattern (`progression_analysis`), with the share who stand still or go back."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from experiments.analyses import (
    BIP_REFERENCE,
    INDICATOR_SCORES,
    Analysis,
    Plot,
    ResearchConfig,
    ResearchData,
    Table,
    cluster_means,
    figure,
    interval_text,
    wrapped,
)
from experiments.person_rounds import CONSECUTIVE_ROUNDS, caseworker_ids, z_value
from features.catalogue import PATTERN_LABELS, PATTERNS, SCORE_COLUMNS
from features.dataset import Dataset


def mean_indicator_change(features: pd.DataFrame, window_days: int) -> pd.DataFrame:
    """Rows with a previous measurement one round back: their measurement id, the change of the mean
    indicator answer (all citizen and caseworker answers but belief) and the pattern of the last 3
    months then."""
    change = features[[f"{c}__change_prev" for c in INDICATOR_SCORES]].mean(axis=1)
    consecutive = features["days_since_prev"].astype(float) <= CONSECUTIVE_ROUNDS * window_days
    keep = consecutive & change.notna()
    return pd.DataFrame(
        {
            "measurement_id": features.loc[keep, "measurement_id"].to_numpy(),
            "pattern_3m": features.loc[keep, "pattern_3m"].astype(str).to_numpy(),
            "change": change[keep].to_numpy(),
        }
    )


def still_or_back_share(dataset: Dataset) -> float:
    """Share of citizens (with two or more rounds) whose mean indicator score did not rise first to last."""
    m = dataset.measurements.sort_values(["citizen_id", "measured_on"])
    mean = m[list(SCORE_COLUMNS)].astype("Float64").mean(axis=1).astype(float)
    per = mean.groupby(m["citizen_id"]).agg(["first", "last", "count"])
    per = per[per["count"] >= 2]
    return float((per["last"] - per["first"] <= 0).mean())


def still_or_back_interval(dataset: Dataset, level: float) -> tuple[float, float, float, int]:
    """Share of citizens (two or more rounds) whose mean score did not rise from first to last
    round, with a Wilson interval, and the number of such citizens."""
    share = still_or_back_share(dataset)
    n = int((dataset.measurements.groupby("citizen_id").size() >= 2).sum())
    z = z_value(level)
    centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return share, centre - half, centre + half, n


def progression_plot(shares: pd.DataFrame, changes: pd.DataFrame, level: float) -> Figure:
    fig = figure(11, 4.2)
    left, right = fig.subplots(1, 2)
    labels = [wrapped(PATTERN_LABELS[p][1]) for p in PATTERNS]
    at = np.arange(len(PATTERNS))
    s = shares.set_index("category").reindex(list(PATTERNS))
    left.bar(at - 0.2, 100 * s["mean"], width=0.4, yerr=100 * (s["high"] - s["mean"]), capsize=3, label="estimate")
    left.bar(
        at + 0.2,
        [BIP_REFERENCE[f"pattern_{p}_share_pct"] for p in PATTERNS],
        width=0.4,
        color="tab:red",
        alpha=0.6,
        label="BIP",
    )
    left.set_xticks(at, labels)
    left.set(ylabel="% of measurements", title="Pattern of the last 3 months")
    left.legend()
    c = changes.set_index("category").reindex(list(PATTERNS))
    right.bar(at, c["mean"], yerr=[c["mean"] - c["low"], c["high"] - c["mean"]], capsize=4, color="tab:green")
    right.axhline(0.0, color="grey", linewidth=1)
    right.set_xticks(at, labels)
    right.set(
        ylabel="change of the mean answer (1-5) per round",
        title=f"Progression after each pattern ({level:.0%} interval)",
    )
    return fig


def progression_analysis(data: ResearchData, config: ResearchConfig) -> Analysis:
    """Analysis 3: the four patterns, the indicator change after each, and who stands still."""
    f = data.features
    # Caseworkers shape both which interventions their citizens get and how they progress: the
    # intervals are cluster-robust by the caseworker at the (later) measurement.
    caseworker = caseworker_ids(data.dataset, f["measurement_id"])
    shares = pd.concat(
        [
            cluster_means(
                (f["pattern_3m"].astype(str) == p).to_numpy(float), np.full(len(f), p), caseworker, config.level
            )
            for p in PATTERNS
        ],
        ignore_index=True,
    )
    pairs = mean_indicator_change(f, data.window_days)
    changes = cluster_means(
        pairs["change"].to_numpy(),
        pairs["pattern_3m"].to_numpy(),
        caseworker_ids(data.dataset, pairs["measurement_id"]),
        config.level,
    )
    changes = changes.set_index("category").reindex(list(PATTERNS)).reset_index()
    still, still_low, still_high, citizens = still_or_back_interval(data.dataset, config.level)
    metrics = {f"share_{r.category}": float(r.mean) for r in shares.itertuples()}
    metrics.update({f"change_{r.category}": float(r.mean) for r in changes.itertuples()})
    metrics.update({f"change_{r.category}_se": float(r.se) for r in changes.itertuples()})
    metrics.update({"still_or_back": still, "still_or_back_low": still_low, "still_or_back_high": still_high})
    order = changes.sort_values("mean", ascending=False)["category"].tolist()
    none = changes.set_index("category").loc["none"]
    share_table = shares.rename(columns={"category": "pattern", "mean": "share"})
    share_table.insert(1, "label", [PATTERN_LABELS[p][1] for p in share_table["pattern"]])
    share_table["bip_share"] = [BIP_REFERENCE[f"pattern_{p}_share_pct"] / 100 for p in share_table["pattern"]]
    change_table = changes.rename(columns={"category": "pattern", "mean": "mean_change"})
    change_table.insert(1, "label", [PATTERN_LABELS[p][1] for p in change_table["pattern"]])
    findings = [
        "Shares of measurements by pattern: "
        + "; ".join(
            f"{PATTERN_LABELS[r.pattern][1]} {r.share:.1%} (BIP {r.bip_share:.0%})" for r in share_table.itertuples()
        )
        + ".",
        "Mean change of the indicator answers per round, by the pattern at the later measurement: "
        + "; ".join(
            f"{PATTERN_LABELS[r.pattern][1]} {interval_text(r.mean_change, r.low, r.high, digits=3)}"
            for r in change_table.itertuples()
        )
        + f". Ordered: {' > '.join(order)}.",
        f"With no intervention the indicators decline by {-none['mean']:.3f} scale points per round "
        f"[{-none['high']:.3f}, {-none['low']:.3f}].",
        f"{still:.1%} [{still_low:.1%}, {still_high:.1%}] of {citizens} citizens with two or more measurements stand "
        f"still or go back from their first to their last measurement (BIP: {BIP_REFERENCE['still_or_back_pct']:g} %).",
    ]
    return Analysis(
        key="progression",
        title="3. Interventions and progression",
        question=(
            "Which intervention patterns go with progression on the indicators, and how many citizens stand still or "
            "go back?"
        ),
        method=(
            "The pattern of the last 3 months at each measurement (job-oriented with another type, job-oriented "
            "alone, only other types, none). Progression is the change of the mean of the 20 indicator answers "
            "(citizen and caseworker, belief excluded) from one measurement to the next, for measurements one round "
            "apart, grouped by the pattern at the later measurement. Intervals are cluster-robust by caseworker. "
            "The answers are bounded by 1 and 5, so near the floor a decline can show only in part: the measured "
            "changes are slightly smaller than the change of the underlying ability. Stand still or go back: the "
            "mean answer at the last measurement is not above that at the first (citizens with two or more "
            "measurements)."
        ),
        findings=findings,
        params={"window_days": data.window_days, "level": config.level, "consecutive_rounds": CONSECUTIVE_ROUNDS},
        metrics=metrics,
        tables=[
            Table("pattern_shares", "Share of measurements by pattern of the last 3 months", share_table),
            Table("progression_by_pattern", "Change of the mean indicator answer per round, by pattern", change_table),
            Table(
                "still_or_back",
                "Citizens who stand still or go back",
                pd.DataFrame(
                    [
                        {
                            "citizens": citizens,
                            "share": still,
                            "low": still_low,
                            "high": still_high,
                            "bip_share": BIP_REFERENCE["still_or_back_pct"] / 100,
                        }
                    ]
                ),
            ),
        ],
        plots=[
            Plot(
                "progression",
                "Pattern shares beside BIP, and the progression after each pattern",
                progression_plot(shares, changes, config.level),
            )
        ],
    )
