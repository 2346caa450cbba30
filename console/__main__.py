"""python -m console: the support console on SIYU_HOST:SIYU_CONSOLE_PORT (started and supervised by
`python -m bot run`)."""
from __future__ import annotations

import logging

from aiohttp import web

from bot.log_format import configure
from bot.settings import get_settings
from console.app import create_app


def main() -> None:
    settings = get_settings()
    configure(settings.log_level, process_name="console")
    logging.getLogger("console").info("console listening", extra={"port": settings.console_port})
    web.run_app(create_app(settings), host=settings.host, port=settings.console_port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
