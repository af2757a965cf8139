"""One benchmark run: start the server, measure each task's limit while it idles, drive it at each
concurrency, optionally do the same for the naive baseline, then write the report.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from app.config import Settings
from app.registry import batch_limit
from bench.images import BenchImage, image_set, write_images
from bench.limit import Limit, measure_limit, measure_run_limit
from bench.load import LoadResult, LoadSpec
from bench.report import Report, ServerFigures, Step, Target, median_step, percentile, write
from bench.server import ServerProcess, batch_counters
from bench.tensors import write_tensor_bodies
from bench.zero_model import write_zero_cost_model
from contract import repository as model_repository
from contract.card import ModelCard

NAIVE_KINDS = {"default": "naive", "service": "naive-svc-opts"}  # --baseline-options → server name
# --unbatched: the service again with dynamic batching off (one image per session.run), so a run
# shows what batching adds apart from the rest of the service's structure.
UNBATCHED = "service-unbatched"
UNBATCHED_SETTINGS = {"MAX_BATCH_SIZE": "1"}
TASK_PATHS = {
    "classification": "/v1/classify",
    "segmentation": "/v1/segment",
    "pose": "/v1/pose",
    "detection": "/v1/detect",
    "detect+pose": "/v1/pose",  # no boxes: the service's detector finds the people first
    "tensors": "/v2/models/{model}/infer",  # the classifier's preprocessed rows, binary in and out
}
# `pose` times the pose model alone (the whole image as one person) even where a detector is loaded.
TASK_PARAMS = {"pose": {"detect": "false"}}
# Tasks of two models in one request: no in-process limit is measured for them.
COMPOSITE_TASKS = {"detect+pose"}
# Tasks whose requests carry tensors (Open Inference Protocol): only the service answers them, and
# their limit is session.run alone. Which model's task they run: the classifier's.
TENSOR_TASKS = {"tensors": "classification"}


@dataclass(frozen=True)
class TaskPlan:
    """How much of the run a task gets: segmentation is ~100× the classifier's cost per image."""

    requests_scale: float
    duration_scale: float
    limit_batch_sizes: tuple[int, ...]
    limit_min_images: int
    limit_max_seconds: float
    single_images: int  # images of the set timed one by one for the single-image figure


# Limit points of 64 images (0.7 s) moved 9 % between the measurements before and after a task's
# steps on a quiet 2-core machine; 192 images (2-3 s) and 24 single images steady the ratio.
PLANS = {
    "classification": TaskPlan(1.0, 1.0, (1, 2, 4, 8, 16), 192, 3.0, 24),
    "pose": TaskPlan(0.5, 1.0, (1, 2, 4, 8), 64, 3.0, 24),
    "segmentation": TaskPlan(0.05, 1.5, (1, 2), 6, 12.0, 5),
    # SSDLite at 320² is about a third of the classifier's multiply-adds at 224² plus NMS (not timed).
    "detection": TaskPlan(0.5, 1.0, (1, 2, 4, 8), 64, 3.0, 24),
    "detect+pose": TaskPlan(0.3, 1.0, (1,), 1, 1.0, 1),
    "tensors": TaskPlan(1.0, 1.0, (1, 2, 4, 8, 16), 384, 2.0, 24),
}


@dataclass
class Options:
    tasks: list[str]
    concurrency: list[int]
    duration_s: float
    requests: int
    baseline: bool
    out: Path
    models: Path
    url: str | None
    settings: dict[str, str]
    sizes: tuple[tuple[int, int], ...]
    per_size: int
    client_nice: int
    client_cpus: set[int] | None
    server_cpus: set[int] | None
    limit: bool
    command: str
    limit_seconds: float | None = None  # per (batch size, schedule); None: the task's plan
    # Session options of the naive servers: "default" (ONNX Runtime's) and/or "service" (app.runtime).
    baseline_options: tuple[str, ...] = ("default",)
    # Extra service servers: name → settings on top of --set ("unbatched": MAX_BATCH_SIZE=1).
    variants: dict[str, dict[str, str]] = field(default_factory=dict)
    repeats: int = 1  # each (task, clients) step this many times, the servers interleaved
    # The front end's own ceiling: the service on a zero-cost classifier, on 1 core and on all.
    ceiling: bool = False
    ceiling_clients: int = 16


