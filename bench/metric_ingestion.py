"""Metric ingestion: metric values per second a real master stores, one trial and 16 at once.

Starts a real master (uvicorn) on PostgreSQL (``STALWART_DATABASE_URL``'s server, or an embedded
one), gives each simulated trial a real allocation and allocation token through the master's own
services, then POSTs batches exactly as the harness does (each with its idempotency key) and counts
the rows that landed. The baseline, measured in the same run, is the same rows written straight into
PostgreSQL with psycopg's executemany: the ceiling for any HTTP path.

    python bench/metric_ingestion.py [--seconds 5] [--trials 16] [--batch 100] [--values 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
ADMIN_PASSWORD = "bench-admin-password"
CONFIG = "name: bench\nentrypoint: python3 train.py\nsearcher: {name: single, metric: loss}\n"


def server_url(tmp: Path) -> tuple[str, object | None]:
    url = os.environ.get("STALWART_BENCH_PG") or "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        with psycopg.connect(url, connect_timeout=3):
            return url, None
    except psycopg.Error:
        from stalwart_master.local.embedded import start_postgres

        server = start_postgres(tmp / "pg", database="postgres")
        return server.url, server


def fresh_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def start_master(database_url: str, port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "STALWART_DATABASE_URL": database_url,
        "STALWART_DATA_DIR": str(data_dir),
        "STALWART_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "STALWART_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "stalwart_master", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the master did not start")


def make_trials(base: str, database_url: str, count: int) -> list[tuple[int, str]]:
    """(trial id, allocation token) for ``count`` running trials, made by the master's services."""
    token = httpx.post(
        f"{base}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    ).json()
    headers = {"Authorization": f"Bearer {token['token']}"}
    from sqlalchemy import select, update

    from stalwart_master.db.orm import Allocation, Token, Trial, User
    from stalwart_master.db.session import unit_of_work
    from stalwart_master.services.users import hash_token, issue_token

    trials = []
    url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    for _ in range(count):
        experiment = httpx.post(f"{base}/api/v1/experiments", json={"config": CONFIG}, headers=headers).json()
        with unit_of_work(url) as session:
            trial = session.scalars(select(Trial).where(Trial.experiment_id == experiment["id"])).one()
            allocation = Allocation(
                trial_id=trial.id,
                run_id=1,
                resource_pool="default",
                slots_needed=0,
                priority=42,
                state="RUNNING",
            )
            trial.run_id = 1
            session.add(allocation)
            session.flush()
            admin = session.scalars(select(User).where(User.username == "admin")).one()
            secret = issue_token(session, admin, 1, kind="allocation")
            session.execute(
                update(Token)
                .where(Token.token_hash == hash_token(secret))
                .values(allocation_id=allocation.id)
            )
            trials.append((trial.id, secret))
    return trials


def batch_body(step0: int, batch: int, values: int) -> bytes:
    metrics = [
        {
            "group": "training",
            "steps_completed": step0 + i,
            "values": {f"m{k}": 1.0 / (step0 + i + k + 1) for k in range(values)},
        }
        for i in range(batch)
    ]
    return json.dumps({"run_id": 1, "batch_id": str(uuid.uuid4()), "metrics": metrics}).encode()


def report_for(base: str, trial_id: int, token: str, seconds: float, batch: int, values: int) -> int:
    sent = 0
    step = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        while time.monotonic() < deadline:
            response = client.post(
                f"/api/v1/trials/{trial_id}/metrics", content=batch_body(step, batch, values)
            )
            response.raise_for_status()
            step += batch
            sent += batch * values
    return sent


def run_api(
    base: str, trials: list[tuple[int, str]], seconds: float, batch: int, values: int
) -> tuple[int, float]:
    results: list[int] = []
    lock = threading.Lock()

    def worker(trial_id: int, token: str) -> None:
        n = report_for(base, trial_id, token, seconds, batch, values)
        with lock:
            results.append(n)

    threads = [threading.Thread(target=worker, args=t) for t in trials]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(results), time.perf_counter() - started


def stored_values(database_url: str, trial_ids: list[int]) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum((SELECT count(*) FROM jsonb_object_keys(m.values))), 0) FROM metrics m "
            "WHERE m.trial_id = ANY(%s)",
            (trial_ids,),
        ).fetchone()
    return int(row[0]) if row else 0


def run_baseline(
    database_url: str, trial_id: int, seconds: float, batch: int, values: int
) -> tuple[int, float]:
    """The same rows straight into PostgreSQL, one transaction per batch, run id 2 to stay apart."""
    sent, step = 0, 0
    started = time.perf_counter()
    with psycopg.connect(database_url) as conn:
        while time.perf_counter() - started < seconds:
            rows = [
                (
                    trial_id,
                    2,
                    "training",
                    step + i,
                    json.dumps({f"m{k}": 1.0 / (step + i + k + 1) for k in range(values)}),
                )
                for i in range(batch)
            ]
            with conn.cursor() as cur:
                cur.executemany(
                    'INSERT INTO metrics (trial_id, run_id, "group", steps_completed, "values") '
                    "VALUES (%s, %s, %s, %s, %s)",
                    rows,
                )
            conn.commit()
            step += batch
            sent += batch * values
    return sent, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--batch", type=int, default=100, help="reports per POST")
    parser.add_argument("--values", type=int, default=10, help="metric values per report")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stalwart-bench-") as tmp:
        admin_url, embedded = server_url(Path(tmp))
        database_url = fresh_database(admin_url, "stalwart_bench_ingestion")
        master = start_master(database_url, args.port, Path(tmp) / "data")
        base = f"http://127.0.0.1:{args.port}"
        try:
            # The baseline gets a trial of its own: its rows hold the same steps the API's would,
            # and only one live row per (trial, group, step) may exist.
            trials = make_trials(base, database_url, args.trials + 2)
            baseline_trial, trials = trials[-1], trials[:-1]
            baseline, baseline_s = run_baseline(
                database_url, baseline_trial[0], args.seconds, args.batch, args.values
            )
            one, one_s = run_api(base, trials[:1], args.seconds, args.batch, args.values)
            many, many_s = run_api(base, trials[1:], args.seconds, args.batch, args.values)
            stored_one = stored_values(database_url, [trials[0][0]])
            stored_many = stored_values(database_url, [t for t, _ in trials[1:]])
        finally:
            master.terminate()
            master.wait(30)
            if embedded is not None:
                from stalwart_master.local.embedded import stop

                stop(embedded)  # type: ignore[arg-type]

    rate_base, rate_one, rate_many = baseline / baseline_s, one / one_s, many / many_s
    print(f"batches of {args.batch} reports x {args.values} values, {args.seconds:.0f} s each")
    print(f"baseline: psycopg executemany straight into PostgreSQL   {rate_base:10,.0f} values/s")
    print(
        f"master API, 1 trial                                      {rate_one:10,.0f} values/s  "
        f"({rate_one / rate_base:.2f}x baseline)  stored {stored_one:,} of {one:,}"
    )
    print(
        f"master API, {args.trials} concurrent trials                        {rate_many:10,.0f} values/s  "
        f"({rate_many / rate_base:.2f}x baseline)  stored {stored_many:,} of {many:,}"
    )
    if stored_one != one or stored_many != many:
        raise SystemExit("metric values were lost or duplicated")


if __name__ == "__main__":
    main()
