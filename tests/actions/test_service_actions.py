"""Shop policies, complaints, requests for a person, check-in and marketing opt-out."""
from __future__ import annotations

import uuid

from sqlalchemy import select

from actions.customer_care import ActionCancelHandoff, ActionComplaint, ActionRequestHuman
from actions.db.models import ConsentEvent, Ticket
from actions.membership import ActionCheckin, ActionResubscribe, ActionUnsubscribe
from actions.shop_policies import ActionShopPolicy
from desk.models import DeskConversation
from tests.actions import shop_queries as q
from tests.actions.helpers import responses, run, slot_events, tracker


async def test_policy_answers_follow_the_shop_config(shop_db):
    cases = [("invoice", "可以开专票吗", "增值税专用发票"), ("payment", "能用花呗分期吗", "花呗"),
             ("shipping_policy", "发顺丰吗", "顺丰"), ("shipping_policy", "一般几天到", "48 小时内发货")]
    for intent, text, expected in cases:
        messages, _ = await run(ActionShopPolicy(), tracker("im:guest-2", text, intent))
        assert responses(messages) == ["utter_policy_answer"]
        assert expected in messages[0]["answer"], text


async def test_complaint_opens_one_ticket_and_repeats_add_to_it(shop_db, closed_hours):
    sender = "im:u10007"
    messages, _ = await run(ActionComplaint(), tracker(sender, "你们客服态度太差了", "complaint"))
    assert responses(messages) == ["utter_complaint_recorded"]
    first = messages[0]["ticket_no"]
    messages, _ = await run(ActionComplaint(), tracker(sender, "还是没人理我", "complaint"))
    assert messages[0]["ticket_no"] == first
    with q.session() as s:
        ticket = s.execute(select(Ticket).where(Ticket.ticket_no == first)).scalars().one()
        assert ticket.kind == "complaint" and "还是没人理我" in ticket.detail
        assert ticket.customer_id == q.customer("C10007").id


async def test_a_request_for_a_person_inside_business_hours_queues_with_the_expected_wait(shop_db, open_hours):
    sender = f"im:guest-{uuid.uuid4().hex[:8]}"
    messages, events = await run(ActionRequestHuman(), tracker(sender, "转人工", "request_human"))
    assert responses(messages)[0] in ("utter_handoff_queued", "utter_handoff_queued_next")
    assert messages[0]["wait_minutes"] >= 1 and messages[0]["position"] >= 1
    assert slot_events(events) == {"handoff_queued": True}
    # asking again while waiting changes nothing; "不用了" cancels
    messages, _ = await run(ActionRequestHuman(), tracker(sender, "人呢？转人工", "request_human"))
    assert responses(messages) == ["utter_handoff_already_queued"]
    messages, events = await run(ActionCancelHandoff(), tracker(sender, "不用了", "deny"))
    assert responses(messages) == ["utter_handoff_cancelled"] and slot_events(events) == {"handoff_queued": False}
    with q.session() as s:
        row = s.execute(select(DeskConversation).where(DeskConversation.conversation_id == sender)).scalars().one()
        assert row.state == "bot" and row.reason == "customer_request"


async def test_outside_business_hours_a_request_gets_a_ticket_and_a_callback_promise(shop_db, closed_hours):
    sender = f"im:guest-{uuid.uuid4().hex[:8]}"
    messages, _ = await run(ActionRequestHuman(), tracker(sender, "转人工", "request_human"))
    assert responses(messages) == ["utter_handoff_after_hours"]
    assert messages[0]["ticket_no"].startswith("T") and messages[0]["service_phone"] and messages[0]["opening"]
    with q.session() as s:
        row = s.execute(select(DeskConversation).where(DeskConversation.conversation_id == sender)).scalars().one()
        assert row.state == "queued" and row.ticket_no == messages[0]["ticket_no"]


async def test_an_angry_message_goes_to_a_person_with_top_priority(shop_db, open_hours):
    sender = f"im:guest-{uuid.uuid4().hex[:8]}"
    angry = [{"entity": "handoff_reason", "value": "anger"}]
    messages, _ = await run(ActionComplaint(), tracker(sender, "你们这什么破店，气死我了", "complaint", entities=angry))
    assert responses(messages) == ["utter_complaint_handed_over"] and messages[0]["ticket_no"].startswith("T")
    with q.session() as s:
        row = s.execute(select(DeskConversation).where(DeskConversation.conversation_id == sender)).scalars().one()
        assert (row.state, row.reason, row.priority) == ("queued", "anger", 3)


