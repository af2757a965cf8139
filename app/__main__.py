"""`python -m app` / `mnv2-serve`: start uvicorn with the settings from the environment."""

from __future__ import annotations

import ctypes
import sys

from pydantic import ValidationError

from app.config import Settings, settings_error, settings_help

MMAP_THRESHOLD_BYTES = 4 << 20
TRIM_THRESHOLD_BYTES = 16 << 20


def give_back_large_allocations() -> None:
    """glibc: allocate every block of 4 MiB or more with mmap, so that freeing it returns it, and
    keep up to 16 MiB free at the top of each heap instead of 128 KiB.

    By default glibc raises the mmap threshold to the size of each large block freed (up to
    32 MiB), and Pillow allocates images in 16 MiB blocks: after one burst of large images, the
    next ones came from the heap, which never shrank (24 overlays of 6300² left 4.4 GB resident
    when idle). Fixing the threshold also pins the trim threshold at 128 KiB, and then every
    request body and decoded image (0.1-4 MB) was handed back and faulted in again: ~170 page
    faults and ~0.5 ms of system CPU per request (bench/PERFORMANCE.md).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl has no such threshold)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt's; setting them turns the adjustment off
    libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD_BYTES)
    libc.mallopt(m_trim_threshold, TRIM_THRESHOLD_BYTES)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print("usage: python -m app   (or mnv2-serve)\n\nServes the models of MODEL_REPOSITORY over HTTP.\n")
        print(settings_help())
        return
    if args:
        sys.exit(f"unexpected arguments {args}; configure with environment variables (see --help)")
    from app.main import create_app
    from app.observability import configure_logging
    from app.runtime import DeviceUnavailable, plan_device
    from app.shutdown import listen, serve

    try:
        settings = Settings()
    except ValidationError as exc:  # one line per bad setting, not pydantic's traceback
        sys.exit(settings_error(exc))
    give_back_large_allocations()
    configure_logging(settings.log_level, settings.log_format)  # JSON lines by default
    try:
        listener = listen(settings)  # before any model loads: a taken port is said at once
    except OSError as exc:
        sys.exit(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}; "
            "set PORT (or HOST) to a free address"
        )
    try:
        plan = plan_device(settings)  # logs the provider the sessions use, and why
    except DeviceUnavailable as exc:
        sys.exit(f"{exc}; DEVICE=auto or DEVICE=cpu serves on the CPU")
    try:  # drains on SIGTERM (SHUTDOWN_DRAIN_S, SHUTDOWN_GRACE_S)
        serve(create_app(settings, plan), settings, listener)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C after its graceful shutdown: no traceback
        sys.exit(130)


if __name__ == "__main__":
    main()
