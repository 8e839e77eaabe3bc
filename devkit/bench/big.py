"""Phase 5: many tokens. 5,000 tokens over 25 sockets from start to all live, the sidecar's RSS
then; and recovery after the exchange drops a socket (three sockets, one after the other)."""

from __future__ import annotations

import time

from devkit.bench.context import Bench, P, stage
from devkit.procfs import rss_mb


def big(b: Bench) -> None:
    a = b.args
    with stage("stop the 200-token sidecar"):
        b.side.terminate()
        b.r.flushall()
    with stage(f"5,000 tokens: {a.big_tokens // 2 - len(b.markets)} more markets"):
        need = a.big_tokens // 2 - len(b.markets)
        for _ in range(need):
            b.sim.add_market()
        tokens = [t for toks in b.sim.markets().values() for t in toks][: a.big_tokens]
        b.r.sadd(P + "desired", *tokens)
    with stage(f"{len(tokens):,} tokens over {len(tokens) // a.per_conn} sockets: start -> all live"):
        t0 = time.monotonic()
        proc = b.start_sidecar("big", max_tokens_per_conn=a.per_conn, max_tokens=len(tokens))
        deadline = t0 + 120
        while True:
            got = b.tops(tokens, P + "quote:", ("status",))
            live = sum(1 for g in got if g[0] == "live")
            if live == len(tokens):
                t_live = time.monotonic() - t0
                break
            if time.monotonic() > deadline or proc.proc.poll() is not None:
                raise RuntimeError(f"only {live} of {len(tokens)} live:\n" + proc.log()[-3000:])
            time.sleep(0.05)
        rss = rss_mb(proc.pid)
        sockets = sum(1 for c in b.sim.connections() if c.open and c.subscribed)
    b.results["big"] = {
        "tokens": len(tokens),
        "sockets": sockets,
        "max_tokens_per_conn": a.per_conn,
        "start_to_all_live_s": round(t_live, 2),
        "rss_mb": round(rss, 1),
        "note": "includes python start-up and the default 0.25 s pacing between socket opens",
    }
    conns = [c for c in b.sim.connections() if c.open and c.subscribed]
    picks = [conns[0], conns[len(conns) // 2], conns[-1]][: a.drops]
    times = []
    for c in picks:
        toks = sorted(c.subscribed)
        with stage(f"recovery: drop socket {c.id} ({len(toks)} tokens)"):
            time.sleep(0.5)
            wall_ms = int(time.time() * 1000)
            t0 = time.monotonic()
            b.sim.drop(c.id)
            deadline = t0 + 60
            while True:
                got = b.tops(toks, P + "quote:", ("status", "updated_at"))
                if all(g[0] == "live" and g[1] and int(g[1]) >= wall_ms for g in got):
                    times.append(time.monotonic() - t0)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("socket did not recover:\n" + proc.log()[-3000:])
                time.sleep(0.005)
    b.results["recovery"] = {
        "drops": len(times),
        "tokens_per_socket": a.per_conn,
        "seconds": [round(t, 3) for t in times],
        "median_s": round(sorted(times)[len(times) // 2], 3),
        "max_s": round(max(times), 3),
        "note": "drop -> every token of that socket live again with a fresh book; dominated by the "
        "reconnect backoff with full jitter (uniform 0..1 s after a socket that had data)",
    }
