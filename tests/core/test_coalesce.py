"""sidecar.core.coalesce, rule by rule: each test one situation the writer met (or could meet) in
production, against the model Redis of ``coalesce_model``. The same rules over arbitrary
interleavings: ``test_coalesce_properties``.
"""

from __future__ import annotations

from sidecar.core.actions import QuoteWrite
from sidecar.core.coalesce import BATCH_LIMIT, Coalescer
from tests.core.coalesce_model import ALIVE_TTL, TTL, ModelEngine, ModelRedis, check_equal, drain, sweep


def test_a_refresh_alone_is_never_written_over_a_state_redis_may_not_have() -> None:
    """The bug of today's writer: after an outage the refresh was the only pending entry, the
    rewrite skipped the token, and Redis held a hash of nothing but updated_at."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    c.submit([engine.change("a", "live", 1)], 0.0)
    batch = c.take(0.0, limit=10)
    assert batch is not None
    c.done(batch, ModelRedis().apply(batch), 0.0)
    c.submit([engine.refresh("a", 2)], 0.1)
    batch = c.take(0.1, limit=10)
    assert batch is not None
    (w,) = batch.writes
    assert dict(w.fields) == engine.state["a"], "a refresh must carry the full latest state"
    assert w.publish is False


def test_a_failed_change_is_not_lost_when_a_refresh_arrives_meanwhile() -> None:
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    drain(c, redis, 0.0)
    c.submit([engine.change("a", "stale", 2)], 0.1)
    batch = c.take(0.1, limit=10)
    assert batch is not None
    c.submit([engine.refresh("a", 3)], 0.2)  # arrives while the failing flush is out
    c.failed(batch, 0.2)
    drain(c, redis, 0.3)
    assert redis.hashes["a"] == engine.state["a"]
    assert redis.hashes["a"]["status"] == "stale"
    assert redis.messages[-1]["status"] == "stale", "the change was never published"


def test_a_batch_is_an_immutable_snapshot() -> None:
    """A refresh arriving after a batch was taken never changes what that batch writes or sends."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    c.submit([engine.change("a", "live", 1)], 0.0)
    batch = c.take(0.0, limit=10)
    assert batch is not None
    before = dict(batch.writes[0].fields)
    c.submit([engine.refresh("a", 99)], 0.1)
    assert dict(batch.writes[0].fields) == before
    assert batch.writes[0].message() == {**before, "token": "a"}


def test_restart_from_an_older_snapshot_is_detected_and_everything_rewritten() -> None:
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1), engine.change("b", "live", 1)], 0.0)
    drain(c, redis, 0.0)
    old = redis.snapshot()  # contains our own, older stamp
    c.submit([engine.change("a", "stale", 2), engine.change("b", "stale", 2)], 1.0)
    drain(c, redis, 1.0)
    redis = old.snapshot()
    c.submit_summary({"epoch": "e1"}, 2.0)
    batch = c.take(2.0, limit=10)
    assert batch is not None and batch.writes == ()
    assert c.done(batch, redis.apply(batch), 2.0) is True, "older stamp not noticed"
    drain(c, redis, 2.0)
    check_equal(engine, redis)


