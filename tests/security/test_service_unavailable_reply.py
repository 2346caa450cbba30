"""bot/rasa_server.py install_service_unavailable_reply: Rasa's own RemoteAction and FormAction,
with the product's domain and responses, against an action server that is down or broken."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from rasa.core.actions.action import ActionExecutionRejection, RemoteAction
from rasa.core.actions.forms import FormAction
from rasa.core.channels.channel import CollectingOutputChannel
from rasa.core.nlg.response import TemplatedNaturalLanguageGenerator
from rasa.shared.core.constants import ACTION_LISTEN_NAME, REQUESTED_SLOT
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    ActiveLoop,
    BotUttered,
    FollowupAction,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.exceptions import RasaException
from rasa.utils.endpoints import EndpointConfig

from bot.rasa_server import install_service_unavailable_reply
from bot.settings import REPO_ROOT, get_settings, reset_settings_cache
from tests.support import free_port, local_http_server

APOLOGY = "系统正在恢复中"


@pytest.fixture(scope="module", autouse=True)
def patched():
    install_service_unavailable_reply()


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.load(str(REPO_ROOT / "bot" / "domain"))


@pytest.fixture
def down() -> EndpointConfig:
    """An action endpoint nothing listens on."""
    return EndpointConfig(f"http://127.0.0.1:{free_port()}/webhook")


@pytest.fixture
async def answering():
    """An action endpoint that answers every call with the status and body it is given."""
    reply = {"status": 500, "body": {"error": "boom"}, "hang": False}
    released = asyncio.Event()

    async def webhook(_request):
        if reply["hang"]:
            await released.wait()
        return web.json_response(reply["body"], status=reply["status"])

    async with local_http_server("/webhook", webhook) as url:
        try:
            yield EndpointConfig(url), reply
        finally:
            released.set()


def turn(domain: Domain, *events, persona: str = "专业顾问") -> DialogueStateTracker:
    return DialogueStateTracker.from_events(
        "im:visitor", [ActionExecuted(ACTION_LISTEN_NAME), SlotSet("persona", persona), *events,
                       ActionExecuted(ACTION_LISTEN_NAME),
                       UserUttered("我的订单到哪了", {"name": "order_status", "confidence": 1.0})],
        slots=domain.slots)


async def run(action, domain, tracker):
    nlg = TemplatedNaturalLanguageGenerator(domain.responses)
    return await action.run(CollectingOutputChannel(), nlg, tracker, domain)


def apologised_once_and_ended_the_turn(events) -> str:
    said = [e for e in events if isinstance(e, BotUttered)]
    assert len(said) == 1 and APOLOGY in said[0].text, events
    assert events[-1] == FollowupAction(ACTION_LISTEN_NAME)
    return said[0].text


async def test_an_action_whose_server_is_down_apologises_in_the_persona_and_ends_the_turn(domain, down):
    events = await run(RemoteAction("action_shop_policy", down), domain, turn(domain, persona="热情闺蜜"))
    text = apologised_once_and_ended_the_turn(events)
    assert text.startswith("抱歉呀亲")  # the 热情闺蜜 variant of utter_service_unavailable
    assert len(events) == 2


async def test_a_5xx_is_apologised_for_but_a_rejection_or_a_refused_credential_is_not(domain, answering):
    endpoint, reply = answering
    apologised_once_and_ended_the_turn(await run(RemoteAction("action_shop_policy", endpoint), domain, turn(domain)))
    reply.update(status=400, body={"action_name": "action_shop_policy", "error": "no"})
    with pytest.raises(ActionExecutionRejection):
        await run(RemoteAction("action_shop_policy", endpoint), domain, turn(domain))
    reply.update(status=403, body={"error": "wrong credentials"})
    with pytest.raises(RasaException):
        await run(RemoteAction("action_shop_policy", endpoint), domain, turn(domain))


async def test_a_form_whose_validation_and_question_both_fail_apologises_once_and_is_not_activated(domain, down):
    events = await run(FormAction("order_form", down), domain, turn(domain))
    apologised_once_and_ended_the_turn(events)
    assert not any(isinstance(e, (ActiveLoop, SlotSet)) for e in events), events


async def test_a_form_in_progress_keeps_its_state_when_the_action_server_is_down(domain, down):
    tracker = turn(domain, ActiveLoop("order_form"), SlotSet("order_task", "status"), SlotSet("pending_order", "SY1"),
                   SlotSet(REQUESTED_SLOT, "phone_tail"))
    events = await run(FormAction("order_form", down), domain, tracker)
    apologised_once_and_ended_the_turn(events)
    # nothing that would move the form on: the answer sent again is taken as the phone digits
    assert len(events) == 2
    assert tracker.active_loop_name == "order_form" and tracker.get_slot(REQUESTED_SLOT) == "phone_tail"


async def test_a_session_the_action_server_cannot_start_is_started_with_the_shops_defaults(domain, down):
    tracker = DialogueStateTracker.from_events("im:visitor", [], slots=domain.slots)
    events = await run(RemoteAction("action_session_start", down), domain, tracker)
    shop = get_settings().shop
    assert events[0] == SessionStarted() and events[-1] == ActionExecuted(ACTION_LISTEN_NAME)
    assert SlotSet("shop_name", shop.name) in events and SlotSet("persona", shop.persona) in events
    assert not any(isinstance(e, BotUttered) for e in events)  # silent: the turn's answer apologises


async def test_an_action_server_that_hangs_is_given_up_after_the_configured_time(domain, answering, monkeypatch):
    endpoint, reply = answering
    reply.update(status=200, body={"events": [], "responses": []}, hang=True)
    monkeypatch.setenv("SIYU_ACTION_CALL_TIMEOUT_S", "0.5")
    reset_settings_cache()
    try:
        events = await asyncio.wait_for(run(RemoteAction("action_shop_policy", endpoint), domain, turn(domain)), 10)
    finally:
        monkeypatch.delenv("SIYU_ACTION_CALL_TIMEOUT_S")
        reset_settings_cache()
    apologised_once_and_ended_the_turn(events)
