"""Order form validation and order tasks against the real demo database (SQLite and PostgreSQL)."""
from __future__ import annotations

import pytest

from actions.orders import ActionAskOrderId, ActionOrderTask, ValidateOrderForm
from bot.settings import get_settings
from tests.actions import shop_queries as q
from tests.actions.helpers import responses, run, slot_events, tracker

validate = ValidateOrderForm()


@pytest.fixture(autouse=True)
def _no_earlier_guesses(shop_db):
    q.reset_verification()


async def validate_slot(slot, value, t):
    from rasa_sdk.executor import CollectingDispatcher

    dispatcher = CollectingDispatcher()
    result = await getattr(validate, f"validate_{slot}")(value, dispatcher, t, {})
    return result, dispatcher.messages


async def test_owner_gets_the_status_of_a_shipped_order_with_its_real_carrier(shop_db):
    order = q.order_in("shipped")
    t = tracker(q.sender_of(order), "我的快递到哪了", "order_status",
                slots={"order_id": order.order_no, "order_task": "status"})
    messages, events = await run(ActionOrderTask(), t)
    assert responses(messages)[0].startswith("utter_order_status_shipped")
    assert messages[0]["carrier"] == order.carrier
    assert messages[0]["tracking_no"] == order.tracking_no
    assert messages[0]["latest_event"] == order.logistics[-1].description
    assert slot_events(events)["recent_order"] == order.order_no


async def test_another_customers_order_is_never_revealed(shop_db):
    order = q.order_in("shipped")
    stranger = q.order_in("paid", exclude_customer=order.customer_id)
    t = tracker(q.sender_of(stranger), f"{order.order_no}到哪了", "order_status", slots={"order_task": "status"})
    result, messages = await validate_slot("order_id", order.order_no, t)
    assert result["order_id"] is None
    assert responses(messages) == ["utter_order_not_found"]
    # even when the slot was filled some other way, the task re-checks ownership
    t = tracker(q.sender_of(stranger), "到哪了", "order_status", slots={"order_id": order.order_no,
                                                                      "order_task": "status"})
    messages, _ = await run(ActionOrderTask(), t)
    assert responses(messages) == ["utter_order_not_found"]
    assert order.carrier not in str(messages)


async def test_unknown_and_malformed_order_numbers_get_clear_answers(shop_db):
    order = q.order_in("paid")
    t = tracker(q.sender_of(order), "SY99999999999999", "order_status", slots={"order_task": "status"})
    result, messages = await validate_slot("order_id", "SY99999999999999", t)
    assert result["order_id"] is None and responses(messages) == ["utter_order_not_found"]
    result, messages = await validate_slot("order_id", "SY2026", t)
    assert result["order_id"] is None and responses(messages) == ["utter_order_id_invalid"]
    result, messages = await validate_slot("order_id", "'; DROP TABLE orders; --", t)
    assert result["order_id"] is None and responses(messages) == ["utter_order_id_invalid"]


async def test_anonymous_visitor_must_prove_the_order_with_the_phone_tail(shop_db):
    order = q.order_in("shipped")
    t = tracker("im:guest-abc", order.order_no, "order_status", slots={"order_task": "status"})
    result, messages = await validate_slot("order_id", order.order_no, t)
    assert result == {"order_id": None, "pending_order": order.order_no, "phone_tail": None}
    assert messages == []
    t = tracker("im:guest-abc", "0000", slots={"order_task": "status", "pending_order": order.order_no,
                                              "requested_slot": "phone_tail"})
    result, messages = await validate_slot("phone_tail", q.wrong_tail(order), t)
    assert result["phone_tail"] is None and responses(messages) == ["utter_phone_tail_mismatch"]
    result, _ = await validate_slot("phone_tail", order.receiver_phone[-4:], t)
    assert result["order_id"] == order.order_no
    # the proof belongs to this conversation: the task runs here, and nowhere else
    done = tracker("im:guest-abc", "", slots={"order_task": "status", "order_id": order.order_no})
    messages, _ = await run(ActionOrderTask(), done)
    assert responses(messages)[0].startswith("utter_order_status_shipped")
    other = tracker("im:guest-other", "", slots={"order_task": "status", "order_id": order.order_no})
    messages, _ = await run(ActionOrderTask(), other)
    assert responses(messages) == ["utter_verify_expired"]
    assert order.carrier not in str(messages)


async def test_an_unknown_order_number_is_asked_for_the_phone_tail_like_a_real_one(shop_db):
    t = tracker("im:guest-probe", "SY29991231999999", "order_status", slots={"order_task": "status"})
    result, messages = await validate_slot("order_id", "SY29991231999999", t)
    assert result == {"order_id": None, "pending_order": "SY29991231999999", "phone_tail": None}
    assert messages == []
    t = tracker("im:guest-probe", "1234", slots={"order_task": "status", "pending_order": "SY29991231999999",
                                                "requested_slot": "phone_tail"})
    result, messages = await validate_slot("phone_tail", "1234", t)
    assert result["phone_tail"] is None and responses(messages) == ["utter_phone_tail_mismatch"]


async def test_three_wrong_phone_tails_lock_the_lookup(shop_db):
    order = q.order_in("paid")
    wrong = q.wrong_tail(order)
    t = tracker("im:guest-lock", wrong, slots={"order_task": "status", "pending_order": order.order_no,
                                              "verify_attempts": 2.0})
    result, messages = await validate_slot("phone_tail", wrong, t)
    assert result["verify_locked"] is True and responses(messages) == ["utter_verify_locked"]
    assert await validate.required_slots([], None, tracker("im:guest-lock", slots={
        "order_task": "status", "verify_locked": True}), {}) == ["order_task"]