def test_a_readded_token_keeps_its_persist_when_newer_writes_coalesce_over_it() -> None:
    """Removed (key given a TTL), added again, then changed before the writer ran: the write that
    lands must still clear the TTL, or the live quote vanishes after the unsubscribe TTL."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    drain(c, redis, 0.0)
    c.submit([engine.remove("a", 1.0)], 1.0)
    drain(c, redis, 1.0)
    assert "a" in redis.expiring
    c.submit([engine.change("a", "pending", 2)], 2.0)  # re-added: persist=True
    c.submit([engine.change("a", "live", 3)], 2.1)  # newer write, persist=False
    drain(c, redis, 2.2)
    assert "a" not in redis.expiring, "re-added token kept the expiry of its removal"
    assert redis.hashes["a"]["status"] == "live"


def test_persist_survives_a_failed_flush_and_a_newer_write() -> None:
    c = Coalescer("s", ALIVE_TTL)
    c.submit([QuoteWrite("a", {"seq": "1"}, True, expire_s=TTL)], 0.0)
    c.submit([QuoteWrite("a", {"seq": "2"}, True, persist=True)], 0.1)
    batch = c.take(0.1, limit=10)
    assert batch is not None and batch.writes[0].persist
    c.submit([QuoteWrite("a", {"seq": "3"}, True)], 0.2)
    c.failed(batch, 0.2)
    batch = c.take(0.3, limit=10)
    assert batch is not None
    assert batch.writes[0].persist and batch.writes[0].fields["seq"] == "3"


def test_alive_ttl_counts_from_the_heartbeat_never_from_a_replay() -> None:
    c = Coalescer("s", ALIVE_TTL)
    c.submit_summary({"epoch": "e1"}, 10.0)
    batch = c.take(10.0, limit=10)
    assert batch is not None and batch.summary is not None
    assert batch.summary.alive_px == 5000
    c.failed(batch, 13.0)  # Redis was away for 3 s; the loop is wedged (no new heartbeat)
    c.swept()  # the writer's sweep, back on Redis
    batch = c.take(13.0, limit=10)
    assert batch is not None and batch.summary is not None
    assert batch.summary.alive_px == 2000, "a replayed summary restarted the alive TTL"
    c.failed(batch, 15.5)
    c.swept()
    batch = c.take(15.5, limit=10)
    assert batch is not None and batch.summary is not None
    assert batch.summary.alive_px is None, "alive written after its heartbeat's TTL ran out"


def test_final_batch_takes_what_is_in_flight_deletes_alive_and_ends_the_writer() -> None:
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    c.submit([engine.change("a", "live", 1), engine.change("r", "resolved", 1)], 0.0)
    c.submit_summary({"epoch": "e1", "live": "1"}, 0.0)
    inflight = c.take(0.0, limit=10)  # the writer thread's transaction, stuck behind a slow Redis
    assert inflight is not None
    c.submit([engine.change("a", "stale", 2), engine.change("b", "stale", 2)], 0.5)
    c.submit_summary({"epoch": "e1", "live": "0"}, 0.5)
    final = c.take_final(0.6)
    # r is only in flight (resolved stays resolved): the final write must carry it, since the
    # transaction carrying it is killed by the final one.
    assert {w.token: w.fields["status"] for w in final.writes} == {
        "a": "stale",
        "b": "stale",
        "r": "resolved",
    }
    assert final.summary is not None and final.summary.delete_alive and final.summary.alive_px is None
    assert final.summary.fields["live"] == "0"
    c.submit([engine.change("a", "live", 3)], 0.7)
    assert c.take(0.7, limit=10) is None, "nothing may be written after the final transaction"
    c.done(inflight, None, 0.8)
    assert c.take(0.8, limit=10) is None


def test_removed_tokens_are_forgotten_once_their_key_has_expired() -> None:
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    c.submit([engine.remove("a")], 0.0)
    drain(c, redis, 0.0)
    c.rewrite(100.0)
    sweep(c, redis)
    batch = c.take(100.0, limit=10)
    assert batch is not None and batch.writes[0].expire_s == TTL - 100
    c.done(batch, redis.apply(batch), 100.0)
    c.rewrite(float(TTL))
    sweep(c, redis)
    batch = c.take(float(TTL), limit=10)
    assert batch is not None and batch.writes == (), "an expired removal was written again"
    assert "a" not in c.known


def test_a_restart_after_a_failed_flush_still_gets_every_token_back() -> None:
    """A failed transaction leaves the stamp unknown, so only the rewrite it schedules can bring
    back tokens that were not in it when Redis comes back empty."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    drain(c, redis, 0.0)
    c.submit([engine.change("b", "live", 2)], 1.0)
    batch = c.take(1.0, limit=10)
    assert batch is not None and [w.token for w in batch.writes] == ["b"]
    c.failed(batch, 1.0)
    redis = redis.restarted_empty()  # it was a restart, empty
    drain(c, redis, 2.0)
    check_equal(engine, redis)


def test_a_readded_token_is_persisted_even_if_the_engine_did_not_ask() -> None:
    """The coalescer knows the key it wrote last had a TTL: the next non-expiring write clears it."""
    c = Coalescer("s", ALIVE_TTL)
    redis = ModelRedis()
    c.submit([QuoteWrite("a", {"seq": "1", "status": "unsubscribed"}, True, expire_s=TTL)], 0.0)
    drain(c, redis, 0.0)
    c.submit([QuoteWrite("a", {"seq": "2", "status": "pending"}, True)], 1.0)
    drain(c, redis, 1.0)
    assert "a" not in redis.expiring


