"""`make bench`: the sidecar's performance capability, measured end to end on this machine.

Everything runs locally and is stopped again at the end (also on Ctrl-C): the exchange simulator
(in this process), a throwaway redis-server on a free port, the real sidecar (`python -m sidecar
run`, exactly what systemd runs) and three small helper processes (``workers``: a naive baseline
client, a transport sink and a pub/sub subscriber).

Phases, in this order, one module each:
  1. ``setup``: 100 two-token markets (200 tokens), desired set, sidecar up, every quote live =
     truth; the helper processes connect;
  2. ``stream``: a `price_change` stream is generated from a model of the books seeded with
     `sim.book()` (each frame = one market, 2 entries: both outcome tokens, as the live exchange
     sends them; entries carry best_bid/best_ask consistent with the truth) and applied to the
     simulator's truth with `apply_silently`;
  3. ``throughput``: the transport ceiling (the stream blasted into websocket-client's reader alone,
     a process that only counts frames), the naive baseline (the same stream into a
     websocket-client doing json.loads per frame and one HSET + one PUBLISH per event, unpipelined,
     against the same Redis) and the sidecar (the same stream, timed from the first frame handed
     to the simulator until Redis holds the final state = sim.truth() for every token);
  4. ``latency``: a steady 5,000 events/s (paced; truth updated in lock step): simulator send ->
     subscriber receive measured exactly (each top-of-book change is matched to the PUBLISHed
     quote), receive -> PUBLISH interpolated from the sidecar's histogram, process CPU;
  5. ``big``: 5,000 tokens over 25 sockets: start -> all live, RSS; then recovery after
     sim.drop() of a socket (three sockets, one after the other).
``report`` prints the table; ``runner`` runs the phases.

    .venv/bin/python -m devkit.bench [--events 240000] [--out bench-results.json] [--profile DIR]

``python -m devkit.bench.client`` and ``python -m devkit.bench.bridge`` measure the consumer side.
"""
