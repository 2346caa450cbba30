"""Shop policies, complaints, requests for a person, check-in and marketing opt-out."""
from __future__ import annotations

from sqlalchemy import select

from actions.customer_care import ActionComplaint, ActionRequestHuman
from actions.db.models import ConsentEvent, Ticket
from actions.membership import ActionCheckin, ActionUnsubscribe
from actions.shop_policies import ActionShopPolicy
from tests.actions import shop_queries as q
from tests.actions.helpers import responses, run, tracker


async def test_policy_answers_follow_the_shop_config(shop_db):
    cases = [("invoice", "可以开专票吗", "增值税专用发票"), ("payment", "能用花呗分期吗", "花呗"),
             ("shipping_policy", "发顺丰吗", "顺丰"), ("shipping_policy", "一般几天到", "48 小时内发货")]
    for intent, text, expected in cases:
        messages, _ = await run(ActionShopPolicy(), tracker("im:guest-2", text, intent))
        assert responses(messages) == ["utter_policy_answer"]
        assert expected in messages[0]["answer"], text


async def test_complaint_opens_one_ticket_and_repeats_add_to_it(shop_db):
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


async def test_request_for_a_person_is_answered_honestly_with_a_ticket(shop_db):
    messages, _ = await run(ActionRequestHuman(), tracker("im:guest-3", "转人工", "request_human"))
    assert responses(messages) == ["utter_human_not_available"]
    assert messages[0]["ticket_no"].startswith("T") and messages[0]["service_phone"]


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
