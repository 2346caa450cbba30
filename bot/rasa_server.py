"""`rasa run` with two hot spots of Rasa 3.6 removed (found by profiling the server under load;
behaviour is unchanged, see tests/data_layer/test_rasa_speedups.py):

- every action-server response is validated with `jsonschema.validate`, which first re-checks the
  constant schema against the JSON-Schema meta-schema on every call (~17 % of the server's CPU);
  we build the validator once and apply the same schema;
- every event read from the tracker store looks up its class by walking all subclasses of
  `Event` (`Event.resolve_by_type`), hundreds of thousands of calls per minute; we keep a map from
  type name to class and rebuild it when a name is not found;
- every call to the action server opens a new HTTP client session and TCP connection; we keep one
  session per endpoint and event loop, with keep-alive shorter than the action server's so an idle
  connection is always dropped by us first;
- every NLU parse and every policy prediction runs the model graph through dask's scheduler; the
  graphs are small chains, so we run the same nodes in the same topological order directly;
- several Sanic workers share one listening socket, so one worker can end up with every
  keep-alive connection; each worker gets its own SO_REUSEPORT socket (install_balanced_workers);
- several workers starting on a new database race to create the tracker store's tables, and Rasa
  makes the loser sleep 5 s; the tables are created once before the workers fork.

Whether or not the speed-ups are on (settings.rasa_speedups), it also makes sure customers get a
short apology instead of an empty reply while the action server is down or restarting
(install_service_unavailable_reply).

Usage (the run command does this): python -m bot.rasa_server run --model ... (any `rasa` args)
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import sys

logger = logging.getLogger("bot.rasa_server")


def _install_cached_action_validation() -> None:
    from jsonschema import ValidationError
    from jsonschema.validators import validator_for
    from rasa.core.actions.action import RemoteAction
    from rasa.shared.constants import DOCS_BASE_URL

    @functools.lru_cache(maxsize=1)
    def validator():
        schema = RemoteAction.action_response_format_spec()
        cls = validator_for(schema)
        cls.check_schema(schema)
        return cls(schema)

    def _validate_action_result(self, result):
        try:
            validator().validate(result)
            return True
        except ValidationError as e:
            e.message += (". Failed to validate Action server response from API, make sure your response from "
                          f"the Action endpoint is valid. For more information about the format visit "
                          f"{DOCS_BASE_URL}/custom-actions")
            raise e

    RemoteAction._validate_action_result = _validate_action_result


def _install_event_type_cache() -> None:
    import rasa.shared.utils.common
    from rasa.shared.core.events import Event

    by_name: dict = {}
    original = Event.resolve_by_type

    def resolve_by_type(type_name, default=None):
        cls = by_name.get(type_name)
        if cls is None:
            by_name.clear()
            for subclass in rasa.shared.utils.common.all_subclasses(Event):
                by_name.setdefault(subclass.type_name, subclass)
            cls = by_name.get(type_name)
        if cls is None:
            return original(type_name, default)
        return cls

    Event.resolve_by_type = staticmethod(resolve_by_type)


class _SharedSession:
    """Looks like a fresh `aiohttp.ClientSession` to `async with`, but is not closed on exit."""

    def __init__(self, session) -> None:
        self._session = session

    async def __aenter__(self):
        return self._session

    async def __aexit__(self, *exc) -> bool:
        return False


def _install_shared_endpoint_sessions() -> None:
    import asyncio

    import aiohttp
    from rasa.utils.endpoints import EndpointConfig

    original = EndpointConfig.session
    sessions: dict = {}

    def session(self):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return original(self)
        key = (id(self), id(loop))
        shared = sessions.get(key)
        if shared is None or shared.closed:
            fresh = original(self)
            # Sanic (the action server) closes idle keep-alive connections after 5 s: close ours at 2 s
            connector = aiohttp.TCPConnector(keepalive_timeout=2, limit=100)
            shared = aiohttp.ClientSession(headers=fresh.headers,
                                           auth=fresh._default_auth, timeout=fresh.timeout, connector=connector)
            loop.create_task(fresh.close())
            sessions[key] = shared
        return _SharedSession(shared)

    EndpointConfig.session = session


def _install_sequential_graph_runner() -> None:
    from rasa.engine.exceptions import GraphRunError
    from rasa.engine.runner.dask import DaskGraphRunner

    def plan(self, targets):
        cache = self.__dict__.setdefault("_siyu_plans", {})
        if targets not in cache:
            schema = self._graph_schema.minimal_graph_schema(list(targets))
            order, seen = [], set()

            def visit(name):
                if name in seen or name not in schema.nodes:
                    return
                seen.add(name)
                for dependency in schema.nodes[name].needs.values():
                    visit(dependency)
                order.append(name)

            for target in targets:
                visit(target)
            cache[targets] = (schema, order)
        return cache[targets]

    def run(self, inputs=None, targets=None):
        run_targets = tuple(targets if targets else self._graph_schema.target_names)
        schema, order = plan(self, run_targets)
        results = {}
        for name, value in (inputs or {}).items():
            if isinstance(value, str) and value in schema.nodes:
                raise GraphRunError(f"Input value '{value}' clashes with a node name.")
            results[name] = (name, value)
        try:
            for name in order:
                needs = schema.nodes[name].needs.values()
                results[name] = self._instantiated_nodes[name](*(results[n] for n in needs))
        except RuntimeError as e:
            raise GraphRunError("Error running runner.") from e
        return dict(results[t] for t in run_targets)

    DaskGraphRunner.run = run


def install_balanced_workers() -> None:
    """Sanic 21.12 has its workers share one listening socket. The worker that wakes first accepts
    a whole burst of new connections (uvloop accepts until none is left), and keep-alive connections
    (web IM clients, the WeChat gateway's relay pool) stay with the worker they landed on: in one
    benchmark round one worker served 94 % of the load while the other idled, halving the scaled
    deployment's capacity. Each worker binds its own SO_REUSEPORT socket on the same port instead,
    and the kernel spreads new connections over them. The tracker store's tables are created
    before the workers fork (bot.stores.create_tracker_tables), so they do not race to create them."""
    import asyncio
    import os
    import socket
    from multiprocessing import get_context
    from signal import SIGINT, SIGTERM, Signals, signal

    import sanic.app
    from sanic.log import logger
    from sanic.server import runners
    from sanic.server.events import trigger_events

    original = runners.serve_multiple
    if not hasattr(socket, "SO_REUSEPORT") or getattr(original, "balanced", False):
        return

    def serve_multiple(server_settings, workers):
        if server_settings.get("sock") is not None or server_settings.get("unix"):
            return original(server_settings, workers)
        # what Sanic's serve_multiple does, less the shared socket: each worker's serve() binds
        # host:port itself with reuse_port
        server_settings["reuse_port"] = True
        server_settings["run_multiple"] = True
        from bot.stores import create_tracker_tables

        create_tracker_tables()
        main_start = server_settings.pop("main_start", None)
        main_stop = server_settings.pop("main_stop", None)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        trigger_events(main_start, loop)
        processes = []

        def stop(signal, _frame):
            logger.info("Received signal %s. Shutting down.", Signals(signal).name)
            for process in processes:
                os.kill(process.pid, SIGTERM)

        signal(SIGINT, stop)
        signal(SIGTERM, stop)
        for _ in range(workers):
            process = get_context("fork").Process(target=runners.serve, kwargs=server_settings)
            process.daemon = True
            process.start()
            processes.append(process)
        for process in processes:
            process.join()
        for process in processes:
            process.terminate()
        trigger_events(main_stop, loop)
        loop.close()

    serve_multiple.balanced = True
    sanic.app.serve_multiple = serve_multiple


def action_server_unreachable(exc: BaseException) -> bool:
    """Whether `exc`, raised by Rasa's RemoteAction, means the action server did not answer: no
    connection, a timeout or a 5xx. Not a rejection (400) or any other error."""
    import aiohttp
    from rasa.utils.endpoints import ClientResponseError

    while exc is not None:
        if isinstance(exc, ClientResponseError):
            return exc.status >= 500
        if isinstance(exc, (aiohttp.ClientConnectionError, asyncio.TimeoutError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _session_start_without_action_server() -> list:
    """What actions/session.py returns when it cannot look the customer up: the shop's names and
    persona (the responses use them) and no customer (every action looks the customer up itself)."""
    from rasa.shared.core.constants import ACTION_LISTEN_NAME
    from rasa.shared.core.events import ActionExecuted, SessionStarted, SlotSet

    from bot.settings import get_settings

    shop = get_settings().shop
    return [SessionStarted(), SlotSet("persona", shop.persona), SlotSet("shop_name", shop.name),
            SlotSet("bot_name", shop.bot_name), ActionExecuted(ACTION_LISTEN_NAME)]


_running_action = contextvars.ContextVar("siyu_running_action", default=False)


def install_service_unavailable_reply() -> None:
    """While the action server is down or restarting, Rasa logs each failed custom action and goes
    on with no events: the customer gets an empty reply. Instead, a custom action or a form that
    cannot reach the action server, or gets no answer within settings.action_call_timeout_s, says
    utter_service_unavailable and ends the turn, so there is one apology per turn. A form is given
    up whole at its first failed call (as Rasa does with any failing action), so it keeps its state
    and the message sent again is handled normally. A session the action server cannot start is
    started here, silently, with the shop's defaults."""
    from rasa.core.actions.action import ActionBotResponse, ActionExecutionRejection, RemoteAction
    from rasa.core.actions.forms import FormAction
    from rasa.shared.core.constants import ACTION_LISTEN_NAME, ACTION_SESSION_START_NAME
    from rasa.shared.core.events import FollowupAction

    from bot.settings import get_settings

    def apologising(run):
        if getattr(run, "apologising", False):
            return run

        @functools.wraps(run)
        async def run_or_apologise(self, output_channel, nlg, tracker, domain):
            if _running_action.get():  # called by a form: the form answers for the whole turn
                return await run(self, output_channel, nlg, tracker, domain)
            token = _running_action.set(True)
            try:
                # Rasa waits 300 s for the action server; a hung one must not keep the customer that long
                return await asyncio.wait_for(run(self, output_channel, nlg, tracker, domain),
                                              get_settings().action_call_timeout_s)
            except Exception as exc:  # noqa: BLE001 - anything else is raised again, as it was
                if isinstance(exc, ActionExecutionRejection) or not action_server_unreachable(exc):
                    raise
                logger.error("action server unreachable while running %s (%s: %s)", self.name(),
                             type(exc).__name__, exc)
                if self.name() == ACTION_SESSION_START_NAME:
                    return _session_start_without_action_server()
                apology = await ActionBotResponse("utter_service_unavailable").run(output_channel, nlg, tracker,
                                                                                    domain)
                return apology + [FollowupAction(ACTION_LISTEN_NAME)]
            finally:
                _running_action.reset(token)

        run_or_apologise.apologising = True
        return run_or_apologise

    RemoteAction.run = apologising(RemoteAction.run)
    FormAction.run = apologising(FormAction.run)


def install() -> None:
    """The speed-ups (settings.rasa_speedups)."""
    _install_cached_action_validation()
    _install_event_type_cache()
    _install_shared_endpoint_sessions()
    _install_sequential_graph_runner()
    install_balanced_workers()


def _keep_product_logging() -> None:
    """Rasa installs coloured console logging on the root logger after it has applied
    --logging-config-file, which would replace our masked JSON lines (bot/logging.yml)."""
    import rasa.utils.io

    rasa.utils.io.configure_colored_logging = lambda *args, **kwargs: None


def main() -> None:
    from bot.settings import get_settings

    if get_settings().rasa_speedups:
        install()
    install_service_unavailable_reply()
    if any(a == "--logging-config-file" for a in sys.argv):
        _keep_product_logging()
    from rasa.__main__ import main as rasa_main

    sys.argv = ["rasa", *sys.argv[1:]]
    rasa_main()


if __name__ == "__main__":
    main()
