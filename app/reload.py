"""Hot reload: another version of a served model is loaded and warmed beside the current one, then
swapped in with one assignment on the event loop; requests that already hold the old version
finish on it, and only then is its session closed.

Triggers: `POST /v1/models/{name}/reload` (an admin; newest version, or `?version=`), and a poll
of the repository every RELOAD_INTERVAL_S for a version newer than the one serving (models pinned
by `MODELS=name:version` excepted). A version that fails to load (bad hash, broken ONNX, a card
that does not match) leaves the current one serving; the reason goes to the log, to
`/readyz` (`reload_error`) and to the reload's answer (409). The poll does not retry a failed
version until its files change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from pathlib import Path

from app.config import Settings
from app.errors import ModelNotFound, ModelNotReady, ServiceError
from app.registry import ModelEntry, ModelLoadError, ModelRegistry
from app.schemas import ReloadResponse
from contract import repository
from contract.repository import CARD_FILE, MODEL_FILE

logger = logging.getLogger(__name__)

Signature = tuple[int, tuple[int, int] | None, tuple[int, int] | None]


class ReloadFailed(ServiceError):
    """The requested version cannot be served; the current one keeps serving."""

    status, code = 409, "reload_failed"


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _signature(version: int, version_dir: Path) -> Signature:
    """What a version folder looks like now; a failed version is retried only when this changes."""
    return version, _stat(version_dir / CARD_FILE), _stat(version_dir / MODEL_FILE)


class ModelReloader:
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._failed: dict[str, Signature] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._pinned = {
            name for name, version in map(repository.parse_model_spec, settings.models) if version is not None
        }

    # -- the repository --------------------------------------------------------------------------

    def _model_dir(self, name: str) -> Path | None:
        """The folder of a served model, found by listing the repository (a name is never a path)."""
        return repository.model_dirs(self.settings.model_repository).get(name)

    def _available(self, name: str) -> tuple[Path, list[int]]:
        model_dir = self._model_dir(name)
        if model_dir is None:
            raise ReloadFailed(f"no folder {name!r} in the model repository {self.settings.model_repository}")
        return model_dir, repository.versions(model_dir)

    # -- reloading -------------------------------------------------------------------------------

    async def reload(self, name: str, version: int | None = None) -> ReloadResponse:
        """Serve `version` (default: the newest on disk) of model `name`.

        Raises `ModelNotFound` (404), `ModelNotReady` (503, still loading at start) or
        `ReloadFailed` (409, the version cannot be loaded; the current one keeps serving).
        """
        if name not in self.registry.entries:
            raise ModelNotFound(f"no model named {name[:200]!r}; GET /v1/models lists them")
        async with self._locks[name]:
            current = self.registry.entries[name]
            if current.state == "loading":
                raise ModelNotReady.loading(name)
            model_dir, versions = self._available(name)
            target = version if version is not None else (versions[-1] if versions else None)
            if target is None or target not in versions:
                reason = f"version {target} not found (have {versions})"
                raise self._failure(current, target, reason)
            if target == current.version and current.state == "ready":
                return ReloadResponse(
                    name=name, version=target, previous_version=current.version, reloaded=False, load_ms=None
                )
            return await self._swap(current, target, model_dir / str(target))

    async def unload(self, name: str) -> None:
        """Stop serving `name` (Triton's repository unload): its requests finish, new ones get 503.

        The model stays listed (state `unloaded`) and does not count against readiness; `reload`
        serves it again. Raises `ModelNotFound` (404) or `ModelNotReady` (503, still loading).
        """
        if name not in self.registry.entries:
            raise ModelNotFound(f"no model named {name[:200]!r}; GET /v1/models lists them")
        async with self._locks[name]:
            current = self.registry.entries[name]
            if current.state == "loading":
                raise ModelNotReady(f"model {name} is still loading", headers={"Retry-After": "5"})
            if current.state == "unloaded":
                return
            placeholder = ModelEntry(
                name, current.version, current.path, current.metrics, state="unloaded", card=current.card
            )
            self.registry.entries[name] = placeholder
            logger.info("model unloaded name=%s version=%s", name, current.version)
            if current.state == "ready":
                self._retire(current)

    def _failure(self, current: ModelEntry, version: int | None, reason: str) -> ReloadFailed:
        current.reload_error = f"version {version}: {reason}"
        logger.error(
            "model reload failed name=%s version=%s serving=%s reason=%s",
            current.name, version, current.version if current.state == "ready" else None, reason,
        )  # fmt: skip
        still = (
            f"version {current.version} keeps serving" if current.state == "ready" else "nothing serves it"
        )
        return ReloadFailed(f"model {current.name} version {version} cannot be loaded ({still}): {reason}")

    async def _swap(self, current: ModelEntry, version: int, path: Path) -> ReloadResponse:
        registry = self.registry
        assert registry.plan is not None, "models are reloaded only after the first load"
        fresh = ModelEntry(current.name, version, path, registry.metrics.for_model(current.name, version))
        try:
            run_seconds = await asyncio.to_thread(registry.load_one, fresh, registry.plan)
        except ModelLoadError as exc:
            raise self._failure(current, version, str(exc)) from exc
        except Exception as exc:  # a bug, but the current version must keep serving
            logger.exception("reloading %s failed unexpectedly", current.name)
            raise self._failure(current, version, f"unexpected error: {exc!r}") from exc
        registry.start_serving(fresh, run_seconds)
        registry.entries[current.name] = fresh  # the swap: new requests resolve the new version
        logger.info(
            "model reloaded name=%s version=%s previous_version=%s load_ms=%.0f",
            fresh.name, version, current.version, (fresh.load_seconds or 0) * 1e3,
        )  # fmt: skip
        self._retire(current)
        return ReloadResponse(
            name=fresh.name,
            version=version,
            previous_version=current.version,
            reloaded=True,
            load_ms=round((fresh.load_seconds or 0) * 1e3, 1),
        )

    def _retire(self, old: ModelEntry) -> None:
        """Let the old version finish what it holds, then close it (in the background)."""
        old.metrics.set_ready(False)

        async def retire() -> None:
            if old.batcher is not None:
                await old.batcher.drain(self.settings.request_timeout_ms / 1e3)
            old.session = None

        task = asyncio.get_running_loop().create_task(retire(), name=f"retire-{old.name}-{old.version}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    # -- polling ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Poll the repository every RELOAD_INTERVAL_S (when it is not 0)."""
        if self.settings.reload_interval_s > 0:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="reload-poller")

    async def stop(self) -> None:
        for task in [*([self._poller] if self._poller else []), *self._retiring]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            for name in list(self.registry.entries):
                try:
                    await self.poll_once(name)
                except Exception:  # the poller must outlive any one model's trouble
                    logger.exception("polling the repository for %s failed", name)

    async def poll_once(self, name: str) -> None:
        """Reload `name` if the repository has a newer version (or the current one failed to load)."""
        entry = self.registry.entries[name]
        if name in self._pinned or entry.state in ("loading", "unloaded") or self._locks[name].locked():
            return
        model_dir = self._model_dir(name)
        versions = repository.versions(model_dir) if model_dir is not None else []
        if model_dir is None or not versions:
            return
        newest = versions[-1]
        if entry.state == "ready" and newest <= (entry.version or 0):
            return
        signature = _signature(newest, model_dir / str(newest))
        if self._failed.get(name) == signature:
            return
        started = time.perf_counter()
        try:
            await self.reload(name, newest)
        except ReloadFailed:
            self._failed[name] = signature
        else:
            self._failed.pop(name, None)
            logger.info("repository poll reloaded %s in %.0f ms", name, (time.perf_counter() - started) * 1e3)
