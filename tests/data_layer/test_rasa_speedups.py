"""The Rasa hot-spot fixes of bot/rasa_server.py keep Rasa's behaviour."""
from __future__ import annotations

import pytest
from jsonschema import ValidationError
from rasa.core.actions.action import RemoteAction
from rasa.shared.core.events import ActionExecuted, Event, SlotSet, UserUttered
from rasa.utils.endpoints import EndpointConfig

from bot.rasa_server import install
from tests.support import local_http_server


@pytest.fixture(scope="module", autouse=True)
def speedups():
    install()


def test_event_types_resolve_as_before():
    assert Event.resolve_by_type("user") is UserUttered
    assert Event.resolve_by_type("slot") is SlotSet
    assert Event.resolve_by_type("action") is ActionExecuted
    assert Event.resolve_by_type("topic") is None
    assert Event.resolve_by_type("no_such_event", default=SlotSet) is SlotSet
    with pytest.raises(ValueError):
        Event.resolve_by_type("no_such_event")


def test_action_responses_are_validated_with_the_same_schema():
    action = RemoteAction("action_x", EndpointConfig("http://127.0.0.1:1/webhook"))
    assert action._validate_action_result({"events": [{"event": "slot", "name": "a", "value": 1}],
                                           "responses": [{"text": "hi"}]})
    with pytest.raises(ValidationError):
        action._validate_action_result({"events": [{"event": "no_such_event"}], "responses": []})
    with pytest.raises(ValidationError):
        action._validate_action_result({"events": "not a list", "responses": []})


async def test_endpoint_requests_reuse_one_session_and_still_work():
    from aiohttp import web

    peers = set()

    async def handler(request):
        peers.add(request.transport.get_extra_info("peername"))
        return web.json_response({"ok": await request.json()})

    async with local_http_server("/webhook", handler) as url:
        endpoint = EndpointConfig(url)
        first = await endpoint.request(json={"n": 1})
        second = await endpoint.request(json={"n": 2})
        assert first == {"ok": {"n": 1}} and second == {"ok": {"n": 2}}
        async with endpoint.session() as a, endpoint.session() as b:
            assert a is b and not a.closed
        assert len(peers) == 1  # the second request reused the keep-alive connection


@pytest.mark.model
async def test_sequential_graph_runner_gives_the_same_predictions_as_dask(trained_model):
    """Parse and predict a conversation with the patched runner and with dask itself."""
    import dask
    from rasa.core.agent import Agent
    from rasa.engine.runner.dask import DaskGraphRunner
    from rasa.shared.core.events import ActionExecuted, SessionStarted, UserUttered

    agent = Agent.load(str(trained_model))
    runner = agent.processor.graph_runner
    assert isinstance(runner, DaskGraphRunner)

    def dask_run(inputs, targets):
        graph = runner._build_dask_graph(runner._graph_schema.minimal_graph_schema(targets))
        runner._add_inputs_to_graph(inputs, graph)
        return dict(dask.get(graph, targets))

    for text in ("我的订单到哪了", "真空保温杯多少钱", "签到", "asdfgh", "能开专票吗"):
        parsed = await agent.parse_message(text)
        msg_targets = [agent.processor.model_metadata.nlu_target]
        from rasa.core.channels.channel import UserMessage

        inputs = {"__message__": [UserMessage(text)]}
        ours = runner.run(inputs=inputs, targets=msg_targets)[msg_targets[0]][0]
        theirs = dask_run(inputs, msg_targets)[msg_targets[0]][0]
        assert ours.get("intent") == theirs.get("intent") == parsed["intent"]
        tracker = agent.processor.tracker_store.init_tracker("im:runner-test")
        for event in (ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen"),
                      UserUttered(text, parsed["intent"], parsed["entities"])):
            tracker.update(event)
        core_targets = [agent.processor.model_metadata.core_target]
        inputs = {"__tracker__": tracker}
        ours = runner.run(inputs=inputs, targets=core_targets)[core_targets[0]]
        theirs = dask_run(inputs, core_targets)[core_targets[0]]
        assert ours.max_confidence_index == theirs.max_confidence_index and ours.policy_name == theirs.policy_name


