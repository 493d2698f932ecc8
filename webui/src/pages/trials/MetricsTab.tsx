/** A trial's learning curves: one chart per metric and group, with the reader's choice of metrics,
 * x axis, log scale and smoothing. The master downsamples each series to about MAX_POINTS. */
import { useQueries, useQuery } from "@tanstack/react-query";
import { useId, useMemo, useState } from "react";
import { keys, LIVE_MS } from "../../api/keys";
import { MetricChart } from "../../components/MetricChart";
import { Empty, ErrorState, Loading } from "../../components/states";
import { fetchMetrics, MAX_POINTS } from "./metricsApi";
import { AXIS_LABEL, epochKey, metricNames, seriesFor, type XAxis } from "./metricsData";
import type { MetricRow } from "./trialData";

const KNOWN_GROUPS = ["training", "validation"];

/** Groups beyond training and validation, found from a coarse read of every group. */
function useGroups(trialId: number, live: boolean): string[] {
  const discovery = useQuery({
    queryKey: keys.trials.metrics(trialId, { max_points: 10 }),
    queryFn: () => fetchMetrics(trialId, { max_points: 10 }),
    refetchInterval: live ? LIVE_MS * 5 : false,
  });
  return useMemo(() => {
    const found = new Set(discovery.data?.items.map((row) => row.group) ?? []);
    const extra = [...found].filter((g) => !KNOWN_GROUPS.includes(g)).sort();
    return [...KNOWN_GROUPS, ...extra];
  }, [discovery.data]);
}

/** One chart; its series is rebuilt only when its rows or axis change, not on every poll. */
function MetricPanel({
  group,
  name,
  rows,
  axis,
  epoch,
  logScale,
  smoothing,
}: {
  group: string;
  name: string;
  rows: MetricRow[];
  axis: XAxis;
  epoch: string | null;
  logScale: boolean;
  smoothing: number;
}) {
  const series = useMemo(() => [seriesFor(rows, name, axis, epoch)], [rows, name, axis, epoch]);
  return (
    <MetricChart
      title={`${group}: ${name}`}
      series={series}
      xLabel={AXIS_LABEL[axis]}
      time={axis === "time"}
      logScale={logScale}
      smoothing={smoothing}
    />
  );
}

export function MetricsTab({ trialId, live }: { trialId: number; live: boolean }) {
  const groups = useGroups(trialId, live);
  const answers = useQueries({
    queries: groups.map((group) => ({
      queryKey: keys.trials.metrics(trialId, { group, max_points: MAX_POINTS }),
      queryFn: () => fetchMetrics(trialId, { group, max_points: MAX_POINTS }),
      refetchInterval: live ? LIVE_MS : (false as const),
    })),
  });
  const [hidden, setHidden] = useState<ReadonlySet<string>>(new Set());
  const [axis, setAxis] = useState<XAxis>("steps");
  const [logScale, setLogScale] = useState(false);
  const [smoothing, setSmoothing] = useState(0);
  const ids = useId();

  const rowsByGroup = groups.map((group, i) => ({ group, answer: answers[i]?.data }));
  const allRows: MetricRow[] = rowsByGroup.flatMap(({ answer }) => answer?.items ?? []);
  const epoch = epochKey(allRows);
  const names = metricNames(allRows);
  const effectiveAxis: XAxis = axis === "epochs" && !epoch ? "steps" : axis;

  const pending = answers.some((a) => a.isPending);
  const failed = answers.find((a) => a.error)?.error;

  function toggle(name: string) {
    setHidden((previous) => {
      const next = new Set(previous);
      if (next.has(name)) next.delete(name);
      else next.add(name);
      return next;
    });
  }

  return (
    <section data-testid="trial-metrics" aria-label="Metrics">
      <div className="toolbar metrics-controls">
        <fieldset className="metric-picker">
          <legend>Metrics</legend>
          {names.length === 0 && <span className="muted">none yet</span>}
          {names.map((name) => (
            <label key={name} className="inline">
              <input type="checkbox" checked={!hidden.has(name)} onChange={() => toggle(name)} />
              {name}
            </label>
          ))}
        </fieldset>
        <label htmlFor={`${ids}-axis`}>
          X axis
          <select id={`${ids}-axis`} value={effectiveAxis} onChange={(e) => setAxis(e.target.value as XAxis)}>
            <option value="steps">Steps</option>
            <option value="epochs" disabled={!epoch}>
              Epochs{epoch ? "" : " (not reported)"}
            </option>
            <option value="time">Wall time</option>
          </select>
        </label>
        <label className="inline">
          <input type="checkbox" checked={logScale} onChange={(e) => setLogScale(e.target.checked)} />
          Log scale
        </label>
        <div className="range-field">
          <label htmlFor={`${ids}-smoothing`}>Smoothing</label>
          <span className="inline-range">
            <input
              id={`${ids}-smoothing`}
              type="range"
              min={0}
              max={0.99}
              step={0.01}
              value={smoothing}
              onChange={(e) => setSmoothing(Number(e.target.value))}
            />
            <output htmlFor={`${ids}-smoothing`}>{smoothing.toFixed(2)}</output>
          </span>
        </div>
      </div>
      {failed ? <ErrorState error={failed} /> : null}
      {pending && allRows.length === 0 ? (
        <Loading what="metrics" />
      ) : allRows.length === 0 && !failed ? (
        <Empty>No metrics reported yet.</Empty>
      ) : (
        rowsByGroup.map(({ group, answer }) => {
          const rows = answer?.items ?? [];
          if (!rows.length) return null;
          const shown = metricNames(rows).filter((name) => !hidden.has(name));
          return (
            <div key={group} className="metric-group">
              <h2>{group}</h2>
              {answer?.downsampled ? (
                <p className="muted">
                  downsampled from {answer.total ?? "more"} points to {rows.length}
                </p>
              ) : null}
              <div className="grid">
                {shown.map((name) => (
                  <MetricPanel
                    key={name}
                    group={group}
                    name={name}
                    rows={rows}
                    axis={effectiveAxis}
                    epoch={epoch}
                    logScale={logScale}
                    smoothing={smoothing}
                  />
                ))}
              </div>
            </div>
          );
        })
      )}
    </section>
  );
}
