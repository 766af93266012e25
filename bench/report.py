"""Statistics, targets and the two renderings of the results: a rich table and Markdown."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from bench.workloads import AppWrites, CatchUp, Floor

METHODS = ("ours", "job", "floor", "naive")
METHOD_TITLES = {"ours": "ours", "job": "job batch", "floor": "floor", "naive": "naive"}
SCENARIOS = ("idle", "due")

# The goals, as ratios within one run.
IDLE_SPEEDUP_GOAL = 1000.0
DUE_SPEEDUP_GOAL = 200.0
FLOOR_RATIO_GOAL = 2.0
GROWTH_GOAL = 2.0
CATCH_UP_RATE_GOAL = 50_000.0
APP_P99_GOAL_MS = 50.0


@dataclass(frozen=True)
class Summary:
    """Median and spread of repeated timings, in milliseconds."""

    n: int
    median: float
    p10: float
    p90: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, values: list[float]) -> Summary:
        if not values:
            raise ValueError("no timings to summarise")
        ordered = sorted(values)
        return cls(
            n=len(ordered),
            median=statistics.median(ordered),
            p10=percentile(ordered, 10),
            p90=percentile(ordered, 90),
            minimum=ordered[0],
            maximum=ordered[-1],
        )


def percentile(ordered: list[float], pct: float) -> float:
    """Return the ``pct`` percentile of sorted values, interpolated linearly between ranks."""
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def format_ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def format_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}x" if value >= 100 else f"{value:.2f}x"


@dataclass
class SizeResult:
    """Timings of one table size, in milliseconds, keyed by (scenario, method)."""

    size: int
    due: int
    load_seconds: float
    # End to end, from the client: round trip, statement and commit.
    timings: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # Server execution time of the statements, from pg_stat_statements.
    server_timings: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # Server time of our idle tick run a second time right after the timed one.
    back_to_back: list[float] = field(default_factory=list)
    floor: Floor | None = None

    def summary(self, scenario: str, method: str, *, server: bool = False) -> Summary:
        return Summary.of((self.server_timings if server else self.timings)[(scenario, method)])

    def ratio(self, scenario: str, numerator: str, denominator: str, *, server: bool = False) -> float | None:
        bottom = self.summary(scenario, denominator, server=server).median
        if bottom <= 0:
            return None
        return self.summary(scenario, numerator, server=server).median / bottom


@dataclass
class Target:
    """One goal; tick goals are judged on server time and, for comparison, end to end."""

    key: str
    name: str
    goal: str
    measured: str
    passed: bool | None
    shortfall: str = ""
    measured_end_to_end: str = ""
    passed_end_to_end: bool | None = None


@dataclass
class Results:
    command: str
    machine: dict[str, str]
    repeat: int
    sizes: list[SizeResult] = field(default_factory=list)
    catch_up: CatchUp | None = None
    baseline: AppWrites | None = None
    batch_size: int = 0
    plans: dict[str, str] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)

    @property
    def largest(self) -> SizeResult:
        return max(self.sizes, key=lambda result: result.size)

    @property
    def smallest(self) -> SizeResult:
        return min(self.sizes, key=lambda result: result.size)


# -- machine ----------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _package_version(name: str) -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def machine_details(server_version: str, major: str, pg_cron_version: str, settings: dict[str, str]) -> dict[str, str]:
    """Return the facts a reader needs to judge the numbers, as label -> value."""
    cron_package = _package_version(f"postgresql-{major}-cron")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": _memory(),
        "load average at start (1, 5, 15 min)": ", ".join(f"{value:.2f}" for value in os.getloadavg()),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "PostgreSQL": server_version,
        "pg_cron": pg_cron_version + (f" (package {cron_package})" if cron_package else ""),
        "server settings": ", ".join(f"{name}={value}" for name, value in settings.items()),
    }


# -- targets ------------------------------------------------------------------


def _shortfall(measured: float, goal: float, higher_is_better: bool) -> str:
    if higher_is_better and measured > 0 and measured < goal / 10:
        return f"{goal / measured:,.0f} times below the goal ({measured:,.2f} against {goal:,.0f})"
    if higher_is_better:
        return f"{(1 - measured / goal) * 100:.0f}% below the goal ({measured:,.2f} against {goal:,.0f})"
    return f"{(measured / goal - 1) * 100:.0f}% above the goal ({measured:,.2f} against {goal:,.2f})"


_COMPARISONS = {
    ">=": lambda value, threshold: value >= threshold,
    "<=": lambda value, threshold: value <= threshold,
    "<": lambda value, threshold: value < threshold,
}


def _judge(value: float | None, comparison: str, threshold: float) -> bool | None:
    if value is None:
        return None
    return bool(_COMPARISONS[comparison](value, threshold))


def _tick_value(results: Results, key: str, server: bool) -> float | None:
    largest = results.largest
    if key == "growth":
        if len(results.sizes) < 2:
            return None
        smallest = results.smallest.summary("idle", "ours", server=server).median
        if smallest <= 0:
            return None
        return largest.summary("idle", "ours", server=server).median / smallest
    scenario, numerator, denominator = {
        "idle": ("idle", "naive", "ours"),
        "due": ("due", "naive", "ours"),
        "job": ("due", "naive", "job"),
        "floor": ("due", "ours", "floor"),
    }[key]
    return largest.ratio(scenario, numerator, denominator, server=server)


def _target(
    key: str, name: str, comparison: str, threshold: float, value: float | None, end_to_end: float | None, unit: str
) -> Target:
    passed = _judge(value, comparison, threshold)
    target = Target(
        key,
        name,
        goal=f"{comparison} {threshold:,.0f}{unit}",
        measured="not measured" if value is None else f"{value:,.2f}{unit}",
        passed=passed,
        measured_end_to_end="not measured" if end_to_end is None else f"{end_to_end:,.2f}{unit}",
        passed_end_to_end=_judge(end_to_end, comparison, threshold),
    )
    if passed is False and value is not None:
        target.shortfall = _shortfall(value, threshold, comparison == ">=")
    return target


def evaluate_targets(results: Results) -> list[Target]:
    """Return each goal with its measured value and whether this run met it."""
    largest = results.largest
    at = f"at {largest.size:,} sessions"
    tick_goals = [
        ("idle", f"idle tick {at}: naive / ours", ">=", IDLE_SPEEDUP_GOAL),
        ("due", f"{largest.due}-due tick {at}: naive / ours", ">=", DUE_SPEEDUP_GOAL),
        ("job", f"{largest.due}-due job batch {at}: naive / job batch", ">=", DUE_SPEEDUP_GOAL),
        ("floor", f"{largest.due}-due tick {at}: ours / floor", "<=", FLOOR_RATIO_GOAL),
        ("growth", f"idle tick, {results.smallest.size:,} -> {largest.size:,} sessions: time growth", "<", GROWTH_GOAL),
    ]
    targets = [
        _target(
            key,
            name,
            comparison,
            threshold,
            _tick_value(results, key, server=True),
            _tick_value(results, key, server=False),
            "x",
        )
        for key, name, comparison, threshold in tick_goals
    ]

    # The catch-up is timed once, end to end.
    rate = p99 = None
    if results.catch_up is not None and results.catch_up.seconds > 0:
        rate = results.catch_up.changed / results.catch_up.seconds
        writes = sorted(results.catch_up.app.all())
        p99 = percentile(writes, 99) if writes else None
    targets.append(_target("catch_up", "catch-up rate (transitions/s)", ">=", CATCH_UP_RATE_GOAL, rate, rate, ""))
    targets.append(_target("app_p99", "app writes during catch-up: p99 (ms)", "<", APP_P99_GOAL_MS, p99, p99, ""))
    return targets


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "MISS", None: "n/a"}[passed]


# -- console ------------------------------------------------------------------


def tick_table(results: Results, *, server: bool) -> Table:
    kind = "server execution" if server else "end to end (round trip, statement, commit)"
    table = Table(title=f"tick time, {kind}, ms: median of n = {results.repeat}")
    for column in ("sessions", "due", *(METHOD_TITLES[m] for m in METHODS), "naive / ours", "ours / floor"):
        table.add_column(column, justify="right")
    for size in sorted(results.sizes, key=lambda r: r.size):
        for scenario in SCENARIOS:
            table.add_row(
                f"{size.size:,}",
                "0" if scenario == "idle" else str(size.due),
                *(format_ms(size.summary(scenario, method, server=server).median) for method in METHODS),
                format_ratio(size.ratio(scenario, "naive", "ours", server=server)),
                format_ratio(size.ratio(scenario, "ours", "floor", server=server)) if scenario == "due" else "-",
            )
    return table


def spread_table(results: Results) -> Table:
    table = Table(title="tick time, server execution, ms: p10-p90 (min-max)")
    for column in ("sessions", "due", *(METHOD_TITLES[m] for m in METHODS)):
        table.add_column(column, justify="right")
    for size in sorted(results.sizes, key=lambda r: r.size):
        for scenario in SCENARIOS:
            cells = []
            for method in METHODS:
                summary = size.summary(scenario, method, server=True)
                cells.append(
                    f"{format_ms(summary.p10)}-{format_ms(summary.p90)} "
                    f"({format_ms(summary.minimum)}-{format_ms(summary.maximum)})"
                )
            table.add_row(f"{size.size:,}", "0" if scenario == "idle" else str(size.due), *cells)
    return table


def app_table(results: Results) -> Table | None:
    if results.catch_up is None or results.baseline is None:
        return None
    table = Table(title="app writes (book, mark full, cancel), ms")
    for column in ("", "n", "p50", "p99", "max"):
        table.add_column(column, justify="right")
    for label, writes in (("alone", results.baseline), ("during catch-up", results.catch_up.app)):
        values = sorted(writes.all())
        if values:
            table.add_row(
                label,
                str(len(values)),
                format_ms(percentile(values, 50)),
                format_ms(percentile(values, 99)),
                format_ms(values[-1]),
            )
        else:
            table.add_row(label, "0", "-", "-", "-")
    return table


def print_results(console: Console, results: Results) -> None:
    console.print(tick_table(results, server=True))
    console.print(spread_table(results))
    console.print(tick_table(results, server=False))
    catch_up = results.catch_up
    if catch_up is not None:
        console.print(
            f"catch-up: {catch_up.changed:,} of {catch_up.backlog:,} transitions in {catch_up.seconds:.2f} s "
            f"= {catch_up.changed / catch_up.seconds:,.0f} transitions/s (batch_size {results.batch_size:,})"
        )
    table = app_table(results)
    if table is not None:
        console.print(table)
    for title, plan in results.plans.items():
        console.rule(title)
        console.print(plan, markup=False, highlight=False)
    targets = Table(title="targets (tick goals judged on server time; end to end for comparison)")
    for column in ("target", "goal", "server", "result", "end to end", "result"):
        targets.add_column(column)
    styles = {True: "green", False: "red", None: "yellow"}
    for target in results.targets:
        targets.add_row(
            target.name,
            target.goal,
            target.measured,
            f"[{styles[target.passed]}]{verdict(target.passed)}[/]",
            target.measured_end_to_end,
            f"[{styles[target.passed_end_to_end]}]{verdict(target.passed_end_to_end)}[/]",
        )
    console.print(targets)
