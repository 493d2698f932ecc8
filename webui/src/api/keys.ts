/** Query-key factories, one per resource, so invalidation after an action names the same keys. */
export const keys = {
  me: ["me"] as const,
  experiments: {
    all: ["experiments"] as const,
    list: (params: object) => ["experiments", "list", params] as const,
    detail: (id: number) => ["experiments", id] as const,
    trials: (id: number) => ["experiments", id, "trials"] as const,
    checkpoints: (id: number) => ["experiments", id, "checkpoints"] as const,
    context: (id: number) => ["experiments", id, "context"] as const,
    contextFile: (id: number, path: string) => ["experiments", id, "context", path] as const,
  },
  trials: {
    detail: (id: number) => ["trials", id] as const,
    metrics: (id: number, params: object) => ["trials", id, "metrics", params] as const,
    runs: (id: number) => ["trials", id, "runs"] as const,
    logs: (id: number, params: object) => ["trials", id, "logs", params] as const,
  },
  checkpoints: {
    lineage: (uuid: string) => ["checkpoints", uuid, "lineage"] as const,
    detail: (uuid: string) => ["checkpoints", uuid] as const,
  },
  models: {
    all: ["models"] as const,
    list: (params: object) => ["models", "list", params] as const,
    detail: (name: string) => ["models", name] as const,
    versions: (name: string) => ["models", name, "versions"] as const,
    version: (name: string, version: number) => ["models", name, "versions", version] as const,
  },
  workspaces: {
    all: ["workspaces"] as const,
    detail: (id: number) => ["workspaces", id] as const,
    members: (id: number) => ["workspaces", id, "members"] as const,
    projects: (id: number) => ["workspaces", id, "projects"] as const,
    project: (id: number) => ["projects", id] as const,
  },
  cluster: {
    all: ["cluster"] as const,
    agents: ["cluster", "agents"] as const,
    slots: ["cluster", "slots"] as const,
    pools: ["cluster", "pools"] as const,
    queue: ["cluster", "queue"] as const,
  },
};

/** How often pages poll while something may change; answers are ETag'd, so a poll that finds
 * nothing new costs the master a hash and the network a 304. */
export const LIVE_MS = 2000;
