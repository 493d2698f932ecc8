/** Reading a trial's metrics: the answer is parsed here because it may carry NaN tokens. */
import { api, unwrap } from "../../api/client";
import { parseLooseJson, type MetricsAnswer } from "./trialData";

export interface MetricsQuery {
  group?: string;
  /** The master thins each series to about this many points (keeping spikes). */
  max_points?: number;
  limit?: number;
  include_archived?: boolean;
}

/** About one point per horizontal pixel of a wide chart. */
export const MAX_POINTS = 1000;

export async function fetchMetrics(trialId: number, query: MetricsQuery): Promise<MetricsAnswer> {
  const text = await unwrap(
    api.GET("/api/v1/trials/{trial_id}/metrics", {
      params: { path: { trial_id: trialId }, query },
      parseAs: "text",
    }),
  );
  const answer = parseLooseJson(text) as Partial<MetricsAnswer> | null;
  return { ...answer, items: answer?.items ?? [] };
}
