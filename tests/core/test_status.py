"""sidecar.core.status: the transition table is the code's truth, and the docs show exactly it."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

from sidecar.core import status
from sidecar.core.quote import TokenState
from sidecar.core.status import LIVE, PENDING, RESOLVED, RESYNCING, STALE, UNSUBSCRIBED

ROOT = Path(__file__).resolve().parents[2]


class Ctx:
    def __init__(self) -> None:
        self.dirty: set[str] = set()
        self.stats: Counter[tuple[str, str]] = Counter()


@pytest.mark.parametrize("page", ["docs/redis-contract.md", "docs/architecture.md"])
def test_docs_show_the_rendered_table(page: str) -> None:
    doc = (ROOT / page).read_text()
    found = re.search(r"<!-- status-table: begin -->\n(.*?)<!-- status-table: end -->", doc, re.S)
    assert found is not None, f"{page} lost its status-table markers"
    assert found.group(1) == status.render(), f"{page}: paste status.render() in"


def test_the_table_covers_every_status_and_nothing_leaves_unsubscribed() -> None:
    statuses = {PENDING, LIVE, RESYNCING, STALE, RESOLVED, UNSUBSCRIBED}
    assert set(status.REASONS) == statuses
    assert {to for _, to in status.TRANSITIONS} == statuses
    assert not [t for t in status.TRANSITIONS if t[0] == UNSUBSCRIBED]  # a re-add is a new token
    # A resolved token never shows a book again by itself; only a read-back resolution that its
    # market's state contradicts starts over as pending (and needs a fresh book from there).
    assert [t for t in status.TRANSITIONS if t[0] == RESOLVED and t[1] not in (RESOLVED, UNSUBSCRIBED)] == [
        (RESOLVED, PENDING)
    ]
    assert (STALE, RESYNCING) not in status.TRANSITIONS  # a stale book is never "resynced": only a book helps
    assert (PENDING, STALE) not in status.TRANSITIONS  # no quote was ever shown: nothing to call stale


def test_a_change_marks_the_token_for_writing() -> None:
    ctx, st = Ctx(), TokenState("1", 0, 0.0)
    status.set_status(ctx, st, LIVE, "")
    assert (st.status, st.reason, ctx.dirty) == (LIVE, "", {"1"})
    ctx.dirty.clear()
    status.set_status(ctx, st, LIVE, "")  # no change: nothing to write
    assert ctx.dirty == set()
    status.set_status(ctx, st, STALE, "connection_eof")
    assert (st.status, st.reason, ctx.dirty) == (STALE, "connection_eof", {"1"})


@pytest.mark.parametrize(
    ("start", "to", "reason"),
    [
        (PENDING, STALE, "connection_eof"),  # not in the table
        (STALE, RESYNCING, "bbo_mismatch"),  # not in the table
        (LIVE, STALE, "no_data"),  # a pending-only reason
        (LIVE, LIVE, "subscribing"),  # live never has a reason
        (RESYNCING, RESYNCING, "no_first_event_redrive_1"),
    ],
)
def test_an_illegal_change_raises_in_tests_and_is_counted_otherwise(
    start: status.Status, to: status.Status, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, st = Ctx(), TokenState("1", 0, 0.0)
    st.status = start  # the test's own setup, not engine code
    st.reason = ""
    with pytest.raises(status.IllegalTransition):
        status.set_status(ctx, st, to, reason)
    monkeypatch.setattr(status, "STRICT", False)
    status.set_status(ctx, st, to, reason)
    assert ctx.stats["illegal_transitions", f"{start}->{to}"] == 1
    assert (st.status, st.reason, ctx.dirty) == (to, reason, {"1"})  # still applied: the truth as known


def test_only_set_status_changes_a_status_or_reason() -> None:
    """Nothing in the package but sidecar/core/status.py assigns ``<token>.status``/``.reason``."""
    offenders = []
    for path in sorted((ROOT / "sidecar").rglob("*.py")):
        if path == ROOT / "sidecar/core/status.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr in ("status", "reason")
                    and not (isinstance(target.value, ast.Name) and target.value.id == "self")
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
