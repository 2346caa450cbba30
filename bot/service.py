"""What the product's own Sanic servers (the action server, the WeChat gateway) share: the
address they listen on, and closing their database engines when they stop."""
from __future__ import annotations

import argparse

from bot.settings import get_settings


def address(description: str, default_port: int) -> argparse.Namespace:
    """--host (default: the configured interface) and --port from the command line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default=get_settings().host)
    parser.add_argument("--port", type=int, default=default_port)
    return parser.parse_args()


def serve(app, host: str, port: int) -> None:
    """Run `app` in this process (one worker) until it is stopped, then close the database engines."""

    @app.listener("after_server_stop")
    async def _close_db(_app, _loop):
        from actions.db.engine import dispose_async_engines

        await dispose_async_engines()

    app.run(host=host, port=port, workers=1, access_log=False, motd=False)
