/** /experiments/:id/:tab: one experiment's header and actions, and a tab per way of looking at it. */
import { useQuery } from "@tanstack/react-query";
import { useMemo } from "react";
import { useParams } from "react-router";
import { api, unwrap } from "../../api/client";
import { keys, LIVE_MS } from "../../api/keys";
import { canChange, useMe, useWorkspaceRoles } from "../../auth";
import { Empty, ErrorState, Loading } from "../../components/states";
import { Tabs } from "../../components/Tabs";
import { CheckpointsTab } from "./CheckpointsTab";
import { CodeTab } from "./CodeTab";
import { ConfigTab } from "./ConfigTab";
import { isLive, searcherOf, type ExperimentDetail, type Trial } from "./data";
import { ExperimentHeader } from "./ExperimentHeader";
import { HyperparametersTab } from "./HyperparametersTab";
import { OverviewTab } from "./OverviewTab";
import { TrialsTab } from "./TrialsTab";

const TABS = [
  { id: "overview", label: "Overview" },
  { id: "trials", label: "Trials" },
  { id: "hyperparameters", label: "Hyperparameters" },
  { id: "checkpoints", label: "Checkpoints" },
  { id: "config", label: "Config" },
  { id: "code", label: "Code" },
];

export function ExperimentPage() {
  const { experimentId, tab = "overview" } = useParams();
  const id = Number(experimentId);
  const valid = Number.isInteger(id) && id > 0;
  const me = useMe();
  const roles = useWorkspaceRoles();

  const detail = useQuery({
    queryKey: keys.experiments.detail(id),
    queryFn: async () =>
      (await unwrap(
        api.GET("/api/v1/experiments/{experiment_id}", { params: { path: { experiment_id: id } } }),
      )) as ExperimentDetail,
    enabled: valid,
    refetchInterval: (query) => (query.state.data && isLive(query.state.data.state) ? LIVE_MS : false),
  });
  const live = detail.data ? isLive(detail.data.state) : false;
  const trials = useQuery({
    queryKey: keys.experiments.trials(id),
    queryFn: (): Promise<Trial[]> =>
      unwrap(api.GET("/api/v1/experiments/{experiment_id}/trials", { params: { path: { experiment_id: id } } })),
    enabled: valid,
    refetchInterval: live ? LIVE_MS : false,
  });
  const projectId = detail.data?.project_id;
  const project = useQuery({
    queryKey: keys.workspaces.project(projectId ?? 0),
    queryFn: () => unwrap(api.GET("/api/v1/projects/{project_id}", { params: { path: { project_id: projectId! } } })),
    enabled: projectId != null,
    staleTime: 60_000,
  });

  const config = detail.data?.config;
  const searcher = useMemo(() => searcherOf(config), [config]);

  if (!valid) return <Empty>No such experiment.</Empty>;
  if (detail.isPending) return <Loading what="experiment" />;
  if (detail.error) return <ErrorState error={detail.error} />;

  const experiment = detail.data;
  const workspaceId = experiment.workspace_id ?? project.data?.workspace_id;
  const editable = canChange(me, workspaceId == null ? undefined : roles.get(workspaceId), experiment.owner);
  const base = `/experiments/${id}`;

  let body;
  if (tab === "config") body = <ConfigTab experiment={experiment} />;
  else if (tab === "code") body = <CodeTab experiment={experiment} />;
  else if (tab === "checkpoints")
    body = <CheckpointsTab experiment={experiment} searcher={searcher} editable={editable} />;
  else if (trials.isPending) body = <Loading what="trials" />;
  else if (trials.error) body = <ErrorState error={trials.error} />;
  else if (tab === "overview") body = <OverviewTab trials={trials.data} searcher={searcher} live={live} />;
  else if (tab === "trials") body = <TrialsTab trials={trials.data} searcher={searcher} live={live} />;
  else if (tab === "hyperparameters") body = <HyperparametersTab trials={trials.data} searcher={searcher} />;
  else body = <Empty>No such tab.</Empty>;

  return (
    <>
      <ExperimentHeader experiment={experiment} projectName={experiment.project_name ?? project.data?.name} editable={editable} />
      <Tabs base={base} tabs={TABS} />
      <section aria-label={TABS.find((t) => t.id === tab)?.label ?? "Section"}>{body}</section>
    </>
  );
}
