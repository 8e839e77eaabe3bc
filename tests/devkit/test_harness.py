"""The dev kit's own pieces that figures and verdicts rest on: histogram quantiles (the bench's
receive -> PUBLISH), label sums (every metric assertion), the waits, /proc readers and the
demo's fakeredis fallback."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import redis

from devkit import procfs, redis_server
from devkit.scrape import by_label, hist_quantile, parse, total
from devkit.wait import poll, wait_for, wait_for_none

TEXT = """\
# HELP pm_sidecar_reconnects_total Reconnects.
# TYPE pm_sidecar_reconnects_total counter
pm_sidecar_reconnects_total{reason="eof",shard="0"} 2.0
pm_sidecar_reconnects_total{reason="silence",shard="0"} 1.0
pm_sidecar_reconnects_total{reason="eof",shard="1"} 4.0
"""


def test_total_sums_the_samples_whose_labels_include_the_ones_asked() -> None:
    samples = parse(TEXT)
    assert total(samples, "pm_sidecar_reconnects_total") == 7.0
    assert total(samples, "pm_sidecar_reconnects_total", reason="eof") == 6.0
    assert total(samples, "pm_sidecar_reconnects_total", reason="eof", shard="1") == 4.0
    assert total(samples, "pm_sidecar_nothing") == 0.0
    assert by_label(samples, "pm_sidecar_reconnects_total") == {"eof,0": 2.0, "silence,0": 1.0, "eof,1": 4.0}


def test_hist_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    buckets = [(0.001, 10.0), (0.005, 50.0), (0.01, 90.0), (float("inf"), 100.0)]
    # rank 50 is the top of the 5 ms bucket; rank 70 is half way through the 5..10 ms bucket.
    assert hist_quantile(buckets, 0.5) == pytest.approx(0.005)
    assert hist_quantile(buckets, 0.7) == pytest.approx(0.0075)
    assert hist_quantile(buckets, 0.05) == pytest.approx(0.0005)
    assert hist_quantile(buckets, 0.99) == 0.01  # in +Inf: the last finite bound
    assert hist_quantile([], 0.5) != hist_quantile([], 0.5)  # NaN without samples


def test_waits_return_the_value_and_fail_saying_what_is_still_wrong() -> None:
    state = {"n": 0}

    def count() -> int:
        state["n"] += 1
        return state["n"] if state["n"] >= 3 else 0

    assert wait_for(count, 1.0, interval=0.001) == 3
    assert poll(lambda: 0, 0.01, interval=0.001) == 0
    with pytest.raises(AssertionError, match=r"timed out after 0\.0s waiting for the thing"):
        wait_for(lambda: False, 0.01, interval=0.001, what="the thing")
    with pytest.raises(AssertionError, match=r"(?s)waiting for nothing wrong.*still: token a\ntoken b"):
        wait_for_none(lambda: ["token a", "token b"], 0.01, interval=0.001, what="nothing wrong")
    wait_for_none(lambda: [], 0.01)


def test_procfs_reads_this_process() -> None:
    done = threading.Event()
    helper = threading.Thread(target=done.wait, daemon=True)
    helper.start()
    try:
        st = procfs.status(os.getpid())
        assert st.threads == threading.active_count() >= 2
    finally:
        done.set()
        helper.join()
    assert st.rss_kb > 1000 and st.rss_mb == st.rss_kb / 1024
    before = procfs.cpu_s(os.getpid())
    wait_for(lambda: procfs.cpu_s(os.getpid()) > before, 5, interval=0)  # busy: CPU time grows
    user, system = procfs.cpu_split(os.getpid())
    assert user + system == pytest.approx(procfs.cpu_s(os.getpid()), abs=0.05)
    assert sum(procfs.thread_cpu_s(os.getpid()).values()) <= procfs.cpu_s(os.getpid()) + 0.05


def test_throwaway_redis_falls_back_to_fakeredis_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_server.shutil, "which", lambda name: None)
    store = redis_server.start_throwaway_redis(tmp_path)
    try:
        assert "fakeredis" in store.describe() and "no redis-server on PATH" in store.describe()
        client = redis.Redis.from_url(store.url, decode_responses=True)
        client.set("k", "v")
        assert client.get("k") == "v"
        client.close()
    finally:
        store.stop()