def test_a_rewrite_clears_a_ttl_an_older_snapshot_brought_back() -> None:
    """Redis restarts from a snapshot taken while the token was unsubscribed (its key expiring);
    the token is desired again: the rewrite must PERSIST it, or its live quote vanishes."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    c.submit([engine.remove("a")], 0.0)
    drain(c, redis, 0.0)
    old = redis.snapshot()
    c.submit([engine.change("a", "live", 2)], 1.0)  # re-added
    drain(c, redis, 1.0)
    assert "a" not in redis.expiring
    redis = old.snapshot()
    drain(c, redis, 2.0)
    check_equal(engine, redis)


def test_orphans_are_hashes_of_this_epoch_for_tokens_no_longer_known() -> None:
    c = Coalescer("s", ALIVE_TTL)
    assert c.orphans(["x"], ["e1"]) == [], "no summary yet: no epoch to match"
    c.submit_summary({"epoch": "e1"}, 0.0)
    c.submit([QuoteWrite("known", {"seq": "1"}, True)], 0.0)
    got = c.orphans(["known", "gone", "older_run", "no_epoch"], ["e1", "e1", "e0", None])
    assert got == ["gone"]


def test_after_an_outage_the_alive_key_waits_for_every_rewritten_hash() -> None:
    """A rewrite bigger than one transaction: the alive key must not come back in its first
    batch while later batches' hashes still say what Redis kept from before the outage."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    tokens = [f"t{i}" for i in range(5)]
    c.submit([engine.change(t, "live", 1) for t in tokens], 0.0)
    c.submit_summary({"epoch": "e"}, 0.0)
    drain(c, redis, 0.0)
    c.submit_summary({"epoch": "e"}, 1.0)
    c.rewrite(1.0)
    sweep(c, redis)  # the writer's sweep runs first (nothing to delete here)
    seen = []
    while (batch := c.take(1.0, limit=2)) is not None:
        seen.append((len(batch.writes), batch.summary is not None))
        c.done(batch, redis.apply(batch), 1.0)
    assert seen == [(2, False), (2, False), (1, True)]