async def test_identified_customer_chooses_from_own_orders(shop_db):
    order = q.order_in("shipped")
    t = tracker(q.sender_of(order), "我的订单", "order_status", slots={"order_task": "status"})
    messages, events = await run(ActionAskOrderId(), t)
    assert responses(messages) == ["utter_choose_order"]
    choices = slot_events(events)["order_choices"]
    assert order.order_no in choices
    assert all(b["payload"].startswith("/order_status{") for b in messages[0]["buttons"])
    # "第二个" picks the second listed order
    pick = tracker(q.sender_of(order), "第二个", slots={"order_task": "status", "order_choices": choices,
                                                     "requested_slot": "order_id"})
    extracted = await validate.extract_order_id(None, pick, {})
    assert extracted == {"order_id": choices[1]}


async def test_paid_order_is_cancelled_after_confirmation(shop_db):
    order = q.order_in("paid")
    t = tracker(q.sender_of(order), "确认", "affirm", slots={"order_id": order.order_no, "order_task": "cancel",
                                                            "cancel_confirm": True, "task_allowed": True})
    messages, _ = await run(ActionOrderTask(), t)
    assert responses(messages) == ["utter_cancel_done_paid"]
    assert q.reload_order(order.order_no).status == "cancelled"
    assert any(t.kind == "cancel_order" for t in q.tickets_of(order.order_no))


async def test_shipped_order_cannot_be_cancelled(shop_db):
    order = q.order_in("shipped")
    t = tracker(q.sender_of(order), "取消订单", "cancel_order", slots={"order_id": order.order_no,
                                                                  "order_task": "cancel"})
    result, _ = await validate_slot("order_id", order.order_no, t)
    assert result["task_allowed"] is False
    messages, _ = await run(ActionOrderTask(), t)
    assert responses(messages) == ["utter_cancel_refused_shipped"]
    assert q.reload_order(order.order_no).status == "shipped"


async def test_delivered_order_inside_the_window_gets_a_return_ticket(shop_db):
    order = q.order_in("delivered", returnable=True)
    t = tracker(q.sender_of(order), "尺码不合适", slots={"order_id": order.order_no, "order_task": "return",
                                                     "return_reason": "尺码不合适", "task_allowed": True,
                                                     "after_sales_kind": "return"})
    messages, events = await run(ActionOrderTask(), t)
    large = order.paid_fen > get_settings().shop.desk.refund_handoff_above_yuan * 100
    # a large refund is also followed up by a person (the desk's queue)
    assert responses(messages)[0] == "utter_return_created"
    assert (responses(messages)[1:] != []) == large
    assert (slot_events(events).get("handoff_queued") is True) == large
    ticket_no = messages[0]["ticket_no"]
    tickets = q.tickets_of(order.order_no)
    assert [t.ticket_no for t in tickets] == [ticket_no]
    assert tickets[0].reason == "尺码不合适"
    assert q.reload_order(order.order_no).status == "refunding"
    # asking again is refused: one after-sales request per order
    again = tracker(q.sender_of(order), "我要退货", slots={"order_id": order.order_no, "order_task": "return"})
    messages, _ = await run(ActionOrderTask(), again)
    assert responses(messages) == ["utter_return_refused_in_progress"]
    assert messages[0]["ticket_no"] == ticket_no


@pytest.mark.parametrize("status,expected", [
    ("paid", "utter_return_refused_not_shipped"),
    ("shipped", "utter_return_refused_not_delivered"),
    ("cancelled", "utter_return_refused_cancelled"),
    ("refunded", "utter_return_refused_refunded"),
])
async def test_return_is_refused_with_the_reason(shop_db, status, expected):
    order = q.order_in(status)
    t = tracker(q.sender_of(order), "退货", slots={"order_id": order.order_no, "order_task": "return"})
    messages, _ = await run(ActionOrderTask(), t)
    assert responses(messages) == [expected]


async def test_return_after_the_window_is_refused(shop_db):
    order = q.order_in("completed")
    t = tracker(q.sender_of(order), "退货", slots={"order_id": order.order_no, "order_task": "return"})
    messages, _ = await run(ActionOrderTask(), t)
    assert responses(messages) == ["utter_return_refused_expired"]
    assert messages[0]["return_window_days"] == 7


async def test_address_of_an_unshipped_order_is_changed(shop_db):
    order = q.order_in("paid")
    new = "浙江省杭州市西湖区文三路 100 号 5 幢 301 室 张三 13900001111"
    t = tracker(q.sender_of(order), new, slots={"order_id": order.order_no, "order_task": "change",
                                               "change_detail": new, "task_allowed": True})
    messages, _ = await run(ActionOrderTask(), t)
    assert responses(messages) == ["utter_change_address_done"]
    changed = q.reload_order(order.order_no)
    assert changed.address == new and changed.receiver_phone == "13900001111"


async def test_failing_database_becomes_a_polite_message(shop_db, monkeypatch):
    from actions.repositories import order_repository

    async def broken(*args, **kwargs):
        raise ConnectionError("database went away")

    monkeypatch.setattr(order_repository, "get_by_order_no", broken)
    order = q.order_in("paid")
    t = tracker(q.sender_of(order), "到哪了", slots={"order_id": order.order_no, "order_task": "status"})
    messages, events = await run(ActionOrderTask(), t)
    assert responses(messages) == ["utter_action_error"]
