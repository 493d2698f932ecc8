/** Checkpoint reads shared by the runs, checkpoints and model pages. */
import { useQuery } from "@tanstack/react-query";
import { api, unwrap } from "../../api/client";
import { keys, LIVE_MS } from "../../api/keys";

/** Every checkpoint of the experiment (the master has no per-trial filter); polled while live. */
export function useExperimentCheckpoints(experimentId: number, live: boolean) {
  return useQuery({
    queryKey: keys.experiments.checkpoints(experimentId),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/experiments/{experiment_id}/checkpoints", {
          params: { path: { experiment_id: experimentId } },
        }),
      ),
    refetchInterval: live ? LIVE_MS * 2 : false,
  });
}

export function useCheckpoint(uuid: string | null | undefined) {
  return useQuery({
    queryKey: keys.checkpoints.detail(uuid ?? ""),
    queryFn: () =>
      unwrap(api.GET("/api/v1/checkpoints/{checkpoint_uuid}", { params: { path: { checkpoint_uuid: uuid! } } })),
    enabled: !!uuid,
  });
}

export function useLineage(uuid: string | null | undefined) {
  return useQuery({
    queryKey: keys.checkpoints.lineage(uuid ?? ""),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/checkpoints/{checkpoint_uuid}/lineage", { params: { path: { checkpoint_uuid: uuid! } } }),
      ),
    enabled: !!uuid,
  });
}