async def test_check_in_once_a_day_for_members_only(shop_db):
    before = q.customer("C10008").points
    messages, _ = await run(ActionCheckin(), tracker("im:u10008", "签到", "checkin"))
    assert responses(messages) == ["utter_checkin_done"] and messages[0]["points"] == 5
    assert messages[0]["total_points"] == before + 5
    messages, _ = await run(ActionCheckin(), tracker("im:u10008", "签到", "checkin"))
    assert responses(messages) == ["utter_checkin_already"] and messages[0]["streak"] == 1
    assert q.customer("C10008").points == before + 5
    messages, _ = await run(ActionCheckin(), tracker("im:guest-4", "签到", "checkin"))
    assert responses(messages) == ["utter_checkin_needs_member"]


async def test_unsubscribe_is_recorded_at_once(shop_db):
    messages, _ = await run(ActionUnsubscribe(), tracker("im:u10009", "别再给我发广告了", "unsubscribe"))
    assert responses(messages) == ["utter_unsubscribed"]
    customer = q.customer("C10009")
    assert customer.marketing_opt_out is True
    with q.session() as s:
        events = s.execute(select(ConsentEvent).where(ConsentEvent.customer_id == customer.id)).scalars().all()
        assert [(e.granted, e.source) for e in events] == [(False, "conversation:im")]


async def test_a_refusal_can_be_taken_back_by_the_customer(shop_db):
    await run(ActionUnsubscribe(), tracker("im:u10011", "退订", "unsubscribe"))
    assert q.customer("C10011").marketing_opt_out is True
    messages, _ = await run(ActionResubscribe(), tracker("im:u10011", "恢复推送", "resubscribe"))
    assert responses(messages) == ["utter_resubscribed"]
    customer = q.customer("C10011")
    assert customer.marketing_opt_out is False
    with q.session() as s:
        events = s.execute(select(ConsentEvent).where(ConsentEvent.customer_id == customer.id)
                           .order_by(ConsentEvent.id)).scalars().all()
        assert [e.granted for e in events] == [False, True]
    messages, _ = await run(ActionResubscribe(), tracker("im:guest-9", "订阅", "resubscribe"))
    assert responses(messages) == ["utter_resubscribe_needs_member"]


async def test_the_second_misunderstanding_in_a_row_goes_to_a_person(shop_db, open_hours):
    from actions.customer_care import ActionNotUnderstood

    sender = f"im:guest-{uuid.uuid4().hex[:8]}"
    first = [{"event": "user", "text": "asdf"}]
    messages, _ = await run(ActionNotUnderstood(), tracker(sender, "asdf", events=first))
    assert responses(messages) == ["utter_default"]
    again = first + [{"event": "bot", "text": "抱歉…", "metadata": {"utter_action": "utter_default"}},
                     {"event": "user", "text": "qwer"}]
    messages, events = await run(ActionNotUnderstood(), tracker(sender, "qwer", events=again))
    assert responses(messages) == ["utter_handoff_misunderstood"] and messages[0]["wait_minutes"] >= 1
    assert slot_events(events) == {"handoff_queued": True}
    with q.session() as s:
        row = s.execute(select(DeskConversation).where(DeskConversation.conversation_id == sender)).scalars().one()
        assert (row.state, row.reason) == ("queued", "misunderstood")


async def test_a_vip_customer_gets_a_person_at_the_first_misunderstanding(shop_db, open_hours):
    from actions.customer_care import ActionNotUnderstood
    from bot.settings import get_settings

    vip_levels = get_settings().shop.desk.vip_levels
    with q.session() as s:
        from actions.db.models import Customer, CustomerIdentity

        vip = s.execute(select(CustomerIdentity).join(Customer).where(
            Customer.level.in_(vip_levels), CustomerIdentity.channel == "im")).scalars().first()
        sender = f"im:{vip.external_id}"
    messages, _ = await run(ActionNotUnderstood(), tracker(sender, "asdf", events=[{"event": "user", "text": "x"}]))
    assert responses(messages)[0] in ("utter_handoff_misunderstood", "utter_handoff_already_queued")
