/** Whether the signed-in user may change an experiment (and so its trials and checkpoints) or a
 * model: the master's rule, from the workspace role the object's project lies in. */
import { useQuery } from "@tanstack/react-query";
import { api, unwrap } from "../../api/client";
import { keys } from "../../api/keys";
import { canChange, useMe, useWorkspaceRoles } from "../../auth";

/** The workspace a project lies in (null until known or when the project is out of sight). */
export function useProjectWorkspace(projectId: number | null | undefined): number | null {
  const project = useQuery({
    queryKey: keys.workspaces.project(projectId ?? 0),
    queryFn: () => unwrap(api.GET("/api/v1/projects/{project_id}", { params: { path: { project_id: projectId! } } })),
    enabled: projectId != null,
    staleTime: 60_000,
  });
  return project.data?.workspace_id ?? null;
}

/** True when the user may change the project's objects owned by `owner` (false while loading). */
export function useMayChange(projectId: number | null | undefined, owner: string | null | undefined): boolean {
  const me = useMe();
  const roles = useWorkspaceRoles();
  const workspaceId = useProjectWorkspace(me.admin ? null : projectId);
  if (me.admin) return true;
  if (workspaceId == null || owner == null) return false;
  return canChange(me, roles.get(workspaceId), owner);
}

export function useExperiment(experimentId: number | null | undefined) {
  return useQuery({
    queryKey: keys.experiments.detail(experimentId ?? 0),
    queryFn: () =>
      unwrap(api.GET("/api/v1/experiments/{experiment_id}", { params: { path: { experiment_id: experimentId! } } })),
    enabled: experimentId != null,
    staleTime: 10_000,
  });
}

/** The experiment, and whether the user may steer it (kill its trials, register its checkpoints). */
export function useExperimentAccess(experimentId: number | null | undefined) {
  const experiment = useExperiment(experimentId);
  const mayChange = useMayChange(experiment.data?.project_id, experiment.data?.owner);
  return { experiment, mayChange };
}
