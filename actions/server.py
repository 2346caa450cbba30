"""The action server: rasa_sdk's app with our logging, bound to the configured interface only
(the actions see customers' orders: they must never be reachable from outside), and answering only
the Rasa server, which shows the shared secret (settings.action_secret) on every call."""
from __future__ import annotations

import hmac
import logging

from bot.log_format import configure
from bot.service import address, serve
from bot.settings import get_settings

OPEN_ROUTES = {("GET", "/health")}


def require_secret(app, secret: str) -> None:
    """rasa_sdk has no authentication: without this, anything that reaches the port could run any
    action for any customer (their orders, tickets, addresses). Every request except GET /health
    must carry `Authorization: Bearer <secret>`: 401 without it, 403 with a wrong one."""
    from sanic.response import json

    expected = f"Bearer {secret}".encode()

    @app.middleware("request")
    async def authenticate(request):
        if (request.method, request.path) in OPEN_ROUTES:
            return None
        given = request.headers.get("Authorization")
        if not given:
            return json({"error": "authentication required"}, status=401, headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.encode(), expected):
            return json({"error": "wrong credentials"}, status=403)
        return None


def main() -> None:
    settings = get_settings()
    args = address("Siyu action server", settings.action_port)
    configure(settings.log_level, settings.log_format, process_name="actions")
    if settings.action_secret is None or not settings.action_secret.get_secret_value():
        raise SystemExit("[actions] SIYU_ACTION_SECRET is not set: the action server does not serve without it "
                         "(`python -m bot run` makes one per start; give the Rasa server the same one)")

    from rasa_sdk.endpoint import create_app

    app = create_app("actions")
    require_secret(app, settings.action_secret.get_secret_value())
    logging.getLogger(__name__).info("action server on %s:%s", args.host, args.port)
    serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
