"""错题本 from the desk, against the whole product: staff mark a misunderstood customer message with
the intent and the knowledge entry that were right; a supervisor retrains from the console; the
new knowledge index answers that question from the right entry, the new model is tested on the
corrections before anything changes, and once switched in the Rasa server pulls it."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.desk.test_console_api import StaffClient, customer_says, until

pytestmark = pytest.mark.model
QUESTION = "我家猫把吊牌咬掉了，衣服还能退吗"


async def test_a_correction_reaches_the_next_build_and_is_switched_in_by_a_supervisor(own_product):
    base = own_product.console_url
    agent, lead = StaffClient(base), StaffClient(base)
    sender = f"fix{uuid.uuid4().hex[:8]}"
    try:
        assert await agent.login("agent1") == 200 and await lead.login("lead") == 200
        await customer_says(own_product, sender, "转人工")

        async def listed():
            status, body = await agent.get("/api/desk/conversations?state=queued")
            return next((c for c in body["conversations"] if c["conversation_id"] == f"im:{sender}"), None)
        item = await until(listed, 20, "the handoff")
        assert (await agent.post(f"/api/desk/conversations/{item['id']}/claim"))[0] == 200
        await customer_says(own_product, sender, QUESTION)

        async def the_question():
            status, detail = await agent.get(f"/api/desk/conversations/{item['id']}")
            return next((m for m in detail["messages"] if m["from"] == "customer" and m["text"] == QUESTION), None)
        message = await until(the_question, 20, "the question in the transcript")

        # refusals first: no such intent, nothing said to be right, a moderator
        path = f"/api/desk/conversations/{item['id']}/corrections"
        assert (await agent.post(path, {"event_id": message["event_id"], "intent": "no_such_intent"}))[0] == 400
        assert (await agent.post(path, {"event_id": message["event_id"]}))[0] == 400
        status, made = await agent.post(path, {"event_id": message["event_id"], "intent": "return_refund",
                                               "kb_entry": "SH-001", "note": "猫咬吊牌也属于吊牌不完整"})
        assert status == 200 and made["right_intent"] == "return_refund" and made["kb_correction_id"]
        status, listed_corrections = await agent.get("/api/desk/corrections")
        assert any(c["id"] == made["id"] for c in listed_corrections["corrections"])

        # only supervisors retrain; the new model is tested before it serves
        assert (await agent.post("/api/desk/training"))[0] == 403
        status, job = await lead.post("/api/desk/training")
        assert status == 202 and job["state"] == "training"
        assert (await lead.post("/api/desk/training"))[0] == 409  # one at a time

        async def finished():
            status, body = await lead.get("/api/desk/training")
            model = next(m for m in body["models"] if m["id"] == job["id"])
            return model if model["state"] in ("ready", "failed") else None
        model = await until(finished, 600, "the training to finish")
        assert model["state"] == "ready", model["log"]
        results = model["results"]
        assert results["candidate"]["corrections"]["examples"] >= 1
        assert results["candidate"]["field_set"]["accuracy"] >= 0.85
        assert results["current_model"] and model["model"] != results["current_model"]

        # the knowledge index built with the correction answers the question from the right entry
        from knowledge import KnowledgeBase

        kb = KnowledgeBase(Path(own_product.env["SIYU_KNOWLEDGE_INDEX_DIR"]))
        decision = kb.decide(QUESTION)
        assert decision.answer is not None and decision.answer.id == "SH-001", decision

        # switched in by the supervisor: the Rasa server pulls it (Rasa's model-server polling)
        status, active = await lead.post(f"/api/desk/training/{model['id']}/activate")
        assert status == 200 and active["state"] == "active"
        log = Path(own_product.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "Loading model" not in _after_activation(log, model["model"]):
            await _pause()
        assert model["model"] in _after_activation(log, model["model"]), "the Rasa server loaded the new model"
        assert await customer_says(own_product, "someone-else", "你好"), "the bot still answers"
    finally:
        await agent.close()
        await lead.close()


def _after_activation(log: Path, model_name: str) -> str:
    text = log.read_text(errors="replace")
    return "\n".join(line for line in text.splitlines() if "Loading model" in line and model_name in line)


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.5)
