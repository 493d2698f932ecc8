"""The invariants every chaos scenario ends by checking (issue 5, ARCHITECTURE.md "Promises").

I1 every experiment reaches a terminal state within a deadline (the expected one);
I2 exactly one live metric row per (trial, group, step), training steps gap-free from 1;
I3 steps never go back except to the restored checkpoint's step: each run starts at the steps of
   the newest checkpoint of earlier runs + 1 and counts up by one;
I4 every COMPLETED checkpoint verifies against storage; storage holds exactly the manifests of
   COMPLETED (and CORRUPTED) checkpoints, and no chunk that no manifest references outlives the GC
   grace period;
I5 no trial process left running and every slot free;
I6 the restart counter counts only user-code failures.

All of them are checked, and every violation is reported at once.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from chaos_cluster import TERMINAL, ChaosCluster

from stalwart.checkpoint import StorageError, open_storage, read_manifest, verify_checkpoint
from stalwart.core import CheckpointError

from support import wait_for


@dataclass
class Expected:
    """What one experiment must end as: its state, the restarts of its trial, its total steps."""

    experiment_id: int
    state: str = "COMPLETED"
    restarts: int = 0
    steps: int | None = None
    # The scenario validates every step ("validate": true): one validation row per training step.
    validated_every_step: bool = False


@dataclass
class TrialRecord:
    trial: dict[str, Any]
    live: list[dict[str, Any]]  # metric rows as the API shows them by default
    every: list[dict[str, Any]]  # with archived rows, where the master keeps them
    runs: list[dict[str, Any]]
    journal: list[dict[str, Any]]


def check_invariants(cluster: ChaosCluster, *expected: Expected, deadline: float = 120.0) -> None:
    violations: list[str] = []
    _i1_terminal(cluster, expected, deadline, violations)
    records: dict[int, TrialRecord] = {}
    for exp in expected:
        for trial in cluster.api.get(f"/api/v1/experiments/{exp.experiment_id}/trials"):
            records[trial["id"]] = _record(cluster, trial)
            _i2_one_live_row_per_step(records[trial["id"]], exp, violations)
            _i3_steps_resume_from_restored_checkpoint(cluster, records[trial["id"]], exp, violations)
            _i6_restarts(records[trial["id"]], exp, violations)
    _i4_checkpoints_and_storage(cluster, violations)
    _i5_nothing_left_running(cluster, violations)
    assert not violations, "invariants violated:\n  " + "\n  ".join(violations)


def _i1_terminal(
    cluster: ChaosCluster, expected: tuple[Expected, ...], deadline: float, violations: list[str]
) -> None:
    end = time.monotonic() + deadline
    for exp in expected:
        try:
            cluster.wait_state(exp.experiment_id, TERMINAL, timeout=max(1.0, end - time.monotonic()))
        except TimeoutError as exc:
            raise AssertionError(f"I1: {exc}") from None
        state = cluster.experiment(exp.experiment_id)["state"]
        if state != exp.state:
            trials = cluster.api.get(f"/api/v1/experiments/{exp.experiment_id}/trials")
            reasons = "; ".join(f"trial {t['id']} {t['state']} {t['end_reason']!r}" for t in trials)
            violations.append(
                f"I1: experiment {exp.experiment_id} ended {state}, expected {exp.state} ({reasons})"
            )


def _record(cluster: ChaosCluster, trial: dict[str, Any]) -> TrialRecord:
    path = f"/api/v1/trials/{trial['id']}/metrics"
    live = cluster.api.get(path)["items"]
    every = cluster.api.get(path, params={"include_archived": "true"})["items"]
    if not any("archived" in row for row in every):
        every = live  # a master without metric rollback shows every row it has
    return TrialRecord(trial, live, every, cluster.runs(trial["id"]), cluster.journal(trial["id"]))


def _i2_one_live_row_per_step(record: TrialRecord, exp: Expected, violations: list[str]) -> None:
    trial_id = record.trial["id"]
    if any(row.get("archived") for row in record.live):
        violations.append(f"I2: trial {trial_id}: the default metrics view shows archived rows")
    counts = Counter((row["group"], row["steps_completed"]) for row in record.live)
    duplicated = sorted(key for key, n in counts.items() if n > 1)
    if duplicated:
        runs = {
            key: sorted(r["run_id"] for r in record.live if (r["group"], r["steps_completed"]) == key)
            for key in duplicated[:5]
        }
        violations.append(
            f"I2: trial {trial_id}: {len(duplicated)} (group, step) pairs have several live rows, "
            f"e.g. (pair: runs) {runs}"
        )
    steps = sorted({row["steps_completed"] for row in record.live if row["group"] == "training"})
    if steps and steps != list(range(1, steps[-1] + 1)):
        missing = sorted(set(range(1, steps[-1] + 1)) - set(steps))
        violations.append(f"I2: trial {trial_id}: training steps have gaps, missing {missing[:20]}")
    if record.trial["state"] == "COMPLETED":
        last = steps[-1] if steps else 0
        if exp.steps is not None and last != exp.steps:
            violations.append(f"I2: trial {trial_id} COMPLETED at step {last}, scripted {exp.steps}")
        validations = [row["steps_completed"] for row in record.live if row["group"] == "validation"]
        expected = list(range(1, last + 1)) if exp.validated_every_step else [last]
        if validations != expected:
            shown = f"1..{last}" if exp.validated_every_step else f"one at {last}"
            violations.append(f"I2: trial {trial_id}: validation rows at {validations}, expected {shown}")


def _i3_steps_resume_from_restored_checkpoint(
    cluster: ChaosCluster, record: TrialRecord, exp: Expected, violations: list[str]
) -> None:
    trial_id = record.trial["id"]
    checkpoints = [c for c in cluster.checkpoints(exp.experiment_id) if c["trial_id"] == trial_id]
    by_uuid = {c["uuid"]: c for c in checkpoints}
    run_of_allocation = {str(r["allocation_id"]): r["run_id"] for r in record.runs}
    starts = {e["run"]: e for e in record.journal if e["event"] == "start"}
    for run in record.runs:
        run_id = run["run_id"]
        started = starts.get(run_id)
        restored = run.get("restored_checkpoint", started["restored"] if started else None)
        if started is not None and restored != started["restored"]:
            violations.append(
                f"I3: trial {trial_id} run {run_id}: the master says it restored {restored}, "
                f"the trial says {started['restored']}"
            )
        earlier = [c for c in checkpoints if run_of_allocation.get(str(c["allocation_id"]), run_id) < run_id]
        newest = max((c["steps_completed"] for c in earlier), default=0)
        restored_step = by_uuid[restored]["steps_completed"] if restored in by_uuid else 0
        if restored is not None and restored not in by_uuid:
            violations.append(f"I3: trial {trial_id} run {run_id} restored {restored}, unknown to the master")
        if started is not None and restored_step != newest:
            violations.append(
                f"I3: trial {trial_id} run {run_id} restored step {restored_step}, "
                f"but the newest checkpoint of earlier runs is at step {newest}"
            )
        steps = [
            row["steps_completed"]
            for row in sorted(record.every, key=lambda r: r["steps_completed"])
            if row["group"] == "training" and row["run_id"] == run_id
        ]
        if steps and steps != list(range(restored_step + 1, restored_step + 1 + len(steps))):
            violations.append(
                f"I3: trial {trial_id} run {run_id} restored step {restored_step} "
                f"but reported steps {_ranges(steps)}"
            )


def _i4_checkpoints_and_storage(cluster: ChaosCluster, violations: list[str]) -> None:
    ids = cluster.experiments

    def gc_done() -> bool:
        return not cluster.sql(
            "SELECT id FROM gc_requests WHERE experiment_id = ANY(%s) AND done_at IS NULL", ids
        )

    # GC deletes manifests before it marks their rows: only a finished GC gives a stable picture.
    try:
        wait_for(gc_done, 60, "every GC request to be done", interval=0.2)
    except TimeoutError as exc:
        violations.append(f"I4: {exc}")
        return
    known: dict[str, str] = {}
    for experiment_id in ids:
        for checkpoint in cluster.checkpoints(experiment_id):
            known[checkpoint["uuid"]] = checkpoint["state"]
            if checkpoint["state"] != "COMPLETED":
                continue
            storage = open_storage(checkpoint["storage"])
            try:
                verify_checkpoint(storage, checkpoint["manifest"])
            except (CheckpointError, StorageError) as exc:
                violations.append(f"I4: COMPLETED checkpoint {checkpoint['uuid']} does not verify: {exc}")
            finally:
                storage.close()
    storage = open_storage({"type": "shared_fs", "host_path": str(cluster.storage_dir)})
    try:
        manifests = {
            o.key.removeprefix("manifests/").removesuffix(".json") for o in storage.list("manifests/")
        }
        expected = {u for u, state in known.items() if state in ("COMPLETED", "CORRUPTED")}
        if manifests != expected:
            violations.append(
                f"I4: manifests in storage without a live checkpoint: {sorted(manifests - expected)}; "
                f"live checkpoints without a manifest: {sorted(expected - manifests)}"
            )
        referenced = set()
        for checkpoint_uuid in manifests:
            manifest = read_manifest(storage, checkpoint_uuid)
            referenced.update(c["digest"] for f in manifest["files"] for c in f["chunks"])
        # The last GC run swept what was unreferenced and older than the grace period then.
        ((last_done,),) = cluster.sql(
            "SELECT max(done_at) FROM gc_requests WHERE experiment_id = ANY(%s)", ids
        )
        cutoff = to_epoch(last_done) - cluster.settings.gc_grace - 1.0 if last_done else float("inf")
        stale = [
            o
            for o in storage.list("chunks/")
            if o.key.rpartition("/")[2] not in referenced and o.mtime < cutoff
        ]
        if stale:
            violations.append(
                f"I4: {len(stale)} chunk(s) that no manifest references outlived the GC grace period, "
                f"e.g. {stale[0].key} ({sum(o.size for o in stale)} bytes)"
            )
    finally:
        storage.close()


def _i5_nothing_left_running(cluster: ChaosCluster, violations: list[str]) -> None:
    try:
        wait_for(lambda: not cluster.allocation_processes(), 20, "the trial processes to end", interval=0.2)
    except TimeoutError:
        left = [f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in cluster.allocation_processes()]
        violations.append(f"I5: trial processes still running: {left}")
    try:
        wait_for(lambda: not any(s["allocation_id"] for s in cluster.slots()), 20, "every slot to be free")
    except TimeoutError:
        held = [
            (s["agent_id"], s["index"], s["allocation_id"]) for s in cluster.slots() if s["allocation_id"]
        ]
        violations.append(f"I5: slots still held: {held}")


def _i6_restarts(record: TrialRecord, exp: Expected, violations: list[str]) -> None:
    trial = record.trial
    if trial["restarts"] != exp.restarts:
        runs = [(r["run_id"], r.get("exit_code"), r.get("exit_reason")) for r in record.runs]
        violations.append(
            f"I6: trial {trial['id']} restarts = {trial['restarts']}, expected {exp.restarts} (runs: {runs})"
        )


def to_epoch(value: Any) -> float:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.timestamp()
    return float(value)


def _ranges(steps: list[int]) -> str:
    """``[1, 2, 3, 7, 8]`` -> ``"1-3, 7-8"``."""
    parts: list[str] = []
    start = prev = steps[0]
    for step in [*steps[1:], None]:
        if step is not None and step == prev + 1:
            prev = step
            continue
        parts.append(f"{start}-{prev}" if start != prev else f"{start}")
        if step is not None:
            start = prev = step
    return ", ".join(parts)
