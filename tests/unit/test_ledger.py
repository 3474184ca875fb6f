"""The release ledger: records round-trip, are immutable, tags are never reused,
parallel writers neither lose nor duplicate nor interleave records."""

from __future__ import annotations

import dataclasses
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from tests.support.config import small_config
from workbench.core.errors import LedgerError, ReleaseError
from workbench.release import ledger as wb_ledger
from workbench.release.ledger import Ledger, Release


def draft(role: str = "app", environment: str = "staging", **changes: object) -> Release:
    base = Release(
        tag="",
        role=role,
        environment=environment,
        action=wb_ledger.PROMOTE,
        status=wb_ledger.RELEASED,
        version=7,
        image="wbx/app:7",
        image_id="sha256:" + "a" * 64,
        digest="sha256:" + "b" * 64,
        repository="127.0.0.1:5000/wbx/app",
        inputs="c" * 64,
        verify="passed",
        replaces=None,
        rollback_of=None,
        who="tester",
        at="2026-01-01T00:00:00+00:00",
        message="why",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def release_one(ledger: Ledger, **changes: object) -> Release:
    intent = ledger.begin(draft(**changes))
    return ledger.finish(intent, intent.release)


def test_release_round_trips_through_dict() -> None:
    record = draft(tag="app-3", replaces="app-2")
    assert Release.from_dict(record.to_dict()) == record
    assert record.to_dict()["schema"] == wb_ledger.SCHEMA


def test_release_from_a_newer_schema_is_refused() -> None:
    data = {**draft(tag="app-1").to_dict(), "schema": wb_ledger.SCHEMA + 1}
    with pytest.raises(LedgerError, match="schema"):
        Release.from_dict(data)


def test_release_missing_fields_is_refused() -> None:
    data = draft(tag="app-1").to_dict()
    del data["digest"]
    with pytest.raises(LedgerError, match="digest"):
        Release.from_dict(data)


def test_tags_count_per_role_and_are_never_reused(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    assert release_one(ledger).tag == "app-1"
    failed = ledger.begin(draft())
    ledger.finish(failed, dataclasses.replace(failed.release, status=wb_ledger.FAILED))
    assert failed.tag == "app-2"
    assert release_one(ledger, role="db").tag == "db-1"
    assert release_one(ledger, environment="production").tag == "app-3"
    assert [r.tag for r in ledger.history()] == ["app-1", "app-2", "db-1", "app-3"]
    # The failed record does not serve.
    assert ledger.current("staging", "app").tag == "app-1"  # type: ignore[union-attr]


def test_records_are_immutable_in_the_database(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    release_one(ledger)
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        ledger.db.execute("UPDATE releases SET status = 'failed'")
    with pytest.raises(sqlite3.DatabaseError, match="never deleted"):
        ledger.db.execute("DELETE FROM releases")


def test_one_intent_per_environment_and_role(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    first = ledger.begin(draft())
    with pytest.raises(LedgerError, match="app-1 is still in progress"):
        ledger.begin(draft())
    other = ledger.begin(draft(environment="production"))
    advanced = ledger.advance(first, "started", container="c1")
    assert [(i.tag, i.step, i.data) for i in ledger.intents("staging")] == [("app-1", "started", {"container": "c1"})]
    ledger.finish(advanced, advanced.release)
    assert [i.tag for i in ledger.intents()] == [other.tag]


def test_serving_lists_the_last_released_of_each_pair(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    release_one(ledger)
    release_one(ledger, replaces="app-1")
    release_one(ledger, environment="production")
    assert sorted(r.tag for r in ledger.serving()) == ["app-2", "app-3"]


def test_pin_needs_a_known_tag(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    release_one(ledger)
    assert ledger.pin("app-1") is True
    assert ledger.pin("app-1") is False
    assert ledger.pins() == {"app-1"}
    with pytest.raises(ReleaseError, match="no release 'app-9'"):
        ledger.pin("app-9")


def test_retained_keeps_the_window_and_pins() -> None:
    records = [draft(tag=f"app-{n}", image_id=f"sha256:{n}") for n in range(1, 8)]
    records.insert(3, draft(tag="app-99", status=wb_ledger.FAILED))
    kept = wb_ledger.retained(records, 3, {"app-1"})
    assert sorted(r.tag for r in kept) == ["app-1", "app-5", "app-6", "app-7"]


def test_referenced_images_reads_the_ledger(tmp_path: Path) -> None:
    config = small_config(tmp_path)
    assert wb_ledger.referenced_images(config) == set()
    with wb_ledger.opened(config) as ledger:
        for n in range(12):
            release_one(ledger, image_id=f"sha256:{n}")
        ledger.pin("app-1")
        ledger.begin(draft(image_id="sha256:pending"))
    refs = wb_ledger.referenced_images(config)
    # retention 10 of 12, plus the pinned first, plus the pending one
    assert refs == {f"sha256:{n}" for n in range(2, 12)} | {"sha256:0", "sha256:pending"}


def test_parse_tag() -> None:
    assert wb_ledger.parse_tag("app-12") == ("app", 12)
    for bad in ("app", "app-0", "App-1", "app-1x", "12"):
        with pytest.raises(ReleaseError, match="not a release tag"):
            wb_ledger.parse_tag(bad)


def _promote_many(state: str, worker: int, count: int) -> list[str]:
    config = small_config(Path(state))
    tags = []
    for _ in range(count):
        with wb_ledger.opened(config) as ledger, wb_ledger.locked(config, "staging", "app"):
            current = ledger.current("staging", "app")
            intent = ledger.begin(draft(message=f"worker {worker}", replaces=current.tag if current else None))
            ledger.finish(intent, intent.release)
            tags.append(intent.tag)
    return tags


def test_parallel_processes_neither_lose_duplicate_nor_interleave(tmp_path: Path) -> None:
    workers, each = 4, 10
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = pool.starmap(_promote_many, [(str(tmp_path), w, each) for w in range(workers)])
    allocated = [tag for tags in results for tag in tags]
    assert len(allocated) == len(set(allocated)) == workers * each
    with wb_ledger.opened(small_config(tmp_path)) as ledger:
        history = ledger.history("staging", "app")
    assert sorted(r.tag for r in history) == sorted(allocated)
    assert {int(r.tag.split("-")[1]) for r in history} == set(range(1, workers * each + 1))
    # Serialised by the lock: each record replaces the one written just before it.
    assert history[0].replaces is None
    for before, after in zip(history, history[1:], strict=False):
        assert after.replaces == before.tag
