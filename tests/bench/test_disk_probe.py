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


def test_the_probe_knows_whether_it_shares_the_disk_of_the_database(tmp_path, postgres_shop):
    from pathlib import Path

    from bench.disk_probe import same_disk

    assert same_disk(tmp_path, f"sqlite:///{tmp_path / 'shop.db'}") is True
    if Path("/dev/shm").is_dir() and tmp_path.stat().st_dev != Path("/dev/shm").stat().st_dev:
        assert same_disk(tmp_path, "sqlite:////dev/shm/shop.db") is False
    # the PostgreSQL server on this machine: its data directory is read and compared
    assert same_disk(tmp_path, postgres_shop) is not None
    # a server that cannot be reached: unknown, not a guess
    assert same_disk(tmp_path, "postgresql://siyu@127.0.0.1:1/none") is None


def test_the_disk_load_writes_during_its_block_and_leaves_nothing(tmp_path):
    from bench.disk_probe import DiskLoad

    load = DiskLoad(tmp_path, mb=1, pause_s=0.01)
    seen = False
    with load:
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            seen = load.path.exists()
            time.sleep(0.005)
    assert seen, "the writer wrote its file"
    assert load._process.poll() is not None, "the writer is stopped at the end of the block"
    assert not any(tmp_path.iterdir())
