/** Code: the experiment's context as a file tree, and a read-only viewer of one file's text. */
import { useQuery } from "@tanstack/react-query";
import { useSearchParams } from "react-router";
import { api, ApiError, unwrap } from "../../api/client";
import { keys } from "../../api/keys";
import { formatBytes } from "../../components/format";
import { Empty, ErrorState, Loading, QueryView } from "../../components/states";
import type { ExperimentDetail } from "./data";

export interface TreeEntry {
  kind: "folder" | "file";
  path: string;
  name: string;
  depth: number;
  size: number;
}

/** Files in path order, each folder listed once before its contents, with its nesting depth. */
export function treeOf(files: { path: string; size: number }[]): TreeEntry[] {
  const entries: TreeEntry[] = [];
  const seen = new Set<string>();
  for (const file of [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    const parts = file.path.split("/");
    parts.slice(0, -1).forEach((name, depth) => {
      const folder = parts.slice(0, depth + 1).join("/");
      if (seen.has(folder)) return;
      seen.add(folder);
      entries.push({ kind: "folder", path: folder, name, depth, size: 0 });
    });
    entries.push({ kind: "file", path: file.path, name: parts[parts.length - 1], depth: parts.length - 1, size: file.size });
  }
  return entries;
}

export function CodeTab({ experiment }: { experiment: ExperimentDetail }) {
  const [search, setSearch] = useSearchParams();
  const selected = search.get("file");
  const listing = useQuery({
    queryKey: keys.experiments.context(experiment.id),
    queryFn: () =>
      unwrap(api.GET("/api/v1/experiments/{experiment_id}/context", { params: { path: { experiment_id: experiment.id } } })),
    enabled: Boolean(experiment.context_sha256),
    staleTime: Infinity,
  });

  if (!experiment.context_sha256) return <Empty>This experiment was submitted without code.</Empty>;
  if (listing.error instanceof ApiError && listing.error.status === 404) {
    return <Empty>This experiment's code is no longer stored.</Empty>;
  }
  return (
    <QueryView query={listing} what="files">
      {(data) =>
        !data.files.length ? (
          <Empty>This experiment's context holds no files.</Empty>
        ) : (
          <div className="split">
            <nav aria-label="Files">
              <ul className="filetree">
                {treeOf(data.files).map((entry) => (
                  <li key={`${entry.kind}:${entry.path}`} style={{ paddingLeft: `${entry.depth}rem` }}>
                    {entry.kind === "folder" ? (
                      <span className="folder">{entry.name}/</span>
                    ) : (
                      <button
                        type="button"
                        title={entry.path}
                        aria-current={entry.path === selected ? "true" : undefined}
                        onClick={() => setSearch({ file: entry.path }, { replace: true })}
                      >
                        {entry.name}
                      </button>
                    )}
                  </li>
                ))}
              </ul>
            </nav>
            {selected ? <FileViewer experimentId={experiment.id} path={selected} /> : <Empty>Choose a file to read it.</Empty>}
          </div>
        )
      }
    </QueryView>
  );
}

function FileViewer({ experimentId, path }: { experimentId: number; path: string }) {
  const file = useQuery({
    queryKey: keys.experiments.contextFile(experimentId, path),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/experiments/{experiment_id}/context/file", {
          params: { path: { experiment_id: experimentId }, query: { path } },
        }),
      ),
    staleTime: Infinity,
  });
  return (
    <section className="viewer" aria-label={`File ${path}`}>
      <h2 className="mono">{path}</h2>
      {file.isPending ? (
        <Loading what="file" />
      ) : file.error ? (
        <ErrorState error={file.error} />
      ) : file.data.binary ? (
        <p className="state-empty">
          Binary file ({file.data.size} bytes), not shown
        </p>
      ) : (
        <>
          {file.data.truncated ? (
            <p className="hint" role="note">
              Only the beginning is shown: the file holds {formatBytes(file.data.size)}.
            </p>
          ) : null}
          <pre data-testid="code-viewer">{file.data.text ?? ""}</pre>
        </>
      )}
    </section>
  );
}
