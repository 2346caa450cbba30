"""How the bot takes turns with real customers: no re-greeting, no order-number prompt asked more
than twice or appended to other answers, pasted lists, resumed tasks, and confirmations before a
complaint ticket or an unsubscribe the message does not plainly ask for."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from actions.conversation import ActionAffirm, ActionDeny, ActionGreet, ActionThanks
from actions.customer_care import ActionComplaint
from actions.db.models import Ticket
from actions.membership import ActionUnsubscribe
from actions.orders import (
    ActionAskOrderId,
    ActionAskPhoneTail,
    ActionOrderTask,
    ActionStopOrderForm,
    ValidateOrderForm,
)
from tests.actions import shop_queries as q
from tests.actions.helpers import responses, run, slot_events, tracker

validate = ValidateOrderForm()


def guest() -> str:
    return f"im:guest-{uuid.uuid4().hex[:8]}"


def bot(response: str) -> dict:
    return {"event": "bot", "text": "…", "metadata": {"utter_action": response}}


def user(text: str) -> dict:
    return {"event": "user", "text": text}


@pytest.fixture(autouse=True)
def _no_earlier_guesses(shop_db):
    q.reset_verification()


async def test_a_second_greeting_in_a_session_is_short(shop_db):
    sender = guest()
    messages, _ = await run(ActionGreet(), tracker(sender, "你好", "greet", events=[user("你好")]))
    assert responses(messages) == ["utter_greet"]
    earlier = [user("你好"), bot("utter_greet"), user("查订单"), bot("utter_ask_order_id"), user("在吗")]
    messages, _ = await run(ActionGreet(), tracker(sender, "在吗", "greet", events=earlier))
    assert responses(messages) == ["utter_greet_again"]
    # a new session greets in full again
    new_session = earlier + [{"event": "session_started"}, user("你好")]
    messages, _ = await run(ActionGreet(), tracker(sender, "你好", "greet", events=new_session))
    assert responses(messages) == ["utter_greet"]


async def test_thanks_twice_is_not_the_same_sentence_twice(shop_db):
    events = [user("谢谢"), bot("utter_thanks"), user("好的谢谢")]
    messages, _ = await run(ActionThanks(), tracker(guest(), "好的谢谢", "thanks", events=events))
    assert responses(messages) == ["utter_thanks_again"]


async def test_praise_is_not_registered_as_a_complaint_without_asking(shop_db, open_hours):
    sender = guest()
    text = "太好用了 给你们五星好评"
    messages, events = await run(ActionComplaint(), tracker(sender, text, "complaint", events=[user(text)]))
    assert responses(messages) == ["utter_confirm_complaint"] and events == []
    assert [b["payload"] for b in messages[0]["buttons"]] == ["/affirm", "/deny"]
    with q.session() as s:
        assert s.execute(select(Ticket).where(Ticket.conversation_id == sender)).scalars().all() == []
    asked = [user(text), bot("utter_confirm_complaint"), user("不是")]
    messages, _ = await run(ActionDeny(), tracker(sender, "不是", "deny", events=asked))
    assert responses(messages) == ["utter_confirmation_dropped"]


async def test_a_confirmed_complaint_is_registered_with_what_the_customer_said(shop_db, open_hours):
    sender = guest()
    text = "东西用了两天就不出水了"
    asked = [user(text), bot("utter_confirm_complaint"), user("是的")]
    messages, events = await run(ActionAffirm(), tracker(sender, "是的", "affirm", events=asked))
    assert responses(messages) == ["utter_complaint_handed_over"]
    assert slot_events(events) == {"handoff_queued": True}
    with q.session() as s:
        ticket = s.execute(select(Ticket).where(Ticket.conversation_id == sender)).scalars().one()
        assert ticket.kind == "complaint" and text in ticket.detail


async def test_a_plain_complaint_is_registered_at_once(shop_db, open_hours):
    messages, _ = await run(ActionComplaint(), tracker(guest(), "客服态度太差了，我要投诉", "complaint"))
    assert responses(messages) == ["utter_complaint_handed_over"]


async def test_cancelling_a_membership_is_not_taken_as_unsubscribing_without_asking(shop_db):
    customer = q.customer("C10008")
    sender = "im:u10008"
    text = "我要取消会员自动续费"
    messages, events = await run(ActionUnsubscribe(), tracker(sender, text, "unsubscribe", events=[user(text)]))
    assert responses(messages) == ["utter_confirm_unsubscribe"] and events == []
    assert q.customer("C10008").marketing_opt_out == customer.marketing_opt_out
    asked = [user(text), bot("utter_confirm_unsubscribe"), user("对")]
    messages, _ = await run(ActionAffirm(), tracker(sender, "对", "affirm", events=asked))
    assert responses(messages) == ["utter_unsubscribed"]
    assert q.customer("C10008").marketing_opt_out is True


@pytest.mark.parametrize("text", ["退订", "TD", "别再给我发广告了"])
def test_plain_unsubscribe_words_need_no_confirmation(text):
    from actions.customer_care import sure_of

    assert sure_of(tracker(guest(), text, "unsubscribe"), "unsubscribe_markers")


async def test_a_yes_with_nothing_asked_is_acknowledged_once_then_briefly(shop_db):
    sender = guest()
    messages, _ = await run(ActionAffirm(), tracker(sender, "好的", "affirm", events=[user("好的")]))
    assert responses(messages) == ["utter_affirm_idle"]
    events = [user("好的"), bot("utter_affirm_idle"), user("嗯嗯")]
    messages, _ = await run(ActionAffirm(), tracker(sender, "嗯嗯", "affirm", events=events))
    assert responses(messages) == ["utter_affirm_idle_again"]


async def test_the_order_number_is_asked_at_most_twice(shop_db):
    sender = guest()
    slots = {"order_task": "status"}
    messages, events = await run(ActionAskOrderId(), tracker(sender, "我的快递呢", "order_status", slots=slots))
    assert responses(messages) == ["utter_ask_order_id"] and slot_events(events)["order_asks"] == 1
    slots["order_asks"] = 1
    messages, events = await run(ActionAskOrderId(), tracker(sender, "查订单", "order_status", slots=slots))
    assert responses(messages) == ["utter_ask_order_id_again"] and slot_events(events)["order_asks"] == 2
    # asked twice: the form needs nothing more, and the task offers a person instead of a third ask
    slots["order_asks"] = 2
    required = await validate.required_slots([], None, tracker(sender, "查订单", "order_status", slots=slots), {})
    assert required == ["order_task"]
    messages, events = await run(ActionOrderTask(), tracker(sender, "查订单", "order_status", slots=slots))
    assert responses(messages) == ["utter_order_id_gave_up"]
    assert slot_events(events)["order_asks"] == 0


async def test_after_a_hint_about_a_wrong_number_the_prompt_is_not_repeated(shop_db):
    sender = guest()
    events = [user("3320198765432109"), bot("utter_order_id_invalid")]
    t = tracker(sender, "3320198765432109", "order_status", slots={"order_task": "status", "order_asks": 1},
                events=events)
    messages, _ = await run(ActionAskOrderId(), t)
    assert messages == []
    result, _ = await run_extract(tracker(sender, "3320198765432109", "order_status",
                                          slots={"order_task": "status", "requested_slot": "order_id"}))
    assert result == {"order_id": "3320198765432109"}  # validated into utter_order_id_invalid


async def run_extract(t):
    from rasa_sdk.executor import CollectingDispatcher

    dispatcher = CollectingDispatcher()
    return await validate.extract_order_id(dispatcher, t, {}), dispatcher.messages


async def test_a_wrong_phone_tail_is_not_followed_by_the_same_question(shop_db):
    sender = guest()
    messages, _ = await run(ActionAskPhoneTail(), tracker(sender, "SY20261103000123", events=[
        user("SY20261103000123")]))
    assert responses(messages) == ["utter_ask_phone_tail"]
    messages, _ = await run(ActionAskPhoneTail(), tracker(sender, "好的", events=[
        user("SY20261103000123"), bot("utter_ask_phone_tail"), user("好的"), bot("utter_phone_tail_invalid")]))
    assert messages == []


async def test_a_pasted_list_of_order_numbers_is_offered_back_as_choices(shop_db):
    sender = guest()
    text = "这几个单 SY20261103000123 SY20261104000456 SY20261103000123"
    t = tracker(sender, text, "order_status", slots={"order_task": "status", "requested_slot": "order_id"})
    extracted, _ = await run_extract(t)
    assert extracted == {"order_id": None}
    from rasa_sdk.executor import CollectingDispatcher

    result = await validate.validate_order_id(None, CollectingDispatcher(), t, {})
    assert result == {"order_id": None, "order_choices": ["SY20261103000123", "SY20261104000456"]}
    t = tracker(sender, text, "order_status", slots={"order_task": "status", "order_choices": result["order_choices"]})
    messages, _ = await run(ActionAskOrderId(), t)
    assert responses(messages) == ["utter_choose_pasted_order"]
    assert [b["title"] for b in messages[0]["buttons"]] == ["SY20261103000123", "SY20261104000456"]


async def test_another_topic_pauses_the_task_and_a_bare_number_resumes_it(shop_db):
    sender = guest()
    t = tracker(sender, "发票怎么开", "invoice", slots={"order_task": "cancel", "requested_slot": "order_id"},
                active_loop="order_form")
    messages, events = await run(ActionStopOrderForm(), t)
    assert messages == [] and slot_events(events)["paused_task"] == "cancel"
    later = tracker(sender, "SY20261103000123", "order_status", slots={"order_task": "status", "paused_task": "cancel"})
    assert await validate.extract_order_task(None, later, {}) == {"order_task": "cancel"}
    # a question about an order is not a resumed cancellation
    asked = tracker(sender, "SY20261103000123 到哪了", "order_status",
                    slots={"order_task": "status", "paused_task": "cancel"})
    assert await validate.extract_order_task(None, asked, {}) == {}
    # "算了" forgets it
    t = tracker(sender, "算了", "deny", slots={"order_task": "cancel"}, active_loop="order_form")
    messages, events = await run(ActionStopOrderForm(), t)
    assert responses(messages) == ["utter_order_form_stopped"] and slot_events(events)["paused_task"] is None


async def test_a_customer_without_the_phone_number_is_told_the_other_ways_and_no_guess_counts(shop_db):
    sender = guest()
    slots = {"order_task": "status", "pending_order": "SY20261103000123", "requested_slot": "phone_tail"}
    t = tracker(sender, "手机尾号我不记得了，是我老公的号", "order_status", slots=slots)
    extracted = await validate.extract_phone_tail(None, t, {})
    from rasa_sdk.executor import CollectingDispatcher

    dispatcher = CollectingDispatcher()
    result = await validate.validate_phone_tail(extracted["phone_tail"], dispatcher, t, {})
    assert responses(dispatcher.messages) == ["utter_phone_tail_unknown"]
    assert result["verify_refused"] is True and "verify_attempts" not in result
    t = tracker(sender, "好的稍等，我找下手机号", "affirm", slots=slots)
    extracted = await validate.extract_phone_tail(None, t, {})
    dispatcher = CollectingDispatcher()
    result = await validate.validate_phone_tail(extracted["phone_tail"], dispatcher, t, {})
    assert responses(dispatcher.messages) == ["utter_phone_tail_wait"] and result == {"phone_tail": None}


async def test_saying_no_complaint_is_not_a_complaint(shop_db, open_hours):
    text = "不用投诉，我就是说一下"
    messages, events = await run(ActionComplaint(), tracker(guest(), text, "complaint", events=[user(text)]))
    assert responses(messages) == ["utter_confirm_complaint"] and events == []


async def test_a_third_thanks_gets_a_third_sentence(shop_db):
    events = [user("谢谢"), bot("utter_thanks"), user("好的谢谢"), bot("utter_thanks_again"), user("谢谢啦")]
    messages, _ = await run(ActionThanks(), tracker(guest(), "谢谢啦", "thanks", events=events))
    assert responses(messages) == ["utter_thanks_again2"]


def test_the_same_answer_twice_is_marked_as_said_before_and_another_answer_is_not():
    from actions.repeats import fresh_form

    earlier = [("utter_policy_answer", "亲～全场满 99 元包邮（偏远地区除外）")]
    assert fresh_form({"response": "utter_policy_answer", "answer": "全场满 99 元包邮（偏远地区除外）"}, earlier) \
        == "utter_policy_answer_again"
    assert fresh_form({"response": "utter_policy_answer", "answer": "支持花呗分期"}, earlier) == "utter_policy_answer"
    # a response without other forms is left as it is
    assert fresh_form({"response": "utter_order_status_paid"}, [("utter_order_status_paid", "…")]) \
        == "utter_order_status_paid"


def test_the_session_is_what_follows_the_last_session_start():
    from actions.repeats import session_events, session_replies

    before = [user("你好"), bot("utter_greet")]
    after = [user("在吗"), bot("utter_greet_again")]
    t = tracker(guest(), "在吗", "greet", events=before + [{"event": "session_started"}] + after)
    assert session_events(t) == after and session_replies(t) == [("utter_greet_again", "…")]
    # no session start on record: the whole conversation
    assert session_events(tracker(guest(), events=before)) == before
