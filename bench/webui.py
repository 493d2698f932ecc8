"""The dashboard under load: the experiments page over 10,000 experiments, and a chart of a trial
with 1,000,000 reported steps, both measured in Debian's Chromium against a real master.

Starts a real master (uvicorn, serving the built `webui/dist`) on PostgreSQL, seeds the database
through the master's own tables (one experiment and trial made by the API, copied with SQL), then
drives the real pages with Playwright and times what a user waits for:

- experiments page: navigation until the first page's rows are on screen (target ≤ 1 s);
- chart: navigation to the trial until its loss chart is drawn from the master's downsampled series
  (`max_points`), against the naive baseline measured in the same page and run: every one of the
  1,000,000 points fetched through the same API and drawn as one canvas path (the least any chart
  of all points must do, so the ratio flatters the baseline, not us).

    make webui && python bench/webui.py [--experiments 10000] [--steps 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from metric_ingestion import ADMIN_PASSWORD, fresh_database, server_url, start_master

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "webui" / "dist"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
CONFIG = (
    "name: bench-ui\nentrypoint: python3 train.py\n"
    "searcher: {name: single, metric: loss, smaller_is_better: true}\n"
    "hyperparameters: {lr: 0.01, layers: 2}\nlabels: [bench, ui]\n"
)
PAGE_SIZE = 50


def _columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND column_name <> 'id' "
        "ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [row[0] for row in rows]


SERIES = """
INSERT INTO metrics (trial_id, run_id, "group", steps_completed, values, reported_at, archived)
SELECT %s, 1, 'training', g,
       jsonb_build_object(
           'loss', 1.0 / (1 + g * 0.00001) + 0.01 * random() + CASE WHEN g = %s THEN 5 ELSE 0 END
       ),
       now() - (%s - g) * interval '10 milliseconds', false
