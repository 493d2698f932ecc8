/** The lifecycle verbs an experiment answers, as one call each, for the header and the bulk bar. */
import { api, unwrap } from "../../api/client";

export type Verb = "pause" | "activate" | "cancel" | "kill" | "archive" | "unarchive";

export const VERB_LABELS: Record<Verb, string> = {
  pause: "Pause",
  activate: "Activate",
  cancel: "Cancel",
  kill: "Kill",
  archive: "Archive",
  unarchive: "Unarchive",
};

export function runVerb(verb: Verb, id: number): Promise<unknown> {
  const path = { params: { path: { experiment_id: id } } };
  switch (verb) {
    case "pause":
      return unwrap(api.POST("/api/v1/experiments/{experiment_id}/pause", path));
    case "activate":
      return unwrap(api.POST("/api/v1/experiments/{experiment_id}/activate", path));
    case "cancel":
      return unwrap(api.POST("/api/v1/experiments/{experiment_id}/cancel", path));
    case "kill":
      return unwrap(api.POST("/api/v1/experiments/{experiment_id}/kill", path));
    case "archive":
      return unwrap(api.POST("/api/v1/experiments/{experiment_id}/archive", path));
    case "unarchive":
      return unwrap(api.POST("/api/v1/experiments/{experiment_id}/unarchive", path));
  }
}

export function moveExperiment(id: number, projectId: number): Promise<unknown> {
  return unwrap(
    api.POST("/api/v1/experiments/{experiment_id}/move", {
      params: { path: { experiment_id: id } },
      body: { project_id: projectId },
    }),
  );
}

/** Runs `call` for every id, all at once; answers "experiment <id>: <why>" for each refusal. */
export async function forEach(ids: number[], call: (id: number) => Promise<unknown>): Promise<string[]> {
  const results = await Promise.allSettled(ids.map((id) => call(id)));
  return results.flatMap((result, i) =>
    result.status === "rejected"
      ? [`experiment ${ids[i]}: ${result.reason instanceof Error ? result.reason.message : String(result.reason)}`]
      : [],
  );
}
