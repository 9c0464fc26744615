"""Turn measured runs into medians, target verdicts, RESULTS.md and chart.png.

Medians rather than means: on a shared 2-core machine one disturbed run must
not move the reported number. Requests per CPU-second of the server's own
processes are reported beside req/s because they barely change when other
processes steal the cores, while req/s does.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from wrk import WrkResult

KINDS = ("gshard", "gunicorn")


@dataclass
class Run:
    """One server, one fresh start, one measured wrk run, and what was seen around it."""

    wrk: WrkResult
    workers: list[int] = field(default_factory=list)
    rss_idle: dict[int, int] = field(default_factory=dict)  # KiB per shard/worker
    rss_held: dict[int, int] = field(default_factory=dict)  # KiB with idle connections held
    held: int = 0  # idle keep-alive connections opened
    held_failed: int = 0
    alive_after: int = 0  # of those, still open after the wrk run
    cpu: dict[int, float] = field(default_factory=dict)  # CPU s per process during the run
    server_cpu: float = 0.0  # CPU s of the manager/master and all its workers during the run
    other_cpu: float = 0.0  # CPU s the rest of the machine used during the run
    problems: list[str] = field(default_factory=list)

    @property
    def per_cpu(self) -> float:
        """Requests per CPU-second of the server: its efficiency, whatever CPU it was given."""
        return self.wrk.requests / self.server_cpu if self.server_cpu else math.nan

    @property
    def kib_per_conn(self) -> float:
        """RSS growth of all processes per held connection."""
        if not self.held:
            return math.nan
        return (sum(self.rss_held.values()) - sum(self.rss_idle.values())) / self.held

    @property
    def fairness(self) -> float:
        """Busiest/idlest request count over the processes; inf if one served none."""
        counts = [self.wrk.pids.get(str(pid), 0) for pid in self.workers]
        if not counts or not self.wrk.pids:
            return math.nan
        return max(counts) / min(counts) if min(counts) else math.inf


@dataclass
class Summary:
    """Medians over the runs of one scenario and server."""

    runs: list[Run]

    def _median(self, values: list[float]) -> float:
        values = [v for v in values if not math.isnan(v)]
        return statistics.median(values) if values else math.nan

    @property
    def rps(self) -> float:
        return self._median([r.wrk.requests_per_sec for r in self.runs])

    @property
    def p50(self) -> float:
        return self._median([r.wrk.p50_ms for r in self.runs])

    @property
    def p99(self) -> float:
        return self._median([r.wrk.p99_ms for r in self.runs])

    @property
    def per_cpu(self) -> float:
        return self._median([r.per_cpu for r in self.runs])

    @property
    def errors(self) -> int:
        """Total over all runs, not a median: one error anywhere counts."""
        return sum(r.wrk.errors for r in self.runs)

    @property
    def kib_per_conn(self) -> float:
        return self._median([r.kib_per_conn for r in self.runs])

    @property
    def fairness(self) -> float:
        return self._median([r.fairness for r in self.runs])

    def median_run(self, key) -> Run:
        """The run whose ``key`` is the median, to show one coherent set of details."""
        ordered = sorted(self.runs, key=key)
        return ordered[(len(ordered) - 1) // 2]


Results = dict[str, dict[str, Summary]]  # scenario name -> server kind -> summary


@dataclass
class Target:
    name: str
    measured: str
    passed: bool


def _ratio(results: Results, scenario: str, metric: str = "rps") -> float:
    pair = results.get(scenario)
    if not pair or not getattr(pair["gunicorn"], metric):
        return math.nan
    return getattr(pair["gshard"], metric) / getattr(pair["gunicorn"], metric)


def targets(results: Results) -> list[Target]:
    """The issue's targets, each judged on the scenario that measures it."""
    found = []
    for scenario, label, goal in (("hello", "plain WSGI hello", 3.0),
                                  ("flask_hello", "Flask hello", 1.7),
                                  ("new_conn", "new connection per request", 1.5)):
        if scenario in results:
            ratio = _ratio(results, scenario)
            per_cpu = _ratio(results, scenario, "per_cpu")
            found.append(Target(f"{label} req/s >= {goal}x gunicorn",
                                f"{ratio:.2f}x (per server CPU-second: {per_cpu:.2f}x)",
                                ratio >= goal))
    if "p99_c256" in results:
        ours, theirs = results["p99_c256"]["gshard"].p99, results["p99_c256"]["gunicorn"].p99
        found.append(Target("p99 at 256 connections <= gunicorn's",
                            f"{ours:.1f} ms vs {theirs:.1f} ms", ours <= theirs))
    errors = {name: pair["gshard"].errors for name, pair in results.items()}
    bad = {name: n for name, n in errors.items() if n}
    found.append(Target("gshard errors = 0 (all scenarios, all runs)",
                        ", ".join(f"{n} in {name}" for name, n in bad.items()) or "0",
                        not bad))
    if "fairness" in results:
        ratio = results["fairness"]["gshard"].fairness
        found.append(Target("fairness busiest/idlest <= 1.25", f"{ratio:.2f}", ratio <= 1.25))
    if "idle_10k" in results:
        kib = results["idle_10k"]["gshard"].kib_per_conn
        found.append(Target("<= 20 KiB per idle keep-alive connection", f"{kib:.1f} KiB",
                            kib <= 20))
    return found


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f} ms"


def _kib(rss: dict[int, int]) -> str:
    return " / ".join(f"{kib:,}" for kib in rss.values()) or "n/a"


