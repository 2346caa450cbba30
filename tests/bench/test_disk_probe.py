"""The benchmark's disk probe: it flushes while its block runs, counts slow flushes, leaves nothing."""
import time

from bench.disk_probe import STALL_MS, DiskStallProbe


def test_the_probe_flushes_during_its_block_and_removes_its_file(tmp_path):
    with DiskStallProbe(tmp_path, period_s=0.02) as probe:
        time.sleep(0.3)
    summary = probe.summary()
    assert summary["flushes"] >= 5
    assert summary["flushes"] == len(probe.flush_ms)
    assert summary["stalls"] == sum(1 for ms in probe.flush_ms if ms > STALL_MS)
    assert summary["max_ms"] == max(probe.flush_ms) > 0
    assert not any(tmp_path.iterdir())
    flushes = summary["flushes"]
    time.sleep(0.1)
    assert len(probe.flush_ms) == flushes  # stopped at the end of the block
