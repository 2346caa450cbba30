"""The action server: rasa_sdk's app with our logging, bound to the configured interface only
(the actions see customers' orders: they must never be reachable from outside)."""
from __future__ import annotations

import logging

from bot.log_format import configure
from bot.service import address, serve
from bot.settings import get_settings


def main() -> None:
    settings = get_settings()
    args = address("Siyu action server", settings.action_port)
    configure(settings.log_level, settings.log_format, process_name="actions")

    from rasa_sdk.endpoint import create_app

    app = create_app("actions")
    logging.getLogger(__name__).info("action server on %s:%s", args.host, args.port)
    serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
