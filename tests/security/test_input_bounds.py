"""Bounds on everything a user submits: config numbers, context archives, and the scheduler's
tolerance of a row that slipped past them.

Each test here is a regression test of a finding: one experiment's huge ``slots_per_trial`` stopped
scheduling for everyone, a 5,001-digit integer in a config was a 500, and a 1 MB gzip bomb or
100,000 empty members cost the master 11-15 s of CPU and were then stored.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import logging
import tarfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from stalwart_master.db.orm import Agent, Allocation, Experiment, Slot, Trial, utcnow
from stalwart_master.errors import BadRequest, Invalid
from stalwart_master.expconf import parse_experiment_config
from stalwart_master.scheduler.loop import schedule_once
from stalwart_master.settings import LimitSettings

pytestmark = pytest.mark.integration

BASE = "entrypoint: python3 train.py\nsearcher: {name: single, metric: loss}\n"
DEFAULTS = {"checkpoint_storage": {"type": "shared_fs", "host_path": "/tmp/checkpoints"}}
INT64_MAX = 2**63 - 1
GZIP = {"Content-Type": "application/gzip"}


def refused_paths(text: str) -> dict[str, str]:
    with pytest.raises(Invalid) as caught:
        parse_experiment_config(text, DEFAULTS)
    return {e.path: e.message for e in caught.value.errors}


def experiment_count(client: Any) -> int:
    return int(client.get("/api/v1/experiments", params={"limit": 1}).json()["total"])


# --- config bounds --------------------------------------------------------------------------------

OUT_OF_BOUNDS = [
    # The finding: a PostgreSQL INTEGER column could not hold it and every scheduling pass failed.
    ("resources:\n  slots_per_trial: 99999999999999999999999\n", "resources.slots_per_trial", "at most 1024"),
    ("resources: {slots_per_trial: 1025}\n", "resources.slots_per_trial", "at most 1024"),
    ("resources: {slots_per_trial: -1}\n", "resources.slots_per_trial", "at least 0"),
    ("resources: {max_slots: 2147483648}\n", "resources.max_slots", "at most 2147483647"),
    ("resources: {priority: 100}\n", "resources.priority", "at most 99"),
    (f"resources: {{resource_pool: {'p' * 129}}}\n", "resources.resource_pool", "at most 128 characters"),
    ("resources: {shm_size: 99999999999999999999T}\n", "resources.shm_size", f"at most {INT64_MAX}"),
    ("max_restarts: 1000001\n", "max_restarts", "at most 1000000"),
    ("preemption_timeout: 2147483648\n", "preemption_timeout", "at most 2147483647"),
    (f"records_per_epoch: {INT64_MAX + 1}\n", "records_per_epoch", f"at most {INT64_MAX}"),
    (f"min_validation_period: {{batches: {INT64_MAX + 1}}}\n", "min_validation_period.batches", "at most"),
    ("reproducibility: {experiment_seed: 2147483648}\n", "reproducibility.experiment_seed", "at most"),
    (
        "checkpoint_storage: {type: shared_fs, host_path: /c, save_trial_best: 2147483648}\n",
        "checkpoint_storage.save_trial_best",
        "at most 2147483647",
    ),
]
OUT_OF_BOUNDS_SEARCHERS = [
    ("{name: random, metric: l, max_trials: 2147483648}", "searcher.max_trials", "at most 2147483647"),
    ("{name: single, metric: l, source_trial_id: 2147483648}", "searcher.source_trial_id", "at most"),
    ("{name: single, metric: l, max_length: 9223372036854775808}", "searcher.max_length.batches", "at most"),
    (
        "{name: adaptive_asha, metric: l, max_trials: 9, time_metric: b, max_time: 9, divisor: 1001.0}",
        "searcher.divisor",
        "at most 1000",
    ),
]
OUT_OF_BOUNDS_HYPERPARAMETERS = [
    ("{type: int, minval: -9223372036854775809, maxval: 0}", "hyperparameters.x.minval", "at least"),
    # base ** x overflowed a float when trials were sampled, after the experiment was accepted.
    ("{type: log, minval: 0, maxval: 400}", "hyperparameters.x.maxval", "base ** maxval must be a finite"),
    # maxval - minval was inf, and every sampled trial got lr: inf, which JSONB cannot store.
    ("{type: double, minval: -1.0e+308, maxval: 1.0e+308}", "hyperparameters.x.maxval", "finite"),
]


@pytest.mark.parametrize(("extra", "path", "message"), OUT_OF_BOUNDS, ids=[c[1] for c in OUT_OF_BOUNDS])
def test_each_integer_that_reaches_the_database_is_bounded(extra: str, path: str, message: str) -> None:
    errors = refused_paths(BASE + extra)

    assert path in errors, errors
    assert message in errors[path]


@pytest.mark.parametrize(
    ("searcher", "path", "message"), OUT_OF_BOUNDS_SEARCHERS, ids=[c[1] for c in OUT_OF_BOUNDS_SEARCHERS]
)
def test_searcher_numbers_are_bounded(searcher: str, path: str, message: str) -> None:
    errors = refused_paths(f"entrypoint: x\nsearcher: {searcher}\n")

    assert message in errors.get(path, ""), errors


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    OUT_OF_BOUNDS_HYPERPARAMETERS,
    ids=[c[0].split(",")[0] for c in OUT_OF_BOUNDS_HYPERPARAMETERS],
)
def test_hyperparameter_ranges_are_bounded(spec: str, path: str, message: str) -> None:
    searcher = "searcher: {name: random, metric: l, max_trials: 2}\n"
    errors = refused_paths(f"entrypoint: x\nhyperparameters: {{x: {spec}}}\n{searcher}")

    assert message in errors.get(path, ""), errors


def test_the_largest_values_in_bounds_are_accepted_and_stored_exactly() -> None:
    text = BASE + (
        f"resources: {{slots_per_trial: 1024, max_slots: 2147483647, resource_pool: {'p' * 128}}}\n"
        f"max_restarts: 1000000\nrecords_per_epoch: {INT64_MAX}\n"
        f"data: {{top: {INT64_MAX}, bottom: {-INT64_MAX - 1}}}\n"
    )

    data = parse_experiment_config(text, DEFAULTS).data

    assert data["resources"]["slots_per_trial"] == 1024
    assert data["data"] == {"top": INT64_MAX, "bottom": -INT64_MAX - 1}


# --- over-long integers and NUL -----------------------------------------------------------------

HUGE = "9" * 5001  # past Python's 4,300-digit limit on converting an int to or from text


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        (f"data: {{big: {HUGE}}}\n", "data.big"),
        (f"data: {{nested: [1, -{HUGE}]}}\n", "data.nested.1"),
        (f"hyperparameters: {{seed: {HUGE}}}\n", "hyperparameters.seed"),
        (f"max_restarts: {HUGE}\n", "max_restarts"),
        (f"data: {{hex: 0x{'f' * 4000}}}\n", "data.hex"),  # parses fast, prints as 4,817 digits
        ("data: {sexagesimal: 1" + ":0" * 300_000 + "}\n", "data.sexagesimal"),  # quadratic to compute
        (f"data: {{x: {INT64_MAX + 1}}}\n", "data.x"),
    ],
    ids=["data", "list-item", "hyperparameter", "typed-field", "hex", "base-60", "just-past-64-bits"],
)
def test_an_over_long_integer_is_a_422_naming_its_field(admin: Any, extra: str, path: str) -> None:
    before = experiment_count(admin)

    response = admin.post("/api/v1/experiments", json={"config": BASE + extra})

    assert response.status_code == 422, response.text[:500]
    assert response.headers["content-type"] == "application/problem+json"
    assert path in [e["path"] for e in response.json()["errors"]], response.json()
    assert experiment_count(admin) == before


@pytest.mark.parametrize("tagged", ["!!int abc", "!!float abc", "!!bool maybe", '!!int ""'])
def test_an_explicit_tag_on_unreadable_text_is_a_400_with_its_position(tagged: str) -> None:
    with pytest.raises(BadRequest, match=r"is not a valid .* at line 3, column 11"):
        parse_experiment_config(BASE + f"data: {{x: {tagged}}}\n", DEFAULTS)


def test_a_nul_character_in_a_config_is_a_clean_422(admin: Any) -> None:
    before = experiment_count(admin)

    raw = admin.post("/api/v1/experiments", json={"config": BASE + "description: a\x00b\n"})
    escaped = admin.post("/api/v1/experiments", json={"config": BASE + 'data: {note: "a\\0b"}\n'})
    in_key = admin.post("/api/v1/experiments", json={"config": BASE + 'data: {"a\\0b": 1}\n'})
    in_name = admin.post("/api/v1/experiments", json={"config": 'name: "x\\0"\n' + BASE})

    assert raw.status_code == 422, raw.text
    assert "body.config" in [e["path"] for e in raw.json()["errors"]]
    for response, path in ((escaped, "data.note"), (in_key, "data"), (in_name, "name")):
        assert response.status_code == 422, response.text
        errors = {e["path"]: e["message"] for e in response.json()["errors"]}
        assert "NUL" in errors.get(path, ""), errors
    assert experiment_count(admin) == before


# --- the scheduler isolates a bad row ------------------------------------------------------------

WAIT = dt.timedelta(seconds=25)


def sessions_of(admin: Any) -> sessionmaker[Session]:
    return admin.app_ref.state.sessions  # type: ignore[no-any-return]


@pytest.fixture
def pass_session(admin: Any) -> Iterator[Session]:
    """A transaction that is always rolled back: the live scheduler never sees what is made in it."""
    session = sessions_of(admin)()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def paused_experiment(admin: Any, pool: str) -> int:
    config = BASE + f"resources: {{resource_pool: {pool}}}\n"
    response = admin.post("/api/v1/experiments", json={"config": config, "paused": True})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def one_pass(session: Session) -> None:
    """``schedule_once`` in ``session``, waiting out a pass of the app's own scheduler thread."""
    deadline = utcnow() + dt.timedelta(seconds=10)
    while not schedule_once(session, WAIT):
        assert utcnow() < deadline, "the scheduler lock never came free"