def test_after_an_outage_the_alive_key_also_waits_for_the_sweep() -> None:
    """Hashes an older snapshot brought back for tokens long removed say `live`: the alive key
    must not come back next to them, so the summary waits until the writer has swept."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    drain(c, redis, 0.0)
    c.rewrite(1.0)
    c.submit_summary({"epoch": "e1"}, 1.0)
    batch = c.take(1.0)
    assert batch is not None and [w.token for w in batch.writes] == ["a"]
    assert batch.summary is None, "the summary went out before the sweep"
    c.done(batch, redis.apply(batch), 1.0)
    assert c.take(1.0) is None
    sweep(c, redis)
    batch = c.take(1.0)
    assert batch is not None and batch.summary is not None and batch.summary.alive_px == 5000


def test_a_transaction_holds_at_most_the_batch_limit() -> None:
    c = Coalescer("s", ALIVE_TTL)
    assert c.batch_limit == BATCH_LIMIT == 2000
    c.submit([QuoteWrite(f"t{i}", {"seq": "1"}, True) for i in range(BATCH_LIMIT + 1)], 0.0)
    batch = c.take(0.0)
    assert batch is not None and len(batch.writes) == BATCH_LIMIT
    batch = c.take(0.0)
    assert batch is not None and len(batch.writes) == 1


def test_the_writer_lingers_for_a_burst_unless_a_full_batch_is_owed() -> None:
    c = Coalescer("s", ALIVE_TTL, batch_limit=3)
    assert c.linger()
    c.submit([QuoteWrite(f"t{i}", {"seq": "1"}, True) for i in range(2)], 0.0)
    assert c.linger()
    c.submit([QuoteWrite("t2", {"seq": "1"}, True)], 0.0)
    assert not c.linger(), "a full batch is owed: waiting only delays it"
    batch = c.take(0.0)
    assert batch is not None
    assert c.linger() is False, "in flight counts as owed until it lands"
    c.done(batch, None, 0.0)
    assert c.linger()


def test_after_a_transaction_the_writer_goes_on_only_when_it_was_full_or_redis_changed() -> None:
    c = Coalescer("s", ALIVE_TTL, batch_limit=2)
    c.submit([QuoteWrite(f"t{i}", {"seq": "1"}, True) for i in range(3)], 0.0)
    full = c.take(0.0)
    assert full is not None and len(full.writes) == 2
    assert c.flush_again(full, server_changed=False), "more is owed right now"
    rest = c.take(0.0)
    assert rest is not None and len(rest.writes) == 1
    assert not c.flush_again(rest, server_changed=False), "the rest waits for the next wake-up"
    assert c.flush_again(rest, server_changed=True), "a rewrite is owed"


def test_the_alive_expiry_follows_what_the_batch_did_to_the_key() -> None:
    c = Coalescer("s", ALIVE_TTL)
    c.submit_summary({"epoch": "e1"}, 10.0)
    setting = c.take(11.0)
    assert setting is not None and setting.summary is not None and setting.summary.alive_px == 4000
    assert setting.alive_until(20.0, None) == 24.0
    c.done(setting, setting.expect, 11.0)
    c.submit([QuoteWrite("a", {"seq": "1"}, True)], 12.0)
    plain = c.take(12.0)
    assert plain is not None and plain.summary is None
    assert plain.alive_until(30.0, 24.0) == 24.0, "a batch without the summary leaves the key alone"
    c.done(plain, plain.expect, 12.0)
    c.submit_summary({"epoch": "e1"}, 1.0)  # a heartbeat whose TTL is long gone
    lapsed = c.take(12.0)
    assert lapsed is not None and lapsed.summary is not None and lapsed.summary.alive_px is None
    assert lapsed.alive_until(30.0, 24.0) == 24.0
    final = c.take_final(13.0)
    assert final.alive_until(30.0, 24.0) is None


def test_a_sweep_is_owed_from_a_rewrite_until_the_writer_has_swept() -> None:
    c = Coalescer("s", ALIVE_TTL)
    assert not c.sweep_owed
    c.rewrite(0.0)
    assert c.sweep_owed
    c.swept()
    assert not c.sweep_owed
    c.submit([QuoteWrite("a", {"seq": "1"}, True)], 0.0)
    batch = c.take(0.0)
    assert batch is not None
    c.failed(batch, 0.0)
    assert c.sweep_owed, "a failed transaction may mean a restarted Redis: sweep again"


def test_a_large_rewrite_is_taken_whole_in_batches_of_the_limit() -> None:
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change(f"t{i}", "live", 1) for i in range(20_000)], 0.0)
    c.submit_summary({"epoch": "e1"}, 0.0)
    while (batch := c.take(0.0, limit=2000)) is not None:
        c.done(batch, redis.apply(batch), 0.0)
    c.rewrite(0.0)
    sizes = []
    while (batch := c.take(0.0, limit=2000)) is not None:
        sizes.append(len(batch.writes))
        c.done(batch, redis.apply(batch), 0.0)
    assert sizes == [2000] * 10


def test_a_removal_expiring_while_a_rewrite_owes_it_does_not_keep_the_alive_key_away() -> None:
    """Found by the property test: Redis is away longer than the unsubscribed TTL right after a
    token was removed. The rewrite owed the token, the coalescer forgot it when its TTL ran out,
    and the alive key waited for it for ever: the sidecar looked dead once Redis was back."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    c.submit([engine.remove("a", 0.0)], 0.0)
    batch = c.take(0.0)
    assert batch is not None
    c.failed(batch, 0.0)  # Redis went away
    now = TTL + 30.0
    drain(c, redis, now)  # back, long after the removal's TTL ran out
    assert redis.alive, "the alive key never came back"
    check_equal(engine, redis, now)


def test_a_removal_that_never_reached_redis_before_its_ttl_ran_out_is_swept() -> None:
    """Found by the property test: the writer did not get to write a removal within the TTL (here:
    no transaction at all). Redis still holds the older `live` hash without a TTL; forgetting the
    token must owe the sweep that deletes it, or a worker sees it `live` under this epoch."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    drain(c, redis, 0.0)
    c.submit([engine.remove("a", 1.0)], 1.0)
    now = TTL + 10.0
    drain(c, redis, now)
    assert "a" not in redis.hashes, f"Redis still holds {redis.hashes.get('a')}"
    check_equal(engine, redis, now)


def test_a_sweep_waits_for_the_epoch_of_the_first_summary() -> None:
    """Found by the property test: a sweep run before any summary named this run's epoch found
    nothing of ours, yet counted as done, and the older `live` hash of a token whose removal never
    reached Redis stayed for good."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    batch = c.take(0.0)
    assert batch is not None and batch.summary is None
    c.done(batch, redis.apply(batch), 0.0)
    c.submit([engine.remove("a", 1.0)], 1.0)
    now = TTL + 10.0
    assert c.take(now) is None  # the removal was never written and is forgotten now
    assert c.sweep_owed and not c.sweep_due, "a sweep without an epoch cannot tell our hashes apart"
    c.submit_summary({"epoch": "e1"}, now)
    assert c.sweep_due
    drain(c, redis, now)
    assert "a" not in redis.hashes
    check_equal(engine, redis, now)
