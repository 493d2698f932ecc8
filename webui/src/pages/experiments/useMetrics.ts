/** Metric series of several trials at once, polled while the experiment may still report. */
import { useQueries } from "@tanstack/react-query";
import { keys, LIVE_MS } from "../../api/keys";
import { fetchTrialMetrics, type MetricAnswer, type MetricQuery } from "./data";

export interface TrialSeries {
  answers: (MetricAnswer | undefined)[];
  pending: boolean;
  error: unknown;
  /** Changes whenever any answer does: a memo key for derived chart series. */
  stamp: string;
}

export function useTrialMetrics(trialIds: number[], query: MetricQuery, live: boolean): TrialSeries {
  const results = useQueries({
    queries: trialIds.map((id) => ({
      queryKey: keys.trials.metrics(id, query),
      queryFn: () => fetchTrialMetrics(id, query),
      enabled: query.metrics.every(Boolean),
      refetchInterval: live ? LIVE_MS : (false as const),
    })),
  });
  return {
    answers: results.map((r) => r.data),
    pending: results.some((r) => r.isPending && r.fetchStatus !== "idle"),
    error: results.find((r) => r.error)?.error ?? null,
    stamp: `${trialIds.join(",")}|${results.map((r) => r.dataUpdatedAt).join(",")}`,
  };
}
