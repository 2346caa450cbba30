"""The WeChat gateway: its own process, where the platform's callbacks arrive and replies leave.

    platform --callback--> gateway (verify, durable inbox, ack) --relay--> Rasa server (answers)
    platform <--send API-- gateway (outbox, windows, tokens)   <-- replies --'

The gateway does everything WeChat needs around a turn (signatures, AES, the inbox, reply windows,
identities, the outbox and the platform calls); the Rasa server only answers, exactly as it does
for the web IM. So the Rasa process spends the same CPU on a WeChat message as on an IM message,
and the connectors' bookkeeping runs on another core instead of queueing behind the model.

Callback URLs: http(s)://<host>:<SIYU_WECHAT_PORT>/webhooks/<connector>/webhook (wecom_kf,
wechat_mp, wechat_mini, wecom_group; docs/WECHAT_SETUP.md). One process: the SQLite default has one
writer, and the platform's rates are far below what one gateway handles.

    python -m channels.wechat.gateway [--host H] [--port P]   (python -m bot run starts it)
"""
from __future__ import annotations

import logging

from sanic import Sanic, response

from bot.log_format import configure
from bot.service import address, serve
from bot.settings import get_settings

logger = logging.getLogger("channels.wechat.gateway")


async def _unused_on_new_message(_message) -> None:
    raise RuntimeError("the gateway does not answer itself: the Rasa server does, over its relay channel")


def create_app(runtime=None, name: str = "siyu_wechat_gateway") -> Sanic:
    """The connectors' routes on a Sanic app; `runtime` is shared by them (a fresh one by default)."""
    from channels.wechat.inbound.connectors import MiniProgramInput, OfficialAccountInput, WeComGroupInput, WeComKfInput
    from channels.wechat.runtime import WeChatRuntime

    runtime = runtime or WeChatRuntime()
    app = Sanic(name)
    app.ctx.wechat = runtime
    for channel in (WeComKfInput(runtime), OfficialAccountInput(runtime), MiniProgramInput(runtime),
                    WeComGroupInput(runtime)):
        app.blueprint(channel.blueprint(_unused_on_new_message), url_prefix=f"/webhooks/{channel.name()}")

    @app.get("/health")
    async def health(_request):
        return response.json({"status": "ok" if runtime.started else "starting",
                              "connectors": runtime.config.configured_names()})

    return app


def main() -> None:
    settings = get_settings()
    args = address("Siyu WeChat gateway", settings.wechat_port)
    configure(settings.log_level, settings.log_format, process_name="wechat")
    app = create_app()
    logger.info("wechat gateway on %s:%s, answers from %s", args.host, args.port, settings.rasa_url)
    serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
