"""`python -m app` / `mnv2-serve`: start uvicorn with the settings from the environment."""

from __future__ import annotations

import logging
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
    import uvicorn

    from app.main import create_app

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
