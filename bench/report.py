"""The benchmark's records and outputs: a Markdown table, a JSON file and a latency/throughput plot."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.limit import Limit


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0–100) with linear interpolation, as numpy's default."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Step:
    """One (server, task, concurrency) measurement."""

    server: str  # "service" or "naive"
    task: str
    model: str
    concurrency: int
    sent: int
    ok: int
    errors: dict[str, int]
    wall_s: float
    requests_per_s: float
    images_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_batch: float | None  # rows per session.run, from the server's histogram
    ratio_to_limit: float | None
    ratio_to_bound: float | None  # against the pipelined bound (`bench.limit.PartsAlone`)
    client_cpu_ms_per_request: float | None
    server_cpu_ms_per_request: float | None
    client_cpu_share: float | None  # client CPU seconds / wall seconds (1.0 = one core)
    server_cpu_share: float | None
    other_cpu_share: float | None  # the rest of the machine's busy CPU: other jobs
    error_samples: list[str] = field(default_factory=list)
    repeat: int = 0  # which of `--repeats` (0-based)


def median_step(steps: list[Step]) -> Step | None:
    """The step of median throughput (the lower middle one of an even count)."""
    if not steps:
        return None
    return sorted(steps, key=lambda s: s.images_per_s)[(len(steps) - 1) // 2]


def spread(steps: list[Step]) -> str:
    """`median (min–max, ±half the range as % of the median)` of the steps' images/s."""
    middle = median_step(steps)
    assert middle is not None
    rates = [s.images_per_s for s in steps]
    if len(rates) == 1:
        return f"{middle.images_per_s:.1f}"
    half = (max(rates) - min(rates)) / 2 / max(middle.images_per_s, 1e-9) * 100
    return f"{middle.images_per_s:.1f} ({min(rates):.1f}–{max(rates):.1f}, ±{half:.0f} %)"


@dataclass
class ServerFigures:
    kind: str
    url: str
    ready_s: float | None
    peak_rss_mib: float | None
    rss_after_mib: float | None


@dataclass
class Target:
    name: str
    wanted: str
    measured: str
    met: bool | None  # None: not measured in this run


@dataclass
class Report:
    command: str
    machine: dict[str, Any]
    settings: dict[str, str]
    images: list[str]
    limits: dict[str, Limit]
    limits_after: dict[str, Limit]
    servers: list[ServerFigures]
    steps: list[Step]
    targets: list[Target]
    # The front end's own ceiling: the service on a zero-cost model (`bench.run.Runner.ceiling`).
    ceiling: list[Step] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}×{v}" for k, v in sorted(errors.items())) or "0"


