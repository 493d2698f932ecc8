/** An experiment's, trial's or run's state as a coloured badge (colour is never the only cue). */
export function StateBadge({ state }: { state: string }) {
  const tone =
    {
      ACTIVE: "running",
      RUNNING: "running",
      PULLING: "running",
      STARTING: "running",
      QUEUED: "waiting",
      PENDING: "waiting",
      ASSIGNED: "waiting",
      PAUSED: "waiting",
      STOPPING_CANCELED: "waiting",
      STOPPING_KILLED: "waiting",
      STOPPING_COMPLETED: "waiting",
      COMPLETED: "done",
      CANCELED: "stopped",
      KILLED: "stopped",
      ERROR: "failed",
      FAILED: "failed",
      DELETED: "stopped",
    }[state] ?? "neutral";
  return <span className={`badge badge-${tone}`}>{state}</span>;
}