FROM generate_series(1, %s) g
"""


def _quoted(columns: list[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def seed(base: str, database_url: str, experiments: int, steps: int) -> int:
    """Copies one API-made experiment (and its trial) until there are ``experiments``; gives the
    first trial ``steps`` training rows with one spike. Returns that trial's id."""
    token = httpx.post(
        f"{base}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    ).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    made = httpx.post(f"{base}/api/v1/experiments", json={"config": CONFIG}, headers=headers)
    made.raise_for_status()
    experiment_id = made.json()["id"]
    httpx.post(f"{base}/api/v1/experiments/{experiment_id}/kill", headers=headers).raise_for_status()
    with psycopg.connect(database_url, autocommit=True) as conn:
        trial_id = conn.execute(
            "SELECT id FROM trials WHERE experiment_id = %s", (experiment_id,)
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "UPDATE experiments SET state = 'COMPLETED', ended_at = now() WHERE id = %s", (experiment_id,)
        )
        conn.execute("UPDATE trials SET state = 'COMPLETED', ended_at = now() WHERE id = %s", (trial_id,))
        columns = _columns(conn, "experiments")
        copied = [
            {"name": "'bench-ui-' || g", "created_at": "now() - g * interval '1 minute'"}.get(c, f'e."{c}"')
            for c in columns
        ]
        conn.execute(
            f"INSERT INTO experiments ({_quoted(columns)}) "
            f"SELECT {', '.join(copied)} FROM experiments e, generate_series(1, %s) g WHERE e.id = %s",
            (experiments - 1, experiment_id),
        )
        trial_columns = [c for c in _columns(conn, "trials") if c != "experiment_id"]
        trial_copied = [
            {"best_validation": "random()", "searcher_metric": "random()"}.get(c, f't."{c}"')
            for c in trial_columns
        ]
        conn.execute(
            f"INSERT INTO trials (experiment_id, {_quoted(trial_columns)}) "
            f"SELECT n.id, {', '.join(trial_copied)} FROM trials t, experiments n "
            "WHERE t.id = %s AND n.id <> %s",
            (trial_id, experiment_id),
        )
        # A smooth curve with noise and one spike in the middle: the chart must keep the spike.
        conn.execute(SERIES, (trial_id, steps // 2 + 7, steps, steps))
        conn.execute("ANALYZE")
    return int(trial_id)


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


NAIVE_JS = """
async ([trialId, pageSize]) => {
  const started = performance.now();
  const xs = [], ys = [];
  let after = 0;
  for (;;) {
    const query = `group=training&limit=${pageSize}&start_batches=${after + 1}`;
    const url = `/api/v1/trials/${trialId}/metrics?${query}`;
    const body = await (await fetch(url, { credentials: "same-origin" })).json();
    for (const row of body.items) { xs.push(row.steps_completed); ys.push(row.values.loss); }
    if (body.items.length < pageSize) break;
    after = body.items[body.items.length - 1].steps_completed;
  }
  const fetched = performance.now();
  const canvas = document.createElement("canvas");
  canvas.width = 1200; canvas.height = 300;
  document.body.appendChild(canvas);
  const ctx = canvas.getContext("2d");
  const maxX = xs[xs.length - 1], maxY = Math.max(...ys.slice(0, 1000), 6);
  ctx.beginPath();
  for (let i = 0; i < xs.length; i++) ctx.lineTo((xs[i] / maxX) * 1200, 300 - (ys[i] / maxY) * 300);
  ctx.stroke();
  await new Promise((resolve) => requestAnimationFrame(() => resolve(null)));
  canvas.remove();
  return { points: xs.length, fetch_ms: fetched - started, total_ms: performance.now() - started };
}
"""


def measure(base: str, trial_id: int, repeat: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    login = httpx.post(
        f"{base}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD, "cookie": True}
    )
    login.raise_for_status()
    cookies = [
        {"name": name, "value": value, "domain": "127.0.0.1", "path": "/"}
        for name, value in login.cookies.items()
    ]
    api = httpx.Client(base_url=base, cookies=login.cookies, timeout=120)
    results: dict[str, Any] = {
        "list_ms": [],
        "list_api_ms": [],
        "chart_ms": [],
        "chart_api_ms": [],
        "naive": [],
    }
    # Rows seeded with SQL bypassed ingest, where the master keeps its per-range summaries: the
    # first read builds them once. Reported apart; a trial that reports its steps never pays it.
    started = time.perf_counter()
    api.get(f"/api/v1/trials/{trial_id}/metrics", params={"group": "training", "max_points": 1000})
    results["first_read_ms"] = (time.perf_counter() - started) * 1000
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.add_cookies(cookies)  # type: ignore[arg-type]
        page = context.new_page()
        for _ in range(repeat + 1):  # the first round warms the browser's cache of the app's files
            started = time.perf_counter()
            page.goto(f"{base}/experiments")
            page.locator('[data-testid^="experiment-row-"]').nth(PAGE_SIZE - 1).wait_for(timeout=60_000)
            results["list_ms"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            api.get("/api/v1/experiments", params={"limit": PAGE_SIZE}).raise_for_status()
            results["list_api_ms"].append((time.perf_counter() - started) * 1000)

            started = time.perf_counter()
            page.goto(f"{base}/trials/{trial_id}")
            page.locator('[data-testid="trial-metrics"] [data-testid="metric-chart"] canvas').first.wait_for(
                timeout=60_000
            )
            results["chart_ms"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            series = api.get(
                f"/api/v1/trials/{trial_id}/metrics", params={"group": "training", "max_points": 1000}
            ).json()
            results["chart_api_ms"].append((time.perf_counter() - started) * 1000)
            results["points_drawn"] = len(series["items"])
            results["spike_kept"] = max(row["values"]["loss"] for row in series["items"]) > 5
        for _ in range(min(repeat, 3)):
            results["naive"].append(page.evaluate(NAIVE_JS, [trial_id, 100_000]))
        browser.close()
    for key in ("list_ms", "list_api_ms", "chart_ms", "chart_api_ms"):
        results[key] = results[key][1:]
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiments", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--port", type=int, default=18231)
    args = parser.parse_args()
    if not (DIST / "index.html").exists():
        sys.exit("webui/dist is missing: run `make webui` first")
    with tempfile.TemporaryDirectory() as tmp:
        admin_url, embedded = server_url(Path(tmp))
        database_url = fresh_database(admin_url, "stalwart_bench_webui")
        os.environ["STALWART_WEBUI_DIR"] = str(DIST)
        master = start_master(database_url, args.port, Path(tmp) / "master")
        base = f"http://127.0.0.1:{args.port}"
        try:
            started = time.perf_counter()
            trial_id = seed(base, database_url, args.experiments, args.steps)
            seconds = time.perf_counter() - started
            print(f"seeded {args.experiments} experiments and {args.steps} metric rows in {seconds:.1f} s")
            results = measure(base, trial_id, args.repeat)
        finally:
            master.terminate()
            master.wait(30)
            if embedded is not None:
                embedded.stop()  # type: ignore[attr-defined]
    naive_total = _median([n["total_ms"] for n in results["naive"]])
    naive_fetch = _median([n["fetch_ms"] for n in results["naive"]])
    chart = _median(results["chart_ms"])
    print(f"\nexperiments page, {args.experiments} experiments, first {PAGE_SIZE} rows on screen:")
    listed = results["list_ms"]
    print(f"  navigation → rows rendered   median {_median(listed):7.0f} ms  (max {max(listed):.0f})")
    print(f"  of which the API answer      median {_median(results['list_api_ms']):7.0f} ms")
    print(f"\nchart of one metric over {args.steps} steps:")
    drawn, spike = results["points_drawn"], results["spike_kept"]
    print(f"  downsampled (max_points=1000, {drawn} rows, spike kept: {spike})")
    print(f"    navigation → chart drawn   median {chart:7.0f} ms  (max {max(results['chart_ms']):.0f})")
    print(f"    of which the API answer    median {_median(results['chart_api_ms']):7.0f} ms")
    print(f"    first read after seeding by SQL (one-time catch-up) {results['first_read_ms']:.0f} ms")
    print(f"  naive: all {results['naive'][0]['points']} points fetched and drawn")
    print(f"    fetch + draw               median {naive_total:7.0f} ms  (fetch alone {naive_fetch:.0f} ms)")
    print(f"  ratio downsampled / naive    {chart / naive_total:.3f}  ({naive_total / chart:.1f}x faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
