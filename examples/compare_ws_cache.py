#!/usr/bin/env python3
"""Migration step 1: compare the old aggregator's ws_cache.json with the bridge's, side by side.

Samples both files every ``--interval`` seconds for ``--duration`` and counts, per token present
in both, whether each file offers a price a worker would use (``best_bid``/``best_ask`` not 0.0 and
``updated_at`` younger than ``--max-age-s``; for the bridge also ``quote_status == "live"``), and
whether the prices agree. Tokens in only one file are counted too. Disagreements are expected for a
fraction of a second around each change (the two processes see events at slightly different
times); a steady disagreement, or the old file offering a price while the bridge says ``stale``, is
what to look at (docs/migration.md, step 1).

    python examples/compare_ws_cache.py data/ws_cache.json /var/lib/pm-sidecar-bridge/ws_cache.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

Doc = dict[str, Any]


def offers_price(entry: dict[str, Any], now_s: float, max_age_s: float) -> bool:
    """What an old worker checks before pricing, plus the bridge's own status when it has one."""
    if "quote_status" in entry and entry["quote_status"] != "live":
        return False
    if entry.get("market_closed") or not entry.get("best_bid") or not entry.get("best_ask"):
        return False
    updated = entry.get("updated_at")
    return isinstance(updated, int | float) and now_s - updated <= max_age_s


def compare(old: Doc, new: Doc, now_s: float, max_age_s: float, tol: float = 1e-9) -> Counter[str]:
    """One sample: a count per outcome over the tokens of both files."""
    out: Counter[str] = Counter()
    old_t, new_t = old.get("tokens", {}), new.get("tokens", {})
    for token in old_t.keys() | new_t.keys():
        if token not in new_t:
            out["only_in_old"] += 1
            continue
        if token not in old_t:
            out["only_in_new"] += 1
            continue
        o = offers_price(old_t[token], now_s, max_age_s)
        n = offers_price(new_t[token], now_s, max_age_s)
        if o and n:
            same = all(abs(old_t[token][k] - new_t[token][k]) <= tol for k in ("best_bid", "best_ask"))
            out["both_price_agree" if same else "both_price_differ"] += 1
        elif o:
            out[f"old_prices_new_{new_t[token].get('quote_status', 'no_status')}"] += 1
        elif n:
            out["new_prices_old_not"] += 1
        else:
            out["neither_prices"] += 1
    return out


def load(path: Path) -> Doc | None:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path, help="the aggregator's ws_cache.json")
    ap.add_argument("new", type=Path, help="the bridge's ws_cache.json")
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--max-age-s", type=float, default=60.0, help="the workers' staleness threshold")
    args = ap.parse_args()
    total: Counter[str] = Counter()
    samples = unreadable = 0
    end = time.monotonic() + args.duration
    while time.monotonic() < end:
        old, new = load(args.old), load(args.new)
        if old is None or new is None:
            unreadable += 1
        else:
            total += compare(old, new, time.time(), args.max_age_s)
            samples += 1
        time.sleep(args.interval)
    print(f"{samples} samples ({unreadable} with a file missing or unreadable)")
    for outcome, count in sorted(total.items(), key=lambda kv: -kv[1]):
        print(f"  {outcome:<32} {count:>8}  ({100.0 * count / max(1, sum(total.values())):.1f}%)")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(0) from None