def markdown(report: Report) -> str:
    lines = [f"Command: `{report.command}`", ""]
    m = report.machine
    lines.append(
        f"Machine: {m.get('cpu_model', '?')}, {m.get('cpus')} CPUs, load average at start "
        f"{m.get('loadavg_start')}, at end {m.get('loadavg_end')}; onnxruntime {m.get('onnxruntime')}, "
        f"Python {m.get('python')}. Client: {m.get('client')}."
    )
    lines += [
        "",
        "### Servers",
        "",
        "| server | ready (s) | peak RSS (MiB) | RSS after (MiB) |",
        "|---|---|---|---|",
    ]
    for server in report.servers:
        lines.append(
            f"| {server.kind} | {_fmt(server.ready_s, 2)} | {_fmt(server.peak_rss_mib, 0)} | "
            f"{_fmt(server.rss_after_mib, 0)} |"
        )
    lines += [
        "",
        "### Limits (in-process: same decoding, preprocessing and session, no HTTP)",
        "",
        "| task | model | limit img/s (before → after the task's steps) | best batch | schedule "
        "| single image ms (prepare + run), before → after | CPU ms per image |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, limit in report.limits.items():
        after = report.limits_after.get(task)
        span = f"{limit.images_per_s:.1f}" + (f" → {after.images_per_s:.1f}" if after else "")
        lines.append(
            f"| {task} | {limit.model} | {span} | {limit.batch_size} | {limit.schedule} | "
            f"{limit.single_image_ms:.1f} ({limit.single_prepare_ms:.1f} + {limit.single_run_ms:.1f})"
            + (f" → {after.single_image_ms:.1f}" if after else "")
            + f" | {limit.cpu_ms_per_image:.1f} |"
        )
    parts = {task: limit.parts for task, limit in report.limits.items() if limit.parts}
    if parts:
        lines += [
            "",
            "### Parts alone and the pipelined bound (same cores as the server)",
            "",
            "| task | cores | prepare CPU ms/image | prepare alone img/s | session.run alone img/s (CPU ms/image) "
            "| pipelined bound img/s (batch) |",
            "|---|---|---|---|---|---|",
        ]
        for task, p in parts.items():
            runs = ", ".join(f"b{b}: {r:.1f} ({p.run_cpu_ms[b]:.1f})" for b, r in p.run_images_per_s.items())
            lines.append(
                f"| {task} | {p.cores} | {p.prepare_cpu_ms:.2f} | {p.prepare_images_per_s:.1f} | {runs} | "
                f"{p.bound_images_per_s:.1f} ({p.bound_batch_size}) |"
            )
    lines += [
        "",
        "### Load steps",
        "",
        "| server | task | clients | repeat | req/s | img/s | × limit | × bound | p50 ms | p95 ms | p99 ms "
        "| mean batch | errors | client CPU ms/req | server CPU ms/req | other jobs' CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report.steps:
        lines.append(
            f"| {s.server} | {s.task} | {s.concurrency} | {s.repeat + 1} | {s.requests_per_s:.1f} | {s.images_per_s:.1f} | "
            f"{_fmt(s.ratio_to_limit, 2)} | {_fmt(s.ratio_to_bound, 2)} | {_fmt(s.p50_ms)} | {_fmt(s.p95_ms)} | {_fmt(s.p99_ms)} | "
            f"{_fmt(s.mean_batch, 2)} | {_errors(s.errors)} | {_fmt(s.client_cpu_ms_per_request, 2)} | "
            f"{_fmt(s.server_cpu_ms_per_request, 1)} | {_fmt(s.other_cpu_share, 2)} |"
        )
    lines += comparison(report)
    lines += ceiling_table(report.ceiling)
    if report.targets:
        lines += ["", "### Targets", "", "| target | wanted | measured | met |", "|---|---|---|---|"]
        for t in report.targets:
            met = "–" if t.met is None else ("yes" if t.met else "**no**")
            lines.append(f"| {t.name} | {t.wanted} | {t.measured} | {met} |")
    return "\n".join(lines) + "\n"


def comparison(report: Report) -> list[str]:
    """Per task, each server's images/s at each client count: the median repeat with its spread,
    and its ratio to the first naive server's median (the servers ran interleaved)."""
    servers = list(dict.fromkeys(s.server for s in report.steps))
    lines: list[str] = []
    for task in dict.fromkeys(s.task for s in report.steps):
        of: dict[tuple[str, int], list[Step]] = {}
        for s in report.steps:
            if s.task == task:
                of.setdefault((s.server, s.concurrency), []).append(s)
        naive = next((k for k in servers if k.startswith("naive")), None)
        repeats = max(len(steps) for steps in of.values())
        lines += [
            "",
            f"### {task}: img/s by server and clients, median of {repeats} interleaved repeat(s)"
            + (f" (min–max, ±half the range); × {naive}" if naive else ""),
            "",
            "| clients | " + " | ".join(servers) + " |",
            "|---|" + "---|" * len(servers),
        ]
        for concurrency in dict.fromkeys(s.concurrency for s in report.steps if s.task == task):
            cells = []
            base = median_step(of.get((naive, concurrency), [])) if naive else None
            for server in servers:
                steps = of.get((server, concurrency), [])
                middle = median_step(steps)
                if middle is None:
                    cells.append("–")
                    continue
                ratio = (
                    f" · ×{middle.images_per_s / base.images_per_s:.2f}"
                    if base is not None and base.images_per_s > 0 and server != naive
                    else ""
                )
                cells.append(spread(steps) + ratio)
            lines.append(f"| {concurrency} | " + " | ".join(cells) + " |")
    return lines


REQUEST_KINDS = {"classification": "JPEG to /v1/classify", "tensors": "tensor to /v2 (binary)"}
PROJECTED_CORES = 16  # the GPU machine the ceiling is projected onto


def ceiling_table(steps: list[Step]) -> list[str]:
    """The service on a zero-cost model: requests/s, CPU per request, per core and 1 → N cores."""
    if not steps:
        return []
    servers = list(dict.fromkeys(s.server for s in steps))
    clients = steps[0].concurrency
    lines = [
        "",
        f"### The front end's own ceiling: the service on a zero-cost classifier, {clients} clients",
        "",
        "Same card, preprocessing and outputs as the classifier, a graph that costs ~0.1 ms "
        "(`bench.zero_model`): what the service spends per request is its own cost. The load "
        "generator is not pinned: beside a 1-core server it has the other cores.",
        "",
        "| requests | server | req/s, median (min–max) | p50 ms | p99 ms | server CPU ms/req "
        "| req/s per core of server CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    medians: dict[tuple[str, str], Step] = {}
    for task in dict.fromkeys(s.task for s in steps):
        for server in servers:
            group = [s for s in steps if (s.task, s.server) == (task, server)]
            middle = median_step(group)
            if middle is None:
                continue
            medians[(task, server)] = middle
            cpu = middle.server_cpu_ms_per_request
            per_core = f"{1e3 / cpu:.0f}" if cpu else "–"
            lines.append(
                f"| {REQUEST_KINDS.get(task, task)} | {server} | {spread(group)} | {_fmt(middle.p50_ms)} | "
                f"{_fmt(middle.p99_ms)} | {_fmt(cpu, 2)} | {per_core} |"
            )
    notes = []
    for task in dict.fromkeys(s.task for s in steps):
        first, last = medians.get((task, servers[0])), medians.get((task, servers[-1]))
        kind = REQUEST_KINDS.get(task, task)
        if first and last and last is not first and first.images_per_s > 0:
            notes.append(
                f"{kind}: {servers[-1]} ×{last.requests_per_s / first.requests_per_s:.2f} {servers[0]}"
            )
        cpus = [
            m.server_cpu_ms_per_request
            for (t, _), m in medians.items()
            if t == task and m.server_cpu_ms_per_request
        ]
        if cpus:
            notes.append(
                f"{kind} at {min(cpus):.2f}–{max(cpus):.2f} CPU ms per request: a {PROJECTED_CORES}-core "
                f"machine's front end would top out near {PROJECTED_CORES * 1e3 / max(cpus):.0f}–"
                f"{PROJECTED_CORES * 1e3 / min(cpus):.0f} requests/s if it scaled linearly (not measured "
                "beyond this machine's cores)"
            )
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return lines


def plot(report: Report, path: Path) -> None:
    """Latency (p50 solid, p99 dashed) against images/s, one panel per task; the limit as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(s.task for s in report.steps)) or list(report.limits)
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(5.5 * max(1, len(tasks)), 4.2), squeeze=False)
    colours = {
        "service": "tab:blue",
        "service-unbatched": "tab:purple",
        "naive": "tab:orange",
        "naive-svc-opts": "tab:red",
    }
    for ax, task in zip(axes[0], tasks, strict=False):
        for server in dict.fromkeys(s.server for s in report.steps):
            by_clients: dict[int, list[Step]] = {}
            for s in report.steps:
                if s.task == task and s.server == server and s.p50_ms is not None:
                    by_clients.setdefault(s.concurrency, []).append(s)
            steps = [m for m in (median_step(group) for group in by_clients.values()) if m is not None]
            if not steps:
                continue
            x = [s.images_per_s for s in steps]
            colour = colours.get(server, "tab:green")
            ax.plot(x, [s.p50_ms for s in steps], "o-", color=colour, label=f"{server} p50")
            ax.plot(x, [s.p99_ms for s in steps], "s--", color=colour, alpha=0.6, label=f"{server} p99")
            for s in steps:
                ax.annotate(str(s.concurrency), (s.images_per_s, s.p50_ms or 0), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
        limit, after = report.limits.get(task), report.limits_after.get(task)
        if limit is not None:  # the mean of the limits measured before and after the task's steps
            mean = (limit.images_per_s + after.images_per_s) / 2 if after else limit.images_per_s
            ax.axvline(mean, color="grey", linestyle=":", label="limit (in-process)")
        ax.set_title(task)
        ax.set_xlabel("images/s")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("latency against throughput (numbers: concurrent clients)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: Report, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "results.md", "json": out / "results.json", "plot": out / "latency.png"}
    paths["markdown"].write_text(markdown(report))
    paths["json"].write_text(json.dumps(report.to_json(), indent=2))
    plot(report, paths["plot"])
    return paths
