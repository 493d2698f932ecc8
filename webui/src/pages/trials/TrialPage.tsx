/** One trial: header, then tabs for its metrics, logs, runs and checkpoints. Everything polls
 * while the trial may still change and stops once it has ended. */
import { useQuery } from "@tanstack/react-query";
import { useParams } from "react-router";
import { api, unwrap } from "../../api/client";
import { keys, LIVE_MS } from "../../api/keys";
import { Tabs } from "../../components/Tabs";
import { Empty, QueryView } from "../../components/states";
import { useExperimentAccess } from "./access";
import { CheckpointsTab } from "./CheckpointsTab";
import { LogsTab } from "./LogsTab";
import { MetricsTab } from "./MetricsTab";
import { RunsTab } from "./RunsTab";
import { TrialHeader } from "./TrialHeader";
import { isTerminal, type Trial } from "./trialData";

const TABS = [
  { id: "metrics", label: "Metrics" },
  { id: "logs", label: "Logs" },
  { id: "runs", label: "Runs" },
  { id: "checkpoints", label: "Checkpoints" },
];

function TrialView({ trial, tab }: { trial: Trial; tab: string }) {
  const { experiment, mayChange } = useExperimentAccess(trial.experiment_id);
  const live = !isTerminal(trial.state);
  return (
    <>
      <TrialHeader trial={trial} experimentName={experiment.data?.name} mayChange={mayChange} />
      <Tabs base={`/trials/${trial.id}`} tabs={TABS} />
      {tab === "metrics" && <MetricsTab trialId={trial.id} live={live} />}
      {tab === "logs" && <LogsTab trialId={trial.id} live={live} />}
      {tab === "runs" && <RunsTab trialId={trial.id} experimentId={trial.experiment_id} live={live} />}
      {tab === "checkpoints" && (
        <CheckpointsTab
          trialId={trial.id}
          experimentId={trial.experiment_id}
          projectId={experiment.data?.project_id ?? null}
          latestCheckpoint={trial.latest_checkpoint}
          mayChange={mayChange}
          live={live}
        />
      )}
      {!TABS.some((t) => t.id === tab) && <Empty>No such tab.</Empty>}
    </>
  );
}

export function TrialPage() {
  const params = useParams();
  const trialId = Number(params.trialId);
  const tab = params.tab ?? "metrics";
  const valid = Number.isInteger(trialId) && trialId > 0;
  const trial = useQuery({
    queryKey: keys.trials.detail(trialId),
    queryFn: () => unwrap(api.GET("/api/v1/trials/{trial_id}", { params: { path: { trial_id: trialId } } })),
    enabled: valid,
    refetchInterval: (query) => {
      const data = query.state.data;
      return !data || isTerminal(data.state) ? false : LIVE_MS;
    },
  });
  if (!valid) return <Empty>No such trial.</Empty>;
  return (
    <QueryView query={trial} what="trial">
      {(data) => <TrialView trial={data} tab={tab} />}
    </QueryView>
  );
}
