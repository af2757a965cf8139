"""`python -m app` / `mnv2-serve`: start uvicorn with the settings from the environment."""

from __future__ import annotations

import sys

from app.config import Settings, settings_help


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
    from app.shutdown import serve

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)  # JSON lines by default
    serve(create_app(settings), settings)  # drains on SIGTERM (SHUTDOWN_DRAIN_S, SHUTDOWN_GRACE_S)


if __name__ == "__main__":
    main()
