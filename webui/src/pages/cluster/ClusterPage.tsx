/** The cluster as it is now: resource pools, agents with their slots, and the queue. Everything
 * here changes without the user doing anything, so the page always polls (ETag'd, so cheap). */
import { AgentsSection } from "./AgentsSection";
import { QueueSection } from "./QueueSection";
import { ResourcePools } from "./ResourcePools";

export function ClusterPage() {
  return (
    <>
      <div className="page-header">
        <h1>Cluster</h1>
      </div>
      <ResourcePools />
      <AgentsSection />
      <QueueSection />
    </>
  );
}