BAD_ROWS: dict[str, dict[str, Any]] = {
    # The finding: INSERT of the allocation failed with "integer out of range" on every pass.
    "huge slots_per_trial": {"slots_per_trial": 99999999999999999999999},
    "negative slots_per_trial": {"slots_per_trial": -1},
    "pool name too long for its column": {"resource_pool": "p" * 200},
    "max_slots not a number": {"max_slots": "lots"},
    "priority out of range": {"priority": 1000},
}


@pytest.mark.parametrize("bad", [*BAD_ROWS, "pending run needing -1 slots"])
def test_an_experiment_the_scheduler_cannot_run_ends_in_error_while_others_get_their_slots(
    admin: Any, pass_session: Session, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    pool = f"bounds-{uuid.uuid4().hex[:8]}"
    good_id, bad_id = paused_experiment(admin, pool), paused_experiment(admin, pool)
    agent = Agent(id=f"bounds-{uuid.uuid4().hex[:8]}", resource_pool=pool)
    pass_session.add(agent)
    pass_session.flush()
    pass_session.add_all(
        [Slot(agent_id=agent.id, index=i, type="cuda", uuid=f"{agent.id}-{i}") for i in (0, 1)]
    )
    good, broken = pass_session.get(Experiment, good_id), pass_session.get(Experiment, bad_id)
    assert good is not None and broken is not None
    bad_trial = pass_session.scalars(select(Trial).where(Trial.experiment_id == bad_id)).one()
    # Straight into the database, past the config rules, as an older master or a hand edit would.
    if bad in BAD_ROWS:
        broken.config = {**broken.config, "resources": {**broken.config["resources"], **BAD_ROWS[bad]}}
    else:
        bad_trial.run_id = 1
        pass_session.add(
            Allocation(
                trial_id=bad_trial.id,
                run_id=1,
                resource_pool=pool,
                slots_needed=-1,
                priority=42,
                state="PENDING",
            )
        )
    good.state = broken.state = "ACTIVE"
    # As activating does: a paused experiment's trials are PAUSED until then.
    pass_session.execute(
        update(Trial).where(Trial.experiment_id.in_((good_id, bad_id))).values(state="ACTIVE")
    )
    pass_session.flush()

    with caplog.at_level(logging.ERROR, logger="stalwart_master.services.allocations"):
        one_pass(pass_session)

    good_trial = pass_session.scalars(select(Trial).where(Trial.experiment_id == good_id)).one()
    (run,) = pass_session.scalars(select(Allocation).where(Allocation.trial_id == good_trial.id)).all()
    assert (run.state, run.agent_id) == ("ASSIGNED", agent.id)
    pass_session.refresh(broken)
    pass_session.refresh(bad_trial)
    assert broken.state == "ERROR"
    assert bad_trial.state == "ERROR" and bad_trial.end_reason.startswith("cannot be scheduled: ")
    assert not pass_session.scalars(
        select(Allocation).where(Allocation.trial_id == bad_trial.id, Allocation.state != "TERMINATED")
    ).all()
    assert any(f"experiment {bad_id} " in r.getMessage() for r in caplog.records), caplog.text


# --- context archives -----------------------------------------------------------------------------


def gzip_bomb(unpacked: int) -> bytes:
    """A tar.gz of ~1 KB per 1 MiB: one member of ``unpacked`` zero bytes, as concatenated gzip
    members, so only 64 MiB is ever compressed to make it."""
    run = 64 * 1024 * 1024
    info = tarfile.TarInfo("weights.bin")
    info.size = unpacked
    zeros = gzip.compress(bytes(run), compresslevel=9, mtime=0)
    parts = [gzip.compress(info.tobuf(tarfile.USTAR_FORMAT), mtime=0), zeros * (unpacked // run)]
    parts.append(gzip.compress(bytes(2 * tarfile.BLOCKSIZE), mtime=0))
    return b"".join(parts)


def empty_members(count: int) -> bytes:
    """A tar.gz of ``count`` empty files, built from one header (tarfile takes ~0.1 ms a member)."""
    template = bytearray(tarfile.TarInfo("0" * 8).tobuf(tarfile.USTAR_FORMAT))
    template[148:156] = b" " * 8
    base = sum(template) - sum(b"0" * 8)
    headers = bytearray()
    for i in range(count):
        name = b"%08d" % i
        template[0:8] = name
        template[148:156] = b"%06o\x00 " % (base + sum(name))
        headers += template
    return gzip.compress(bytes(headers) + bytes(2 * tarfile.BLOCKSIZE), compresslevel=1, mtime=0)


def tarball(names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in names:
            data = uuid.uuid4().bytes
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def timed_upload(admin: Any, data: bytes, record_property: Any) -> Any:
    """POST a context; how long the refusal took goes to the test report (``--junitxml``), unasserted."""
    started = time.perf_counter()
    response = admin.post("/api/v1/contexts", content=data, headers=GZIP)
    record_property("upload_seconds", round(time.perf_counter() - started, 3))
    return response


def test_a_gzip_bomb_is_refused_from_its_header_naming_the_cap(admin: Any, record_property: Any) -> None:
    data = gzip_bomb(1024**3)
    assert len(data) < 1_100_000

    response = timed_upload(admin, data, record_property)

    assert response.status_code == 413, response.text
    body = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert (body["limit"], body["max"], body["member"]) == (
        "context_max_unpacked_bytes",
        1024**3,
        "weights.bin",
    )
    assert "STALWART_CONTEXT_MAX_UNPACKED_BYTES" in body["detail"]


def test_a_hundred_thousand_empty_members_are_refused_at_the_member_cap(
    admin: Any, record_property: Any
) -> None:
    data = empty_members(100_000)

    response = timed_upload(admin, data, record_property)

    assert response.status_code == 413, response.text
    body = response.json()
    assert (body["limit"], body["max"], body["member"]) == ("context_max_members", 10_000, "00010000")
    assert "STALWART_CONTEXT_MAX_MEMBERS" in body["detail"]


def test_a_path_deeper_than_the_cap_is_refused(admin: Any) -> None:
    deep = "/".join(f"d{i}" for i in range(33)) + "/train.py"

    response = admin.post("/api/v1/contexts", content=tarball(["train.py", deep]), headers=GZIP)

    assert response.status_code == 413, response.text
    assert (response.json()["limit"], response.json()["member"]) == ("context_max_depth", deep)


def test_the_caps_are_the_operators(admin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    limits = admin.app_ref.state.settings.limits
    monkeypatch.setattr(limits, "context_max_members", 2)
    data = tarball(["a.py", "b.py", "c.py"])

    response = admin.post("/api/v1/contexts", content=data, headers=GZIP)

    assert response.status_code == 413
    assert "STALWART_CONTEXT_MAX_MEMBERS=2" in response.json()["detail"]
    monkeypatch.setattr(limits, "context_max_members", 3)
    assert admin.post("/api/v1/contexts", content=data, headers=GZIP).status_code == 201


def test_the_caps_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALWART_CONTEXT_MAX_UNPACKED_BYTES", "2048")
    monkeypatch.setenv("STALWART_CONTEXT_MAX_MEMBERS", "7")
    monkeypatch.setenv("STALWART_CONTEXT_MAX_DEPTH", "3")

    limits = LimitSettings()

    assert (limits.context_max_unpacked_bytes, limits.context_max_members, limits.context_max_depth) == (
        2048,
        7,
        3,
    )


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/json", "application/zip"]
)
def test_a_body_that_is_not_declared_as_gzip_is_a_415(admin: Any, content_type: str) -> None:
    data = tarball(["train.py"])

    response = admin.post("/api/v1/contexts", content=data, headers={"Content-Type": content_type})

    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("unsupported-media-type")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/gzip",
        "application/x-gzip",
        "application/octet-stream",
        "Application/GZIP; charset=binary",
    ],
)
def test_gzip_and_raw_bytes_are_accepted(admin: Any, content_type: str) -> None:
    response = admin.post(
        "/api/v1/contexts", content=tarball(["train.py"]), headers={"Content-Type": content_type}
    )

    assert response.status_code == 201, response.text
