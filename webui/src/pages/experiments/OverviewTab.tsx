/** Overview: learning curves of the best trials and the best searcher metric reached so far. */
import { useMemo } from "react";
import { Link } from "react-router";
import { formatNumber } from "../../components/format";
import { MetricChart, type Series } from "../../components/MetricChart";
import { Empty, ErrorState, Loading } from "../../components/states";
import { bestTrials, runningBest, seriesOf, type MetricPoint, type Searcher, type Trial } from "./data";
import { useTrialMetrics } from "./useMetrics";

const BEST_COUNT = 5;
// Past this many trials the "best so far" curve reads the first ones only; say so on the page.
const MAX_TRIALS = 100;

export function OverviewTab({ trials, searcher, live }: { trials: Trial[]; searcher: Searcher; live: boolean }) {
  const best = useMemo(() => bestTrials(trials, searcher, BEST_COUNT), [trials, searcher]);
  const bestIds = best.map((t) => t.id);
  // Best trials first, so their answers (and cache entries) are shared with the curve chart.
  const allIds = useMemo(() => {
    const rest = trials.map((t) => t.id).filter((id) => !bestIds.includes(id));
    return [...bestIds, ...rest].slice(0, MAX_TRIALS);
  }, [trials, bestIds.join(",")]);

  const validation = useTrialMetrics(
    allIds,
    { group: "validation", metrics: [searcher.metric], maxPoints: 1000 },
    live,
  );
  const training = useTrialMetrics(bestIds, { group: "training", metrics: ["loss"], maxPoints: 1000 }, live);

  const curves: Series[] = useMemo(
    () => best.map((t, i) => ({ label: `trial ${t.id}`, ...seriesOf(validation.answers[i], searcher.metric) })).filter((s) => s.x.length),
    [validation.stamp, best, searcher.metric],
  );
  const losses: Series[] = useMemo(
    () => best.map((t, i) => ({ label: `trial ${t.id}`, ...seriesOf(training.answers[i], "loss") })).filter((s) => s.x.length),
    [training.stamp, best],
  );
  const soFar = useMemo(() => {
    const points: MetricPoint[] = [];
    allIds.forEach((trialId, i) => {
      const { x, y } = seriesOf(validation.answers[i], searcher.metric);
      x.forEach((step, j) => {
        const value = y[j];
        if (value != null) points.push({ trialId, step, value });
      });
    });
    return runningBest(points, searcher.smallerIsBetter);
  }, [validation.stamp, searcher]);
  const soFarSeries: Series[] = useMemo(
    () => (soFar.x.length ? [{ label: `best ${searcher.metric}`, x: soFar.x, y: soFar.y }] : []),
    [soFar, searcher.metric],
  );

  if (!trials.length) return <Empty>No trials yet.</Empty>;
  if (!searcher.metric) return <Empty>This experiment's searcher names no metric.</Empty>;
  if (validation.pending && !validation.answers.some(Boolean)) return <Loading what="metrics" />;

  const direction = searcher.smallerIsBetter ? "smaller is better" : "larger is better";
  return (
    <>
      {validation.error ? <ErrorState error={validation.error} /> : null}
      <p className="summary">
        {soFar.best ? (
          <>
            Best {searcher.metric} so far: <strong>{formatNumber(soFar.best.value)}</strong> (
            <Link to={`/trials/${soFar.best.trialId}`}>trial {soFar.best.trialId}</Link>, step {soFar.best.step}; {direction})
          </>
        ) : (
          <>No validation of {searcher.metric} reported yet ({direction}).</>
        )}
      </p>
      {trials.length > MAX_TRIALS ? (
        <p className="hint">
          The best-so-far curve reads the {MAX_TRIALS} best and earliest trials of {trials.length}.
        </p>
      ) : null}
      <div className="grid">
        <MetricChart
          title={`Validation ${searcher.metric} of the ${best.length} best trial(s)`}
          series={curves}
          xLabel="steps"
        />
        {losses.length ? <MetricChart title="Training loss of the best trials" series={losses} xLabel="steps" /> : null}
        <MetricChart title={`Best ${searcher.metric} so far (${direction})`} series={soFarSeries} xLabel="steps" />
      </div>
    </>
  );
}