def is_service(kind: str) -> bool:
    return kind == "service" or kind.startswith("service-")


class MachineCpu:
    """Busy CPU seconds of the whole machine, from /proc/stat."""

    @staticmethod
    def busy_seconds() -> float | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def find_models(repository: Path, settings: Settings) -> dict[str, tuple[ModelCard, Path]]:
    """task → (card, onnx path) of the model the service would answer the task with by default."""
    by_task: dict[str, list[tuple[ModelCard, Path]]] = {}
    for newest in model_repository.newest_versions(repository):
        try:
            card = ModelCard.read(newest.card_file)
        except Exception:
            continue
        by_task.setdefault(card.task, []).append((card, newest.model_file))
    chosen = {}
    for task, found in by_task.items():
        default = [f for f in found if f[0].name == settings.default_model(task)]
        pool = default or found
        chosen[task] = max(pool, key=lambda f: (f[0].created, f[0].version))
    if "pose" in chosen and "detection" in chosen:
        chosen["detect+pose"] = chosen["pose"]
    for task, model_task in TENSOR_TASKS.items():
        if model_task in chosen:
            chosen[task] = chosen[model_task]
    return chosen


def machine_info(client: str) -> dict[str, object]:
    info: dict[str, object] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "client": client,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def run_load(spec: LoadSpec, nice: int, cpus: set[int] | None) -> LoadResult:
    """Run the load generator in its own process (see `bench.load`)."""
    env = {**os.environ, "BENCH_CLIENT_NICE": str(nice)}
    answer = subprocess.run(
        [sys.executable, "-m", "bench.load"],
        input=json.dumps(asdict(spec)).encode(),
        capture_output=True,
        env=env,
        check=False,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    if answer.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{answer.stderr.decode(errors='replace')[-3000:]}")
    return LoadResult(**json.loads(answer.stdout))


class Runner:
    def __init__(self, options: Options, log: Callable[[str], None] = print) -> None:
        self.o = options
        self.log = log
        self.settings = Settings(**{k.lower(): v for k, v in options.settings.items()})  # type: ignore[arg-type]
        self.images: list[BenchImage] = []
        self.image_paths: list[str] = []
        self.tensor_bodies: dict[str, tuple[list[str], dict[str, str]]] = {}  # model → paths, headers

    def server_env(self) -> dict[str, str]:
        env = {"MODEL_REPOSITORY": str(self.o.models)}
        env.update({k.upper(): v for k, v in self.o.settings.items()})
        return env

    def step(
        self,
        server: str,
        url: str,
        task: str,
        model: str,
        concurrency: int,
        limit: Limit | None,
        pid_cpu: Callable[[], float | None],
        repeat: int = 0,
        requests: int | None = None,
    ) -> Step:
        plan = PLANS[task]
        if requests is None:
            requests = max(concurrency, round(self.o.requests * plan.requests_scale))
        timeout_s = self.settings.request_timeout_ms / 1e3 + 30
        if task in TENSOR_TASKS:
            bodies, headers = self.tensor_bodies[model]
            params = {}
        else:
            bodies, headers = self.image_paths, {"Content-Type": "image/jpeg"}
            params = {"model": model, **TASK_PARAMS.get(task, {})}
        spec = LoadSpec(
            url=url,
            path=TASK_PATHS[task].format(model=model),
            params=params,
            images=bodies,
            concurrency=concurrency,
            requests=requests,
            duration_s=self.o.duration_s * plan.duration_scale,
            timeout_s=timeout_s,
            warmup=1,
            headers=headers,
        )
        with httpx.Client(timeout=30) as http:
            before = batch_counters(http, url, model)
            server_cpu, busy, window = pid_cpu(), MachineCpu.busy_seconds(), time.perf_counter()
            result = run_load(spec, self.o.client_nice, self.o.client_cpus)
            server_cpu_after, busy_after = pid_cpu(), MachineCpu.busy_seconds()
            window = time.perf_counter() - window
            after = batch_counters(http, url, model)
        mean_batch = after.mean_since(before) if before and after and is_service(server) else None
        if not is_service(server):
            mean_batch = 1.0
        done = result.ok + sum(result.errors.values())
        wall = max(result.wall_s, 1e-9)
        server_cpu_s = server_cpu_after - server_cpu if server_cpu is not None and server_cpu_after else None
        other = None
        if busy is not None and busy_after is not None and server_cpu_s is not None:
            # The machine's busy CPU over the whole window, less the server's and the client's.
            other = max(0.0, (busy_after - busy) - server_cpu_s - result.total_cpu_s) / window
        lat = result.latencies_ms
        step = Step(
            server=server,
            task=task,
            model=model,
            concurrency=concurrency,
            sent=result.sent,
            ok=result.ok,
            errors=result.errors,
            wall_s=round(result.wall_s, 3),
            requests_per_s=done / wall,
            images_per_s=result.ok / wall,
            p50_ms=percentile(lat, 50),
            p95_ms=percentile(lat, 95),
            p99_ms=percentile(lat, 99),
            max_ms=max(lat) if lat else None,
            mean_batch=mean_batch,
            ratio_to_limit=(result.ok / wall) / limit.images_per_s if limit else None,
            ratio_to_bound=(result.ok / wall) / limit.parts.bound_images_per_s
            if limit and limit.parts
            else None,
            client_cpu_ms_per_request=result.cpu_s / done * 1e3 if done else None,
            server_cpu_ms_per_request=server_cpu_s / done * 1e3
            if server_cpu_s is not None and done
            else None,
            client_cpu_share=result.cpu_s / wall,
            server_cpu_share=server_cpu_s / wall if server_cpu_s is not None else None,
            other_cpu_share=other,
            error_samples=result.error_samples,
            repeat=repeat,
        )
        self.log(
            f"  {server:<17} {task:<14} c={concurrency:<3} {step.images_per_s:7.1f} img/s "
            f"(×{_fmt(step.ratio_to_limit)} limit) p50 {_fmt(step.p50_ms)} p99 {_fmt(step.p99_ms)} ms "
            f"batch {_fmt(step.mean_batch)} errors {result.errors or 0} "
            f"client {_fmt(step.client_cpu_ms_per_request)} ms CPU/req, other jobs {_fmt(other)} cores"
        )
        return step

    def limit(self, task: str, card: ModelCard, onnx: Path) -> Limit:
        plan = PLANS[task]
        # The batch sizes the service can form for this model (MAX_BATCH_SIZE, MAX_BATCH_PIXELS).
        cap = batch_limit(self.settings, card)
        sizes = [b for b in plan.limit_batch_sizes if b <= cap] or [1]
        previous = os.sched_getaffinity(0)
        if self.o.server_cpus:
            os.sched_setaffinity(0, self.o.server_cpus)
        try:
            if task in TENSOR_TASKS:
                return measure_run_limit(
                    card,
                    onnx,
                    self.settings,
                    sizes,
                    plan.limit_min_images,
                    self.o.limit_seconds or plan.limit_max_seconds,
                    task=task,
                    log=self.log,
                )
            return measure_limit(
                card,
                onnx,
                [image.data for image in self.images],
                self.settings,
                sizes,
                plan.limit_min_images,
                self.o.limit_seconds or plan.limit_max_seconds,
                single_images=plan.single_images,
                log=self.log,
            )
        finally:
            os.sched_setaffinity(0, previous)

    def write_tensor_bodies(self, card: ModelCard) -> None:
        if card.name not in self.tensor_bodies:
            self.tensor_bodies[card.name] = write_tensor_bodies(
                card,
                [image.data for image in self.images],
                self.settings.max_image_pixels,
                self.o.out / "tensors" / card.name,
            )

    def ceiling(self, classifier: Path) -> list[Step]:
        """The service on a zero-cost stand-in of the classifier (`bench.zero_model`), pinned to one
        core and given all of them, at `ceiling_clients`: JPEG and tensor requests, interleaved.

        What it spends per request there is its own cost, which bounds what it can feed a device
        that runs the real network in no time.
        """
        o = self.o
        repository = o.out / "zero-models"
        shutil.rmtree(repository, ignore_errors=True)
        zero = ModelCard.read(write_zero_cost_model(classifier, repository) / model_repository.CARD_FILE)
        self.write_tensor_bodies(zero)
        cores = sorted(o.server_cpus or os.sched_getaffinity(0))
        layouts = {"zero-cost, 1 core": {cores[0]}}
        if len(cores) > 1:
            layouts[f"zero-cost, {len(cores)} cores"] = set(cores)
        processes: dict[str, ServerProcess] = {}
        steps: list[Step] = []
        try:
            for name, cpus in layouts.items():
                # Every model there: the zero-cost one (a MODELS list names the real ones).
                env = {**self.server_env(), "MODEL_REPOSITORY": str(repository), "MODELS": ""}
                log = o.out / f"{name.replace(', ', '-').replace(' ', '-')}.log"
                processes[name] = process = ServerProcess(name, "app", env, cpus, log)
                self.log(f"starting the service on the zero-cost model, CPUs {sorted(cpus)} ...")
                process.start()
            names = list(layouts)
            for repeat in range(o.repeats):
                self.log(
                    "front-end ceiling" + (f", repeat {repeat + 1} of {o.repeats}" if o.repeats > 1 else "")
                )
                for task in ("classification", "tensors"):
                    shift = repeat % len(names)
                    for name in names[shift:] + names[:shift]:
                        process = processes[name]
                        steps.append(
                            self.step(
                                name,
                                process.url,
                                task,
                                zero.name,
                                o.ceiling_clients,
                                None,
                                process.cpu_seconds,
                                repeat,
                                requests=o.requests * 4,
                            )
                        )
        finally:
            for process in processes.values():
                process.stop()
        return steps

    def run(self) -> Report:
        o = self.o
        models = find_models(o.models, self.settings)
        missing = [t for t in o.tasks if t not in models]
        if missing and (o.limit or o.url is None):
            raise SystemExit(
                f"no {', '.join(missing)} model in the model repository {o.models}: build the default "
                "models first with `make models` (or point --models / MODEL_REPOSITORY at a repository)"
            )
        self.images = image_set(o.sizes, o.per_size)
        self.image_paths = [str(p) for p in write_images(self.images, o.out / "images")]
        machine = machine_info(
            f"bench.load (aiohttp{', uvloop' if _has('uvloop') else ''}) in its own process, "
            f"nice {o.client_nice}, CPUs {sorted(o.client_cpus) if o.client_cpus else 'any'}"
        )
        limits: dict[str, Limit] = {}
        limits_after: dict[str, Limit] = {}
        steps: list[Step] = []
        ceiling: list[Step] = []
        servers: list[ServerFigures] = []
        kinds = ["service"] + [f"service-{name}" for name in o.variants]
        if o.baseline:
            kinds += [NAIVE_KINDS[option] for option in o.baseline_options]
        # Every server runs for the whole run (idle ones cost memory, not CPU), so that each repeat
        # of a step visits them one after the other: the machine's drift lands on all of them.
        processes: dict[str, ServerProcess] = {}
        urls: dict[str, str] = {}
        pid_cpus: dict[str, Callable[[], float | None]] = {}
        try:
            for kind in kinds:
                if o.url and kind == "service":
                    urls[kind], pid_cpus[kind] = o.url.rstrip("/"), lambda: None
                    continue
                module = "app" if is_service(kind) else "bench.naive_server"
                env = self.server_env()
                if kind.startswith("service-"):
                    env.update(o.variants[kind.removeprefix("service-")])
                elif kind != "service":
                    env["NAIVE_SESSION_OPTIONS"] = next(k for k, v in NAIVE_KINDS.items() if v == kind)
                process = ServerProcess(kind, module, env, o.server_cpus, o.out / f"{kind}.log")
                processes[kind] = process
                self.log(f"starting the {kind} server ({module}) ...")
                ready = process.start()
                self.log(f"  ready in {ready:.2f} s, RSS {_fmt(process.rss_mib()[0], 0)} MiB")
                urls[kind], pid_cpus[kind] = process.url, process.cpu_seconds
            for task in o.tasks:
                card, onnx = models[task]
                if task in TENSOR_TASKS:
                    self.write_tensor_bodies(card)
                # Only the service answers the Open Inference Protocol.
                task_kinds = [k for k in kinds if is_service(k)] if task in TENSOR_TASKS else kinds
                measure = o.limit and task not in COMPOSITE_TASKS
                if measure:
                    self.log(f"limit of {task} ({card.name}), servers idle:")
                    limits[task] = self.limit(task, card, onnx)
                for repeat in range(o.repeats):
                    self.log(f"{task}" + (f", repeat {repeat + 1} of {o.repeats}" if o.repeats > 1 else ""))
                    for concurrency in o.concurrency:
                        # Rotated each repeat, so that no server always follows the same one.
                        shift = repeat % len(task_kinds)
                        for kind in task_kinds[shift:] + task_kinds[:shift]:
                            steps.append(
                                self.step(
                                    kind,
                                    urls[kind],
                                    task,
                                    card.name,
                                    concurrency,
                                    limits.get(task),
                                    pid_cpus[kind],
                                    repeat,
                                )
                            )
                if measure:
                    self.log(f"limit of {task} again, servers idle:")
                    limits_after[task] = self.limit(task, card, onnx)
            if o.ceiling and "classification" in models:
                ceiling = self.ceiling(models["classification"][1].parent)
        finally:
            for kind in kinds:
                if kind in processes:
                    started = processes[kind]
                    now, peak = started.rss_mib()
                    servers.append(ServerFigures(kind, started.url, started.ready_s, peak, now))
                    started.stop()
                elif o.url and kind == "service":
                    servers.append(ServerFigures(kind, o.url, None, None, None))
        steps.sort(key=lambda s: (o.tasks.index(s.task), kinds.index(s.server), s.concurrency, s.repeat))
        # The ratio uses the mean of the limits measured before and after each task's steps.
        for task, before in limits.items():
            after = limits_after.get(task)
            mean = (before.images_per_s + after.images_per_s) / 2 if after else before.images_per_s
            for step in steps:
                if step.task == task:
                    step.ratio_to_limit = step.images_per_s / mean
        machine["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
        report = Report(
            command=o.command,
            machine=machine,
            settings=self.server_env(),
            images=[f"{i.name} ({len(i.data) // 1024} KiB)" for i in self.images],
            limits=limits,
            limits_after=limits_after,
            servers=servers,
            steps=steps,
            targets=[],
            ceiling=ceiling,
        )
        report.targets = evaluate_targets(report, self.settings)
        return report


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def limit_mean(report: Report, task: str) -> float | None:
    before, after = report.limits.get(task), report.limits_after.get(task)
    if before is None:
        return None
    return (before.images_per_s + after.images_per_s) / 2 if after else before.images_per_s


def evaluate_targets(report: Report, settings: Settings) -> list[Target]:
    """The issue's targets, checked against this run's figures (None where not measured)."""
    targets: list[Target] = []

    def repeats(server: str, task: str, concurrency: int) -> list[Step]:
        return [s for s in report.steps if (s.server, s.task, s.concurrency) == (server, task, concurrency)]

    def find(server: str, task: str, concurrency: int) -> Step | None:
        """The repeat of median throughput (a measured step, so its figures belong together)."""
        return median_step(repeats(server, task, concurrency))

    for task in ("classification", "tensors", "segmentation", "pose"):
        step = find("service", task, 16)
        if step is not None and step.ratio_to_limit is not None:
            targets.append(
                Target(
                    f"{task}, 16 clients: × " + ("session.run alone" if task in TENSOR_TASKS else "limit"),
                    "≥ 0.85",
                    f"{step.ratio_to_limit:.2f} ({step.images_per_s:.1f} / {limit_mean(report, task):.1f} img/s)",
                    step.ratio_to_limit >= 0.85,
                )
            )
        if step is not None and step.ratio_to_bound is not None:
            targets.append(
                Target(
                    f"{task}, 16 clients: × pipelined bound",
                    "≥ 0.85",
                    f"{step.ratio_to_bound:.2f}",
                    step.ratio_to_bound >= 0.85,
                )
            )
        naive = find("naive", task, 16)
        if task == "classification" and step is not None and naive is not None and naive.images_per_s > 0:
            ratio = step.images_per_s / naive.images_per_s
            targets.append(
                Target(
                    "classification, 16 clients: × naive server",
                    "≥ 1.5",
                    f"{ratio:.2f} ({step.images_per_s:.1f} / {naive.images_per_s:.1f} img/s)",
                    ratio >= 1.5,
                )
            )
        same_options = find("naive-svc-opts", task, 16)
        if task == "classification" and step is not None and same_options is not None:
            ratio = step.images_per_s / max(same_options.images_per_s, 1e-9)
            targets.append(
                Target(
                    "classification, 16 clients: × naive server with the service's session options",
                    "(no target: what batching adds on this CPU)",
                    f"{ratio:.2f} ({step.images_per_s:.1f} / {same_options.images_per_s:.1f} img/s)",
                    None,
                )
            )
        unbatched = find(UNBATCHED, task, 16)
        if step is not None and unbatched is not None:
            ratio = step.images_per_s / max(unbatched.images_per_s, 1e-9)
            targets.append(
                Target(
                    f"{task}, 16 clients: × the service with batching off",
                    "(no target: what dynamic batching adds)",
                    f"{ratio:.2f} ({step.images_per_s:.1f} / {unbatched.images_per_s:.1f} img/s)",
                    None,
                )
            )
        single = find("service", task, 1)
        limit, after = report.limits.get(task), report.limits_after.get(task)
        if single is not None and single.p50_ms is not None and limit is not None:
            single_ms = (
                (limit.single_image_ms + after.single_image_ms) / 2 if after else limit.single_image_ms
            )
            bound = single_ms + 3
            targets.append(
                Target(
                    f"{task}, 1 client: p50",
                    f"≤ single image + 3 ms = {bound:.1f} ms",
                    f"{single.p50_ms:.1f} ms",
                    single.p50_ms <= bound,
                )
            )
        crowd = repeats("service", task, 64)  # every repeat: the worst of them counts
        if crowd:
            errors: dict[str, int] = {}
            for repeat in crowd:
                for code, count in repeat.errors.items():
                    errors[code] = errors.get(code, 0) + count
            others = {k: v for k, v in errors.items() if k != "503"}
            targets.append(
                Target(f"{task}, 64 clients: errors other than 503", "none", _errors_text(errors), not others)
            )
            p99s = [repeat.p99_ms for repeat in crowd if repeat.p99_ms is not None]
            if p99s:
                targets.append(
                    Target(
                        f"{task}, 64 clients: p99",
                        f"≤ deadline {settings.request_timeout_ms:.0f} ms",
                        f"{max(p99s):.0f} ms",
                        max(p99s) <= settings.request_timeout_ms,
                    )
                )
    for server in report.servers:
        if server.kind != "service":
            continue
        if server.peak_rss_mib is not None:
            targets.append(
                Target(
                    "service peak RSS",
                    "≤ 1024 MiB",
                    f"{server.peak_rss_mib:.0f} MiB",
                    server.peak_rss_mib <= 1024,
                )
            )
        if server.ready_s is not None:
            targets.append(
                Target("service ready after start", "≤ 10 s", f"{server.ready_s:.2f} s", server.ready_s <= 10)
            )
    return targets


def _errors_text(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}×{v}" for k, v in sorted(errors.items())) or "none"


def main(options: Options) -> Report:
    started = time.monotonic()
    report = Runner(options).run()
    paths = write(report, options.out)
    from bench.report import markdown

    print()
    print(markdown(report))
    print(f"wrote {', '.join(str(p) for p in paths.values())} in {time.monotonic() - started:.0f} s")
    return report
