"""Anonymous order verification cannot be brute-forced: guesses count per order number over every
conversation, per client address over every order, before they are compared; locks are audited
and only the owner or staff lift them; cancelling needs a recent proof from this conversation.
Real demo shop on SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
import subprocess
from datetime import timedelta

import pytest
from sqlalchemy import select

from actions import order_verification
from actions.db.engine import async_session
from actions.db.models import AuditEvent, OrderVerification, VerificationGuard, utcnow
from actions.order_verification import Outcome
from actions.orders import ActionOrderTask, ValidateOrderForm
from bot.settings import VerificationRules, get_settings
from tests.actions import shop_queries as q
from tests.actions.helpers import responses, run, tracker
from tests.support import PYTHON, REPO

RULES = VerificationRules()


@pytest.fixture(autouse=True)
def _no_earlier_guesses(shop_db):
    q.reset_verification()


async def guess(order_no, tail, conversation, client=None, rules=RULES):
    async with async_session() as session:
        return await order_verification.attempt(session, order_no, tail, conversation, client, rules)


def audit(action):
    with q.session() as s:
        return list(s.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars())


async def test_wrong_answers_from_new_conversations_lock_the_order_for_everyone(shop_db):
    order = q.order_in("paid")
    outcomes = [await guess(order.order_no, q.wrong_tail(order), f"im:guest-{n}") for n in range(5)]
    assert outcomes == [Outcome.wrong] * 4 + [Outcome.locked]
    # even the right answer, from a fresh conversation, is refused now
    assert await guess(order.order_no, order.receiver_phone[-4:], "im:guest-new") is Outcome.locked
    [locked] = audit("verification_locked")
    assert locked.subject == f"order:{order.order_no}" and locked.actor == "system"
    assert locked.detail["failures"] == 5


async def test_an_order_number_that_does_not_exist_is_counted_and_locked_the_same_way(shop_db):
    outcomes = [await guess("SY29991231000001", "1234", f"im:guest-{n}") for n in range(6)]
    assert outcomes == [Outcome.wrong] * 4 + [Outcome.locked] * 2


async def test_parallel_guesses_are_counted_before_they_are_compared(shop_db):
    order = q.order_in("paid")
    wrong = q.wrong_tail(order)
    outcomes = await asyncio.gather(*(guess(order.order_no, wrong, f"mp:attacker{n}") for n in range(20)))
    assert outcomes.count(Outcome.wrong) == 4
    assert outcomes.count(Outcome.locked) == 16
    with q.session() as s:
        guard = s.get(VerificationGuard, f"order:{order.order_no}")
        assert guard.failures == 5 and guard.locked_at is not None and guard.locked_until is None


async def test_one_client_address_is_refused_after_too_many_failures_over_all_orders(shop_db):
    rules = VerificationRules(max_failures_per_client=4)
    numbers = [f"SY2999123100000{n}" for n in range(3)]
    outcomes = [await guess(number, "1234", f"im:guest-{number}-{k}", client="203.0.113.7", rules=rules)
                for number in numbers for k in range(2)]
    assert outcomes == [Outcome.wrong] * 3 + [Outcome.locked] * 3
    async with async_session() as session:
        assert await order_verification.is_locked(session, "SY29991231999999", "203.0.113.7", rules)
        assert not await order_verification.is_locked(session, "SY29991231999999", "198.51.100.1", rules)
    [locked] = audit("verification_locked")
    assert locked.subject == "client:203.0.113.7" and locked.detail["until"]


async def test_the_right_answer_is_not_counted_as_a_failure(shop_db):
    order = q.order_in("paid")
    for n in range(4):
        assert await guess(order.order_no, q.wrong_tail(order), f"im:guest-{n}") is Outcome.wrong
    assert await guess(order.order_no, order.receiver_phone[-4:], "im:guest-owner") is Outcome.verified
    with q.session() as s:
        assert s.get(VerificationGuard, f"order:{order.order_no}").failures == 4


async def test_the_owner_identified_on_a_channel_lifts_the_lock(shop_db):
    order = q.order_in("paid")
    for n in range(5):
        await guess(order.order_no, q.wrong_tail(order), f"im:guest-{n}")
    owner = tracker(q.sender_of(order), order.order_no, "order_status", slots={"order_task": "status"})
    from rasa_sdk.executor import CollectingDispatcher

    result = await ValidateOrderForm().validate_order_id(order.order_no, CollectingDispatcher(), owner, {})
    assert result["order_id"] == order.order_no
    [lifted] = audit("verification_unlocked")
    assert lifted.actor.startswith("customer:") and lifted.subject == f"order:{order.order_no}"
    assert await guess(order.order_no, order.receiver_phone[-4:], "im:guest-later") is Outcome.verified


async def test_a_locked_order_ends_the_form_with_the_same_answer_whether_it_exists_or_not(shop_db):
    from rasa_sdk.executor import CollectingDispatcher

    order = q.order_in("paid")
    for number in (order.order_no, "SY29991231000002"):
        for n in range(5):
            await guess(number, "0000" if number != order.order_no else q.wrong_tail(order), f"im:guest-{n}")
        dispatcher = CollectingDispatcher()
        t = tracker("im:guest-visitor", number, "order_status", slots={"order_task": "status"})
        result = await ValidateOrderForm().validate_order_id(number, dispatcher, t, {})
        assert result == {"order_id": None, "pending_order": None, "verify_refused": True}
        assert responses(dispatcher.messages) == ["utter_verify_order_locked"]


def test_staff_lift_a_lock_from_the_command_line(shop_db):
    order = q.order_in("paid")
    with q.session() as s:
        now = utcnow()
        s.add(VerificationGuard(key=f"order:{order.order_no}", failures=5, window_started_at=now, locked_at=now,
                                updated_at=now))
        s.commit()
    listed = subprocess.run([PYTHON, "-m", "bot", "verification", "locks"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0 and f"order:{order.order_no}" in listed.stdout
    done = subprocess.run([PYTHON, "-m", "bot", "verification", "unlock", order.order_no, "--by", "小王"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [lifted] = audit("verification_unlocked")
    assert lifted.actor == "staff:小王"
    again = subprocess.run([PYTHON, "-m", "bot", "verification", "unlock", order.order_no], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "no lock" in again.stderr


async def test_cancelling_needs_a_recent_proof_from_this_conversation(shop_db):
    order = q.order_in("paid")
    rules = get_settings().shop.orders.verification
    with q.session() as s:
        s.add(OrderVerification(order_no=order.order_no, conversation_id="im:guest-slow", client=None,
                                verified_at=utcnow() - timedelta(minutes=rules.fresh_minutes_for_changes + 1)))
        s.commit()
    cancel = tracker("im:guest-slow", "确认", "affirm", slots={
        "order_id": order.order_no, "order_task": "cancel", "cancel_confirm": True, "task_allowed": True})
    messages, _ = await run(ActionOrderTask(), cancel)
    assert responses(messages) == ["utter_verify_expired"]
    assert q.reload_order(order.order_no).status == "paid"
    # the same proof still shows the status, in that conversation only
    status = tracker("im:guest-slow", "", slots={"order_id": order.order_no, "order_task": "status"})
    messages, _ = await run(ActionOrderTask(), status)
    assert responses(messages)[0].startswith("utter_order_status")
    # a fresh proof from another conversation does not let this one cancel
    assert await guess(order.order_no, order.receiver_phone[-4:], "im:guest-other") is Outcome.verified
    messages, _ = await run(ActionOrderTask(), cancel)
    assert responses(messages) == ["utter_verify_expired"]
    assert q.reload_order(order.order_no).status == "paid"
