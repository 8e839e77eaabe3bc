"""The truth run's two checks as pure code: each can fail, and each excuses exactly what it says."""

from __future__ import annotations

from devkit.truth import LiveWrongCheck, Observation, StuckCheck, Top

T = "1234567890123"
A: Top = ("0.40", "10", "0.60", "20")
B: Top = ("0.41", "10", "0.60", "20")


def obs(status: str | None, top: Top | None = A, truth: Top = A, withheld: bool = False) -> Observation:
    return Observation(T, status, top if top is not None else (None,) * 4, truth, truth, withheld)


def test_live_and_wrong_longer_than_the_limit_is_a_violation() -> None:
    check = LiveWrongCheck([T], limit=1.0)
    for i in range(11):  # 0.0 .. 1.0 s wrong: exactly the limit, allowed
        check.observe(i * 0.1, obs("live", A, truth=B))
    assert check.violations == []
    check.observe(1.1, obs("live", A, truth=B))
    assert len(check.violations) == 1
    assert abs(check.longest[T] - 1.1) < 1e-9


def test_live_wrong_clock_restarts_on_right_or_non_live_and_a_change_between_reads_is_no_fault() -> None:
    check = LiveWrongCheck([T], limit=1.0)
    check.observe(0.0, obs("live", A, truth=B))
    check.observe(0.9, obs("live", A, truth=B))
    check.observe(1.0, obs("stale", A, truth=B))
    check.observe(1.1, obs("live", A, truth=B))
    check.observe(2.0, Observation(T, "live", A, B, A))  # truth moved between the reads: right
    check.observe(2.1, obs("live", A, truth=B))
    check.observe(3.0, obs("live", A, truth=B))
    assert check.violations == []
    assert check.wrong == 5 and check.not_live == 1


def test_non_live_while_served_longer_than_the_limit_is_a_violation() -> None:
    check = StuckCheck([T], limit=15.0)
    for i in range(152):  # 15.1 s non-live
        check.observe(obs("stale"), check.begin(i * 0.1))
    assert len(check.violations) == 1, check.longest
    assert abs(check.worst() - 15.1) < 1e-6


def test_a_missing_hash_counts_as_non_live() -> None:
    check = StuckCheck([T], limit=1.0)
    for i in range(12):
        check.observe(obs(None, None), check.begin(i * 0.1))
    assert len(check.violations) == 1


def test_withheld_by_the_exchange_restarts_the_clock() -> None:
    """Twenty seconds muted at the exchange then five more: the sidecar had five, not 25."""
    check = StuckCheck([T], limit=15.0)
    for i in range(200):
        check.observe(obs("stale", withheld=True), check.begin(i * 0.1))
    for i in range(200, 250):
        check.observe(obs("stale"), check.begin(i * 0.1))
    assert check.violations == []
    assert check.withheld == 200
    assert 4.8 < check.worst() < 5.0


def test_redis_unreadable_pauses_the_clock_but_does_not_restart_it() -> None:
    check = StuckCheck([T], limit=15.0)
    t = 0.0
    for _ in range(100):  # 10 s non-live
        check.observe(obs("stale"), check.begin(t))
        t += 0.1
    for _ in range(50):  # 5 s of Redis down: not counted
        check.unreadable(t)
        t += 0.1
    for _ in range(60):  # 6 s more non-live: 16 s in all
        check.observe(obs("stale"), check.begin(t))
        t += 0.1
    assert len(check.violations) == 1, check.longest
    assert 15.5 < check.worst() < 16.0


def test_live_sample_ends_the_streak() -> None:
    check = StuckCheck([T], limit=15.0)
    for i in range(100):
        check.observe(obs("stale"), check.begin(i * 0.1))
    check.observe(obs("live"), check.begin(10.0))
    for i in range(101, 200):
        check.observe(obs("resyncing"), check.begin(i * 0.1))
    assert check.violations == []
