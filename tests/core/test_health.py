"""sidecar.core.health (EWMA, silence/stall thresholds, backoff) and sidecar.core.ratelog."""

from __future__ import annotations

import logging
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core import health
from sidecar.core.ratelog import MAX_KEYS, RateLimitedLog
from tests.core.harness import MaxRandom

# ---- EWMA --------------------------------------------------------------------------------------


def test_update_gap_first_sample_is_taken_as_is() -> None:
    assert health.update_gap(None, 7.5) == 7.5


def test_update_gap_weights_the_newest_gap_by_alpha() -> None:
    assert health.GAP_ALPHA == 0.1
    assert health.update_gap(10.0, 20.0) == pytest.approx(11.0)
    assert health.update_gap(10.0, 0.0) == pytest.approx(9.0)
    ewma = None
    for _ in range(200):
        ewma = health.update_gap(ewma, 3.0)
    assert ewma == pytest.approx(3.0)


# ---- silence threshold ---------------------------------------------------------------------------


def test_silence_threshold_without_a_norm_is_the_ceiling() -> None:
    assert health.silence_threshold(None, 1.0, 5.0, 120.0) == 120.0


def test_silence_threshold_scales_with_the_socket_norm() -> None:
    assert health.SILENCE_FACTOR == 20.0
    assert health.silence_threshold(1.0, 1.0, 5.0, 120.0) == 20.0  # busy: suspect after 20 gaps
    assert health.silence_threshold(0.01, 1.0, 5.0, 120.0) == 5.0  # never below the floor
    assert health.silence_threshold(100.0, 1.0, 5.0, 120.0) == 120.0  # never above the ceiling


def test_silence_threshold_quiet_multiplier_is_capped_by_the_ceiling() -> None:
    assert health.silence_threshold(1.0, 2.0, 5.0, 120.0) == 40.0
    assert health.silence_threshold(1.0, 4.0, 5.0, 120.0) == 80.0
    assert health.silence_threshold(1.0, 64.0, 5.0, 120.0) == 120.0
    assert health.silence_threshold(0.01, 2.0, 5.0, 120.0) == 10.0  # floor, then multiplier


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.none(), st.floats(0, 1e6)),
    st.sampled_from([1.0, 2.0, 4.0, 64.0]),
    st.floats(0.1, 50),
    st.floats(50, 500),
)
def test_silence_threshold_is_bounded(gap: float | None, mult: float, lo: float, hi: float) -> None:
    value = health.silence_threshold(gap, mult, lo, hi)
    assert lo <= value <= hi


# ---- stall threshold and backoff -----------------------------------------------------------------


def test_stall_threshold_needs_a_norm() -> None:
    assert health.stall_threshold(None, 100, 120.0) is None
    assert health.stall_threshold(1.0, health.STALL_MIN_EVENTS - 1, 120.0) is None
    assert health.STALL_MIN_EVENTS == 10


def test_stall_threshold_values() -> None:
    assert health.stall_threshold(2.0, 10, 120.0) == 60.0  # 30 usual gaps
    assert health.stall_threshold(0.1, 10, 120.0) == 30.0  # never below STALL_MIN_S
    assert health.stall_threshold(50.0, 10, 120.0) == 120.0  # never above the ceiling
    assert health.stall_threshold(50.0, 10, 10.0) == 30.0  # a ceiling below the minimum is lifted


def test_stall_backoff_doubles_up_to_an_hour() -> None:
    assert [health.stall_backoff(n) for n in range(8)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert health.stall_backoff(1000) == 3600.0


def test_full_jitter_windows_grow_exponentially_and_are_capped() -> None:
    rng = MaxRandom()
    delays = [health.full_jitter(rng, n, 0.5, 30.0) for n in range(10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert all(a == 0.0 for a, _ in rng.windows)  # full jitter: always from zero
    assert health.full_jitter(MaxRandom(), 10_000, 0.5, 30.0) == 30.0  # no overflow


def test_full_jitter_really_jitters() -> None:
    rng = random.Random(1)
    samples = [health.full_jitter(rng, 3, 1.0, 30.0) for _ in range(500)]
    assert all(0.0 <= s <= 8.0 for s in samples)
    assert min(samples) < 1.0 and max(samples) > 7.0  # spread over the whole window
    assert len({round(s, 6) for s in samples}) > 400


# ---- RateLimitedLog ------------------------------------------------------------------------------


def test_ratelog_logs_once_then_counts_repeats(caplog: pytest.LogCaptureFixture) -> None:
    rl = RateLimitedLog(logging.getLogger("test.ratelog"), interval_s=60.0)
    with caplog.at_level(logging.INFO, logger="test.ratelog"):
        assert rl.warning("k", 0.0, "boom %d", 1) is True
        assert rl.warning("k", 10.0, "boom %d", 2) is False
        assert rl.warning("k", 59.9, "boom %d", 3) is False
        assert rl.info("other", 59.9, "other key") is True  # keys are independent
        assert rl.error("k", 60.0, "boom %d", 4) is True
        assert rl.warning("k", 130.0, "boom %d", 5) is True
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [
        (logging.WARNING, "boom 1"),
        (logging.INFO, "other key"),
        (logging.ERROR, "boom 4 (+2 similar in the last 60s)"),
        (logging.WARNING, "boom 5"),
    ]


def test_ratelog_memory_is_bounded() -> None:
    rl = RateLimitedLog(logging.getLogger("test.ratelog.bounded"), interval_s=60.0)
    for i in range(MAX_KEYS + 5):
        rl._allow(f"key{i}", 0.0)
    assert len(rl._last) <= MAX_KEYS
