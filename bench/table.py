"""Turning samples into the one markdown table: medians, ratios, peak RSS, goals."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

SCENARIOS = ("first copy", "no change", "10 edits")


@dataclass(frozen=True)
class Record:
    """One timed run of one tool."""

    workload: str
    kind: str
    scenario: str
    tool: str
    repeat: int
    seconds: float
    rss_kib: int


@dataclass(frozen=True)
class Goal:
    """mirror's time must be at most ``ratio`` x ``versus``'s; optional RSS ceiling."""

    versus: str
    ratio: float
    rss_mib: float | None = None


#: the goals of issue 7, keyed by (workload, target kind, scenario)
GOALS: dict[tuple[str, str, str], Goal] = {
    ("small", "local", "first copy"): Goal("rsync", 1.0),
    ("small", "local", "no change"): Goal("rsync", 1.0),
    ("huge", "local", "no change"): Goal("rclone", 1.0, 64),
    ("million", "local", "no change"): Goal("rclone", float("inf"), 300),
    ("small", "sftp", "first copy"): Goal("rclone", 0.75),
    ("small", "sftp", "no change"): Goal("rclone", 0.2),
    ("large", "sftp", "first copy"): Goal("rclone", 1.0),
}


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _cell(seconds: list[float], rss: list[int]) -> str:
    if not seconds:
        return "-"
    return f"{_median(seconds):.2f} s · {max(rss) / 1024:.0f} MiB"


def render(records: list[Record], tools: list[str]) -> str:
    """Medians over repeats (time), the largest peak RSS seen, ratios of medians."""
    groups: dict[tuple[str, str, str], dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[(r.workload, r.kind, r.scenario)][r.tool].append(r)
    header = ["workload", "target", "run", *tools, "mirror/rsync", "mirror/rclone", "goal", "n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in sorted(groups, key=_order):
        by_tool = groups[key]
        cells = [_cell([r.seconds for r in by_tool[t]], [r.rss_kib for r in by_tool[t]]) for t in tools]
        med = {t: _median([r.seconds for r in rs]) for t, rs in by_tool.items() if rs}
        ratios = [_ratio(med, t) for t in ("rsync", "rclone")]
        n = max(len(rs) for rs in by_tool.values())
        lines.append("| " + " | ".join([*key, *cells, *ratios, _goal(key, by_tool, med), str(n)]) + " |")
    return "\n".join(lines)


def _ratio(med: dict[str, float], versus: str) -> str:
    return f"{med['mirror'] / med[versus]:.2f}x" if "mirror" in med and versus in med else "-"


def _order(key: tuple[str, str, str]) -> tuple[int, int, int]:
    workloads = ("small", "large", "huge", "million")
    w = workloads.index(key[0]) if key[0] in workloads else 99
    return (w, 0 if key[1] == "local" else 1, SCENARIOS.index(key[2]) if key[2] in SCENARIOS else 9)


def _goal(key: tuple[str, str, str], by_tool: dict[str, list[Record]], med: dict[str, float]) -> str:
    goal = GOALS.get(key)
    if goal is None or "mirror" not in med:
        return ""
    parts, ok = [], True
    if goal.ratio != float("inf"):
        parts.append(f"≤ {goal.ratio:g}x {goal.versus}")
        if goal.versus in med:
            ok &= med["mirror"] <= goal.ratio * med[goal.versus]
    if goal.rss_mib is not None:
        parts.append(f"RSS ≤ {goal.rss_mib:g} MiB")
        ok &= max(r.rss_kib for r in by_tool["mirror"]) / 1024 <= goal.rss_mib
    return f"{', '.join(parts)}: {'met' if ok else 'MISSED'}"