def markdown(scenarios: list, results: Results, machine: dict[str, str], method: list[str],
             extra_targets: tuple[Target, ...] = (), extra_sections: tuple[str, ...] = ()) -> str:
    """RESULTS.md: machine, method, summary table, targets, then one section per scenario.

    ``extra_targets`` and ``extra_sections`` carry measurements made outside wrk
    (startup time).
    """
    lines = ["# gshard vs gunicorn (gevent worker)", "",
             "Generated by `python benchmarks/run.py`. Ratios are gshard / gunicorn "
             "(for req/s, higher is better for gshard).", "", "## Machine", "",
             "| | |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in machine.items()]
    lines += ["", "## Method", ""] + [f"- {item}" for item in method]
    lines += ["", "## Summary", "",
              "| scenario | gshard req/s | gunicorn req/s | ratio | ratio per server CPU-s "
              "| gshard p99 | gunicorn p99 | gshard errors | gunicorn errors |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for sc in scenarios:
        if sc.name not in results:
            continue
        ours, theirs = results[sc.name]["gshard"], results[sc.name]["gunicorn"]
        lines.append(f"| {sc.title} | {ours.rps:,.0f} | {theirs.rps:,.0f} | "
                     f"{_ratio(results, sc.name):.2f}x | "
                     f"{_ratio(results, sc.name, 'per_cpu'):.2f}x | {_ms(ours.p99)} | "
                     f"{_ms(theirs.p99)} | "
                     f"{ours.errors} | {theirs.errors} |")
    lines += ["", "## Targets", "", "| target | measured | result |", "| --- | --- | --- |"]
    lines += [f"| {t.name} | {t.measured} | {'PASS' if t.passed else 'FAIL'} |"
              for t in [*targets(results), *extra_targets]]
    if extra_sections:
        lines += ["", *extra_sections]
    lines += ["", "## Scenarios"]
    for sc in scenarios:
        if sc.name in results:
            lines += ["", *_scenario_section(sc, results[sc.name], results)]
    problems = [f"- {sc.name}, {kind}, run {i}: {problem}"
                for sc in scenarios if sc.name in results
                for kind in KINDS
                for i, run in enumerate(results[sc.name][kind].runs, 1)
                for problem in run.problems]
    lines += ["", "## Problems seen in the servers' logs and processes", ""]
    lines += problems or ["None: no worker was replaced, no error line was logged."]
    return "\n".join(lines) + "\n"


def _scenario_section(sc, pair: dict[str, Summary], results: Results) -> list[str]:
    lines = [f"### {sc.title}", "", sc.describe(), "",
             "| server | req/s (median) | p50 | p99 | errors | req per server CPU-s | req/s "
             "per run | CPU s per process, per run | CPU s used by others, per run |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    for kind in KINDS:
        s = pair[kind]
        per_run = ", ".join(f"{r.wrk.requests_per_sec:,.0f}" for r in s.runs)
        cpu = "; ".join("/".join(f"{c:.1f}" for c in r.cpu.values()) for r in s.runs)
        others = ", ".join(f"{r.other_cpu:.1f}" for r in s.runs)
        lines.append(f"| {kind} | {s.rps:,.0f} | {_ms(s.p50)} | {_ms(s.p99)} | {s.errors} "
                     f"| {s.per_cpu:,.0f} | {per_run} | {cpu} | {others} |")
    lines += ["", f"Ratio gshard/gunicorn: **{_ratio(results, sc.name):.2f}x** req/s, "
              f"{_ratio(results, sc.name, 'per_cpu'):.2f}x requests per server CPU-second."]
    if sc.idle:
        lines += ["", "Memory (VmRSS of each shard/worker, KiB; the run with the median "
                  "KiB per connection):", "",
                  "| server | idle | with idle connections held | held / still open after "
                  "the run | KiB per connection (median) |",
                  "| --- | --- | --- | --- | ---: |"]
        for kind in KINDS:
            run = pair[kind].median_run(lambda r: r.kib_per_conn)
            lines.append(f"| {kind} | {_kib(run.rss_idle)} | {_kib(run.rss_held)} | "
                         f"{run.held:,} (failed {run.held_failed}) / {run.alive_after:,} | "
                         f"{pair[kind].kib_per_conn:.1f} |")
    if sc.count_pids:
        lines += ["", "Requests served per process (the run with the median busiest/idlest "
                  "ratio):", "", "| server | requests per process | busiest/idlest (median) |",
                  "| --- | --- | ---: |"]
        for kind in KINDS:
            run = pair[kind].median_run(lambda r: r.fairness)
            counts = " / ".join(f"{run.wrk.pids.get(str(pid), 0):,}" for pid in run.workers)
            lines.append(f"| {kind} | {counts} | {pair[kind].fairness:.2f} |")
    return lines


def chart(scenarios: list, results: Results, path: Path) -> None:
    """Grouped bars of median req/s per scenario (log scale), labelled with the ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [sc for sc in scenarios if sc.name in results]
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(shown)), 5.5))
    width = 0.38
    for offset, kind, color in ((-width / 2, "gshard", "#2a7ab9"),
                                (width / 2, "gunicorn", "#b0b0b0")):
        values = [results[sc.name][kind].rps for sc in shown]
        ax.bar([i + offset for i in range(len(shown))], values, width, label=kind, color=color)
    for i, sc in enumerate(shown):
        top = max(results[sc.name][kind].rps for kind in KINDS)
        ax.annotate(f"{_ratio(results, sc.name):.2f}x", (i, top), xytext=(0, 4),
                    textcoords="offset points", ha="center", fontsize=9, fontweight="bold")
    ax.set_yscale("log")
    ax.set_ylabel("requests/s (median, log scale)")
    ax.set_xticks(range(len(shown)), [sc.short for sc in shown], rotation=30, ha="right")
    ax.set_title("gshard --shards 2 vs gunicorn -k gevent -w 2 (labels: gshard/gunicorn)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
