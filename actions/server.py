"""The action server: rasa_sdk's app with our logging, bound to the configured interface only
(the actions see customers' orders: they must never be reachable from outside)."""
from __future__ import annotations

import argparse
import logging

from bot.log_format import configure
from bot.settings import get_settings


def main() -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description="Siyu action server")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.action_port)
    args = parser.parse_args()
    configure(settings.log_level, settings.log_format, process_name="actions")

    from rasa_sdk.endpoint import create_app

    app = create_app("actions")

    @app.listener("after_server_stop")
    async def _close_db(_app, _loop):
        from actions.db.engine import dispose_async_engines

        await dispose_async_engines()

    logging.getLogger(__name__).info("action server on %s:%s", args.host, args.port)
    app.run(host=args.host, port=args.port, workers=1, access_log=False, motd=False)


if __name__ == "__main__":
    main()
