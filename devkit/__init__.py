"""The dev kit: the one harness shared by the tests, the demo, the benches and the soak. Not shipped.

- ``wait``: wait for a condition with a timeout (never a bare sleep standing in for "it happened");
- ``net``: a free loopback port, an HTTP GET that tells "nothing listens" from an answer;
- ``redis_server``: a throwaway redis-server on a free port, or an embedded fakeredis server;
- ``procs``: the sidecar and the bridge as real subprocesses, with their logs;
- ``scrape``: /metrics read and summed;
- ``procfs``: CPU and memory of a process from /proc;
- ``simfix``: the exchange simulator serving wss:// with a self-signed certificate;
- ``truth``: the product's two properties sampled against the simulator's truth;
- ``demo``, ``bench``, ``soak``, ``quiet_run``: what ``make demo/bench/soak`` run.

Run its programs from the repository root (``python -m devkit.demo``); pytest finds it through
``pythonpath = ["."]``.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
