"""Hot refresh: a running KnowledgeBase picks up a new index without a restart, atomically."""
import asyncio
import threading
import time

from kb_testdata import SMALL_FAQ, write_faq

from knowledge import ANSWER, KnowledgeBase
from knowledge.builder import build_and_publish
from knowledge.importer import read_faq
from knowledge.publish import current_version

NEW_ROW = ["N1", "可以寄到月球吗？", "抱歉，月球暂不发货。", "月球能发货吗|发货到月球", "物流", "新规则", "", ""]


def _build(tmp_path, rows, out, calibrate=True):
    src = write_faq(tmp_path / f"faq-{len(rows)}.csv", rows)
    return build_and_publish(read_faq(src).entries, out, calibrate_thresholds=calibrate)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_new_build_is_picked_up_after_the_refresh_interval(tmp_path):
    out = tmp_path / "index"
    _build(tmp_path, SMALL_FAQ, out)
    clock = FakeClock()
    kb = KnowledgeBase(out, refresh_seconds=5, clock=clock)
    assert kb.search("月球能发货吗") == [] or kb.search("月球能发货吗")[0].entry.id != "N1"
    first = kb.version
    _build(tmp_path, SMALL_FAQ + [NEW_ROW], out)
    clock.t += 1  # within the interval: no disk check, the old index answers
    assert kb.version == first and "N1" not in [h.entry.id for h in kb.search("可以寄到月球吗", k=3)]
    clock.t += 5
    d = kb.decide("可以寄到月球吗")
    assert kb.version == current_version(out) != first
    assert d.action == ANSWER and d.answer.id == "N1" and d.answer.source == "新规则"


def test_reimport_replaces_by_id_without_duplicates(tmp_path):
    out = tmp_path / "index"
    _build(tmp_path, SMALL_FAQ, out, calibrate=False)
    changed = [r[:] for r in SMALL_FAQ]
    changed[0][2] = "签收后 7 天内可以退货（新版答案）。"
    _build(tmp_path, changed, out, calibrate=False)
    kb = KnowledgeBase(out, refresh_seconds=0)
    kb.refresh(force=True)
    ids = [e.id for e in kb.index.entries]
    assert len(ids) == len(set(ids)) == len(SMALL_FAQ)
    assert kb.index.entries[kb.index.by_id["R1"]].answer.endswith("（新版答案）。")


def test_old_builds_are_pruned_and_the_pointer_is_replaced_atomically(tmp_path):
    out = tmp_path / "index"
    for _ in range(5):
        _build(tmp_path, SMALL_FAQ, out, calibrate=False)
    assert len(list((out / "builds").iterdir())) == 3
    assert (out / "builds" / current_version(out) / "manifest.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".CURRENT")]  # no temp pointer left


def test_readers_never_see_a_half_written_index(tmp_path):
    out = tmp_path / "index"
    _build(tmp_path, SMALL_FAQ, out, calibrate=False)
    kb = KnowledgeBase(out, refresh_seconds=0)
    errors = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                kb.refresh(force=True)
                assert kb.index is not None and len(kb.index) in (len(SMALL_FAQ), len(SMALL_FAQ) + 1)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(4):
            _build(tmp_path, SMALL_FAQ + ([NEW_ROW] if i % 2 else []), out, calibrate=False)
    finally:
        stop.set()
        thread.join()
    assert not errors


def test_a_broken_build_keeps_the_old_index(tmp_path):
    out = tmp_path / "index"
    _build(tmp_path, SMALL_FAQ, out, calibrate=False)
    kb = KnowledgeBase(out, refresh_seconds=0)
    kb.refresh(force=True)
    good = kb.version
    broken = out / "builds" / "broken-build"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json", encoding="utf-8")
    (out / "CURRENT").write_text("broken-build\n", encoding="utf-8")
    assert kb.refresh(force=True) is False
    assert kb.version == good and kb.decide("可以开发票吗").answer is not None


async def test_async_refresh_loads_in_a_thread_and_does_not_block_the_loop(tmp_path):
    out = tmp_path / "index"
    _build(tmp_path, SMALL_FAQ, out)
    kb = KnowledgeBase(out, refresh_seconds=0)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    d = await kb.adecide("退货运费谁出")  # first call: waits for the load, in a worker thread
    elapsed = time.perf_counter() - started
    task.cancel()
    assert d.answer is not None and d.answer.id == "R2"
    # the loop kept turning while the index loaded: loaded on the loop itself, the ticker would get
    # no turn before the answer. (No rate is asserted: on a host that lends its CPUs to other guests,
    # the loading thread can hold the GIL for most of the load; CI saw 3 ticks in 645 ms.)
    assert ticks >= 3, (ticks, elapsed)

    first = kb.version
    _build(tmp_path, SMALL_FAQ + [NEW_ROW], out)
    await kb.adecide("可以寄到月球吗")  # starts the reload; the old index may answer this one
    for _ in range(200):
        if kb.version != first:
            break
        await asyncio.sleep(0.02)
    assert kb.version == current_version(out)
    assert (await kb.adecide("可以寄到月球吗")).answer.id == "N1"