TWO_WORKERS = """
import os, sys
from bot.rasa_server import install_balanced_workers
install_balanced_workers()
from sanic import Sanic, response
app = Sanic("two_workers")

@app.get("/")
async def pid(request):
    return response.text(str(os.getpid()))

app.run(host="127.0.0.1", port=int(sys.argv[1]), workers=2, access_log=False, motd=False)
"""


def _listening_sockets(port: int) -> int:
    with open("/proc/net/tcp") as table:
        return sum(1 for line in table if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A")


async def _answers_of_two_workers(script: str, env=None, start_tries: int = 100) -> list:
    """Starts `script` (a Sanic app with two balanced workers on the port given as its argument),
    waits (start_tries x 0.1 s at most) until both workers listen, sends 64 GETs to / at once over
    64 keep-alive connections (as a busy client pool does) and returns the answers; the server is
    stopped afterwards."""
    import asyncio
    import subprocess
    import sys

    import aiohttp

    from tests.support import REPO, free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", script, str(port)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(start_tries):
            if _listening_sockets(port) == 2:
                break
            await asyncio.sleep(0.1)
        assert _listening_sockets(port) == 2, "one SO_REUSEPORT socket per worker"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
            async def one():
                async with http.get(f"http://127.0.0.1:{port}/") as answer:
                    return await answer.text()

            return await asyncio.gather(*(one() for _ in range(64)))
    finally:
        server.terminate()
        server.wait(10)


async def test_two_workers_each_listen_on_their_own_socket_and_share_a_burst_of_connections():
    import collections

    served = collections.Counter(await _answers_of_two_workers(TWO_WORKERS))
    assert len(served) == 2 and min(served.values()) >= 16, served


TWO_WORKERS_ON_A_NEW_DATABASE = """
import os, sys
import sqlalchemy as sa
from bot.rasa_server import install_balanced_workers
install_balanced_workers()
from sanic import Sanic, response
app = Sanic("two_workers_new_database")
seen = {}

@app.listener("before_server_start")
async def look(app, loop):
    # what a worker finds as it starts, before its SQLTrackerStore would create anything
    engine = sa.create_engine(os.environ["DATABASE_URL"])
    seen["tables"] = sa.inspect(engine).has_table("events")
    engine.dispose()

@app.get("/")
async def report(request):
    return response.text(f"{os.getpid()} {seen['tables']}")

app.run(host="127.0.0.1", port=int(sys.argv[1]), workers=2, access_log=False, motd=False)
"""


@pytest.fixture(params=["sqlite", "postgres"])
def new_database(request, tmp_path):
    """An empty database of each kind (no tracker tables yet)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'new.db'}"
        return
    from tests.conftest import PG_ADMIN_URL, port_open, unavailable
    from tests.support import throwaway_pg_database

    if not port_open("127.0.0.1", 5432):
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
    with throwaway_pg_database(PG_ADMIN_URL) as url:
        yield url


async def test_workers_starting_on_a_new_database_find_the_tracker_tables_made(new_database):
    """Each Rasa worker's SQLTrackerStore creates the tracker tables as it starts; on a new
    PostgreSQL database two workers collided doing so, and Rasa made the loser sleep 5 s. The
    tables are made once before the workers fork: every worker finds them."""
    import os

    reports = set(await _answers_of_two_workers(TWO_WORKERS_ON_A_NEW_DATABASE,
                                                dict(os.environ, DATABASE_URL=new_database), start_tries=200))
    assert len({report.split()[0] for report in reports}) == 2, reports  # both workers answered
    assert all(report.endswith(" True") for report in reports), reports
