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

BASELINES = ("gunicorn", "granian")  # every server's req/s is also shown as a ratio to these
# The name run.py's --baseline REV gives gshard as committed at REV.
BEFORE = "gshard-before"
# How much slower than the baseline a scenario may measure and still count as not
# slower: alternating runs on this shared machine differ by about this much.
SAME_WITHIN = 0.03


@dataclass
class Run:
    """One server, one fresh start, one measured wrk run, and what was seen around it."""

    wrk: WrkResult | None  # None when the server could not be started or measured
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
    failure: str = ""  # why there is no measurement

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

    @property
    def measured(self) -> list[Run]:
        return [r for r in self.runs if r.wrk is not None]

    @property
    def failure(self) -> str:
        """Why no run measured anything ("" if one did)."""
        return "" if self.measured else "; ".join(sorted({r.failure for r in self.runs}))

    def _median(self, values: list[float]) -> float:
        values = [v for v in values if not math.isnan(v)]
        return statistics.median(values) if values else math.nan

    @property
    def rps(self) -> float:
        return self._median([r.wrk.requests_per_sec for r in self.measured])

    @property
    def p50(self) -> float:
        return self._median([r.wrk.p50_ms for r in self.measured])

    @property
    def p99(self) -> float:
        return self._median([r.wrk.p99_ms for r in self.measured])

    @property
    def p999(self) -> float:
        return self._median([r.wrk.p999_ms for r in self.measured])

    @property
    def per_cpu(self) -> float:
        return self._median([r.per_cpu for r in self.measured])

    @property
    def errors(self) -> int:
        """Total over all runs, not a median: one error anywhere counts."""
        return sum(r.wrk.errors for r in self.measured)

    @property
    def kib_per_conn(self) -> float:
        return self._median([r.kib_per_conn for r in self.runs])

    @property
    def fairness(self) -> float:
        return self._median([r.fairness for r in self.runs])

    def median_run(self, key) -> Run | None:
        """The run whose ``key`` is the median, to show one coherent set of details."""
        ordered = sorted(self.measured, key=key)
        return ordered[(len(ordered) - 1) // 2] if ordered else None


Results = dict[str, dict[str, Summary]]  # scenario name -> server name -> summary
Scaling = dict[str, dict[int, dict[str, Summary]]]  # scenario -> processes -> server -> summary


@dataclass
class Target:
    name: str
    measured: str
    passed: bool


def ratio(results: Results, scenario: str, name: str, base: str,
          metric: str = "rps") -> float:
    """``name``'s ``metric`` over ``base``'s in one scenario; nan if either is missing."""
    pair = results.get(scenario, {})
    if name not in pair or base not in pair:
        return math.nan
    below = getattr(pair[base], metric)
    return getattr(pair[name], metric) / below if below else math.nan


def _x(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f} ms"


def _rps(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def targets(results: Results) -> list[Target]:
    """The issue's targets for gshard, each judged on the scenario that measures it."""
    found = []
    for scenario, label, base, goal in (("hello", "plain WSGI hello", "gunicorn", 5.0),
                                        ("hello", "plain WSGI hello", "granian", 1.0),
                                        ("flask_hello", "Flask hello", "gunicorn", 2.3),
                                        ("new_conn", "new connection per request", "gunicorn",
                                         1.5)):
        value = ratio(results, scenario, "gshard", base)
        if not math.isnan(value):
            per_cpu = ratio(results, scenario, "gshard", base, "per_cpu")
            verb = f">= {goal}x" if goal != 1.0 else "ahead of"
            found.append(Target(f"{label} req/s {verb} {base}",
                                f"{value:.2f}x (per server CPU-second: {_x(per_cpu)})",
                                value >= goal))
    if "gshard" in results.get("flask_hello", {}):
        p99 = results["flask_hello"]["gshard"].p99
        found.append(Target("Flask hello p99 <= 10 ms at 64 connections", _ms(p99), p99 <= 10))
    pair = results.get("p99_c256", {})
    if "gshard" in pair and "gunicorn" in pair:
        ours, theirs = pair["gshard"].p99, pair["gunicorn"].p99
        found.append(Target("p99 at 256 connections <= gunicorn's",
                            f"{ours:.1f} ms vs {theirs:.1f} ms", ours <= theirs))
    errors = {name: pair["gshard"].errors for name, pair in results.items() if "gshard" in pair}
    bad = {name: n for name, n in errors.items() if n}
    found.append(Target("gshard errors = 0 (all scenarios, all runs)",
                        ", ".join(f"{n} in {name}" for name, n in bad.items()) or "0",
                        not bad))
    if "gshard" in results.get("fairness", {}):
        value = results["fairness"]["gshard"].fairness
        found.append(Target("fairness busiest/idlest <= 1.25", f"{value:.2f}", value <= 1.25))
    if "gshard" in results.get("idle_10k", {}):
        kib = results["idle_10k"]["gshard"].kib_per_conn
        found.append(Target("<= 20 KiB per idle keep-alive connection", f"{kib:.1f} KiB",
                            kib <= 20))
    return found + baseline_targets(results)


def baseline_targets(results: Results) -> list[Target]:
    """Against the baseline (``--baseline``): one keep-alive connection no slower, and no
    scenario slower, within SAME_WITHIN."""
    against = {name: ratio(results, name, "gshard", BEFORE) for name in results}
    against = {name: value for name, value in against.items() if not math.isnan(value)}
    if not against:
        return []
    floor = 1 - SAME_WITHIN
    found = []
    if "hello_c1" in against:
        found.append(Target(f"one keep-alive connection (wrk -c1) not slower than {BEFORE}",
                            _x(against["hello_c1"]), against["hello_c1"] >= floor))
    worst = min(against, key=against.__getitem__)
    found.append(Target(f"no scenario slower than {BEFORE} (req/s ratio >= {floor:.2f})",
                        f"lowest: {worst} {_x(against[worst])}", against[worst] >= floor))
    return found


def baseline_table(scenarios: list, results: Results) -> list[str]:
    """gshard against the baseline, scenario by scenario (``--baseline``)."""
    rows = []
    for sc in scenarios:
        pair = results.get(sc.name, {})
        now, before = pair.get("gshard"), pair.get(BEFORE)
        if now is None or before is None or now.failure or before.failure:
            continue
        rows.append(f"| {sc.title} | {_rps(now.rps)} | {_rps(before.rps)} | "
                    f"{_x(ratio(results, sc.name, 'gshard', BEFORE))} | "
                    f"{_x(ratio(results, sc.name, 'gshard', BEFORE, 'per_cpu'))} | "
                    f"{_ms(now.p99)} | {_ms(before.p99)} |")
    if not rows:
        return []
    return [f"## gshard against {BEFORE}", "",
            f"The same scenarios, same alternating rounds: gshard as checked out against "
            f"{BEFORE} (the machine table names its commit).", "",
            f"| scenario | gshard req/s | {BEFORE} req/s | ratio | ratio per server CPU-s | "
            f"gshard p99 | {BEFORE} p99 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |", *rows]


def _kib(rss: dict[int, int]) -> str:
    return " / ".join(f"{kib:,}" for kib in rss.values()) or "n/a"


def _names(results: Results) -> list[str]:
    """Server names in the order they ran."""
    return list(dict.fromkeys(name for pair in results.values() for name in pair))


def headline(results: Results) -> list[str]:
    """Plain and Flask hello side by side, one row per server: the README's table."""
    names = _names(results)
    scenarios = [sc for sc in ("hello", "flask_hello") if sc in results]
    head = "| server |"
    rule = "| --- |"
    for sc in scenarios:
        label = "plain hello" if sc == "hello" else "Flask hello"
        head += f" {label} req/s | x gunicorn | x granian | p50 / p99 / p99.9 |"
        rule += " ---: | ---: | ---: | ---: |"
    lines = [head, rule]
    for name in names:
        row = f"| {name} |"
        for sc in scenarios:
            s = results[sc].get(name)
            if s is None or s.failure:
                row += f" {f'failed: {s.failure}' if s else 'not run'} | | | |"
                continue
            row += (f" {_rps(s.rps)} | {_x(ratio(results, sc, name, 'gunicorn'))} | "
                    f"{_x(ratio(results, sc, name, 'granian'))} | "
                    f"{s.p50:.2f} / {s.p99:.1f} / {s.p999:.1f} ms |")
        lines.append(row)
    return lines


def scaling_table(scenarios: list, scaling: Scaling) -> list[str]:
    """Req/s per process count for every server, for scenarios measured at several counts."""
    shown = [sc for sc in scenarios if len(scaling.get(sc.name, {})) > 1]
    if not shown:
        return []
    lines = ["## Scaling", "",
             "Median req/s per process count (gshard `--shards N`, gunicorn `-w N`, granian "
             "`--workers N`, bjoern N processes); in brackets the ratio to the same server "
             "with the fewest processes. Each count is a separate alternating round.", ""]
    for sc in shown:
        counts = sorted(scaling[sc.name])
        lines += [f"### {sc.title}", "",
                  "| server | " + " | ".join(f"{n} process{'es' if n > 1 else ''}"
                                             for n in counts) + " |",
                  "| --- |" + " ---: |" * len(counts)]
        for name in scaling[sc.name][counts[0]]:
            first = scaling[sc.name][counts[0]][name].rps
            cells = []
            for n in counts:
                rps = scaling[sc.name][n][name].rps
                cells.append(f"{_rps(rps)} ({_x(rps / first if first else math.nan)})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines[:-1]


def markdown(scenarios: list, results: Results, machine: dict[str, str], method: list[str],
             extra_targets: tuple[Target, ...] = (), extra_sections: tuple[str, ...] = (),
             skipped: dict[str, str] | None = None, scaling: Scaling | None = None) -> str:
    """RESULTS.md: machine, method, summary tables, targets, then one section per scenario.

    ``extra_targets`` and ``extra_sections`` carry measurements made outside wrk
    (startup time); ``skipped`` names the servers that could not be installed.
    """
    names = _names(results)
    peers = ", ".join(n for n in names if n != "gshard") or "its peers"
    lines = [f"# gshard vs {peers}", "",
             "Generated by `python benchmarks/run.py`. Ratios are req/s of the server in the "
             "row over req/s of gunicorn's gevent worker (x gunicorn) or of granian "
             "(x granian), measured in the same alternating run.", "", "## Machine", "",
             "| | |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in machine.items()]
    lines += ["", "## Method", ""] + [f"- {item}" for item in method]
    if skipped:
        lines += ["", "## Skipped servers", ""]
        lines += [f"- {name}: {reason}" for name, reason in skipped.items()]
    lines += ["", "## Plain and Flask hello", "", *headline(results)]
    lines += ["", "## Summary", "",
              "| scenario | server | req/s | x gunicorn | x granian | x gunicorn per server "
              "CPU-s | p50 | p99 | p99.9 | errors |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for sc in scenarios:
        for name, s in results.get(sc.name, {}).items():
            if s.failure:
                lines.append(f"| {sc.title} | {name} | failed: {s.failure} | | | | | | | |")
                continue
            lines.append(f"| {sc.title} | {name} | {_rps(s.rps)} | "
                         f"{_x(ratio(results, sc.name, name, 'gunicorn'))} | "
                         f"{_x(ratio(results, sc.name, name, 'granian'))} | "
                         f"{_x(ratio(results, sc.name, name, 'gunicorn', 'per_cpu'))} | "
                         f"{_ms(s.p50)} | {_ms(s.p99)} | {_ms(s.p999)} | {s.errors} |")
    against = baseline_table(scenarios, results)
    lines += ["", *against] if against else []
    lines += ["", "## Targets", "", "| target | measured | result |", "| --- | --- | --- |"]
    lines += [f"| {t.name} | {t.measured} | {'PASS' if t.passed else 'FAIL'} |"
              for t in [*targets(results), *extra_targets]]
    if scaling:
        table = scaling_table(scenarios, scaling)
        lines += ["", *table] if table else []
    if extra_sections:
        lines += ["", *extra_sections]
    lines += ["", "## Scenarios"]
    for sc in scenarios:
        if sc.name in results:
            lines += ["", *_scenario_section(sc, results[sc.name], results)]
    problems = [f"- {sc.name}, {name}, run {i}: {problem}"
                for sc in scenarios
                for name, summary in results.get(sc.name, {}).items()
                for i, run in enumerate(summary.runs, 1)
                for problem in ([f"failed: {run.failure}"] if run.failure else run.problems)]
    lines += ["", "## Problems seen in the servers' logs and processes", ""]
    lines += problems or ["None: no worker was replaced, no error line was logged."]
    return "\n".join(lines) + "\n"


def _scenario_section(sc, pair: dict[str, Summary], results: Results) -> list[str]:
    lines = [f"### {sc.title}", "", sc.describe(), "",
             "| server | req/s (median) | x gunicorn | x granian | p50 | p99 | p99.9 | errors "
             "| req per server CPU-s | req/s per run | CPU s per process, per run | CPU s used "
             "by others, per run |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    for name, s in pair.items():
        if s.failure:
            lines.append(f"| {name} | failed: {s.failure} | | | | | | | | | | |")
            continue
        per_run = ", ".join(_rps(r.wrk.requests_per_sec) if r.wrk else "failed"
                            for r in s.runs)
        cpu = "; ".join("/".join(f"{c:.1f}" for c in r.cpu.values()) for r in s.measured)
        others = ", ".join(f"{r.other_cpu:.1f}" for r in s.measured)
        lines.append(f"| {name} | {_rps(s.rps)} | {_x(ratio(results, sc.name, name, 'gunicorn'))}"
                     f" | {_x(ratio(results, sc.name, name, 'granian'))} | {_ms(s.p50)} | "
                     f"{_ms(s.p99)} | {_ms(s.p999)} | {s.errors} | {_rps(s.per_cpu)} | "
                     f"{per_run} | {cpu} | {others} |")
    if sc.idle:
        lines += ["", "Memory (VmRSS of each shard/worker, KiB; the run with the median "
                  "KiB per connection):", "",
                  "| server | idle | with idle connections held | held / still open after "
                  "the run | KiB per connection (median) |",
                  "| --- | --- | --- | --- | ---: |"]
        for name, s in pair.items():
            run = s.median_run(lambda r: r.kib_per_conn)
            if run is not None:
                lines.append(f"| {name} | {_kib(run.rss_idle)} | {_kib(run.rss_held)} | "
                             f"{run.held:,} (failed {run.held_failed}) / {run.alive_after:,} | "
                             f"{s.kib_per_conn:.1f} |")
    if sc.count_pids:
        lines += ["", "Requests served per process (the run with the median busiest/idlest "
                  "ratio):", "", "| server | requests per process | busiest/idlest (median) |",
                  "| --- | --- | ---: |"]
        for name, s in pair.items():
            run = s.median_run(lambda r: r.fairness)
            if run is not None:
                counts = " / ".join(f"{run.wrk.pids.get(str(pid), 0):,}" for pid in run.workers)
                lines.append(f"| {name} | {counts} | {s.fairness:.2f} |")
    return lines


COLORS = {"gshard": "#2a7ab9", BEFORE: "#9cc3e4", "gunicorn": "#b0b0b0", "granian": "#e08a2c",
          "bjoern": "#5a9e4b"}


def chart(scenarios: list, results: Results, path: Path) -> None:
    """Median req/s per scenario and server (log scale, bars labelled with the ratio to
    gunicorn), and below it each server's p99 with p50 and p99.9 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [sc for sc in scenarios if sc.name in results]
    names = _names(results)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(9, 1.6 * len(shown)), 9), sharex=True)
    width = 0.8 / len(names)
    spare = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for k, name in enumerate(names):
        color = COLORS.get(name) or next(spare)
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(shown))]
        summaries = [results[sc.name].get(name) for sc in shown]
        rps = [s.rps if s else math.nan for s in summaries]
        top.bar(xs, rps, width, label=name, color=color)
        for x, sc, value in zip(xs, shown, rps, strict=True):
            if name != "gunicorn" and not math.isnan(value):
                top.annotate(_x(ratio(results, sc.name, name, "gunicorn")), (x, value),
                             xytext=(0, 3), textcoords="offset points", ha="center",
                             fontsize=7, rotation=90)
        p99 = [s.p99 if s else math.nan for s in summaries]
        bottom.bar(xs, p99, width, color=color)
        bottom.scatter(xs, [s.p50 if s else math.nan for s in summaries], marker="_",
                       color="black", s=40, zorder=3, label="p50" if k == 0 else None)
        bottom.scatter(xs, [s.p999 if s else math.nan for s in summaries], marker="v",
                       color="black", s=12, zorder=3, label="p99.9" if k == 0 else None)
    top.set_yscale("log")
    measured = [s.rps for pair in results.values() for s in pair.values() if s.rps > 0]
    if measured:  # room above the tallest bar for its label
        top.set_ylim(min(measured) / 2, max(measured) * 4)
    top.set_ylabel("requests/s (median, log scale)")
    top.set_title("req/s, same processes each (labels: x gunicorn's req/s)")
    top.legend(fontsize=8)
    top.grid(axis="y", alpha=0.3)
    bottom.set_yscale("log")
    bottom.set_ylabel("latency, ms (log scale)")
    bottom.set_title("p99 (bars), p50 (dash) and p99.9 (triangle), median of the runs")
    bottom.legend(fontsize=8)
    bottom.grid(axis="y", alpha=0.3)
    bottom.set_xticks(range(len(shown)), [sc.short for sc in shown], rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
