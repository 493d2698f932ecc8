/** One registered model: its header, its versions and, when one is chosen (in the URL), what lies
 * behind it. Delete buttons appear for those the master lets change the model: its owner as a
 * workspace editor, workspace admins and cluster admins (services/authz.model_to_change). */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Link, useNavigate, useParams } from "react-router";
import { api, unwrap, type Schemas } from "../../api/client";
import { keys } from "../../api/keys";
import { formatDate } from "../../components/format";
import { Labels } from "../../components/Labels";
import { Empty, ErrorState, QueryView } from "../../components/states";
import { useMayChange } from "../trials/access";
import { modelVersionPath } from "../trials/LineageGraph";
import { shortUuid } from "../trials/trialData";
import { VersionDetail } from "./VersionDetail";

type Model = Schemas["ModelOut"];
type Version = Schemas["ModelVersionOut"];

/** A few "key=value" pairs of metadata as one line of text. */
export function metadataSummary(metadata: Record<string, unknown>, most = 3): string {
  const entries = Object.entries(metadata);
  if (!entries.length) return "—";
  const shown = entries
    .slice(0, most)
    .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`);
  return shown.join(", ") + (entries.length > most ? ` (+${entries.length - most})` : "");
}

function VersionsTable({ versions, selected }: { versions: Version[]; selected: number | null }) {
  return (
    <div className="table-wrap">
      <table>
        <caption className="visually-hidden">Versions</caption>
        <thead>
          <tr>
            <th scope="col" className="num">Version</th>
            <th scope="col">Checkpoint</th>
            <th scope="col">Trial</th>
            <th scope="col">Experiment</th>
            <th scope="col">Registered</th>
            <th scope="col">By</th>
            <th scope="col">Metadata</th>
          </tr>
        </thead>
        <tbody>
          {versions.map((v) => (
            <tr key={v.id} className={v.version === selected ? "selected" : undefined}>
              <td className="num">
                <Link
                  to={modelVersionPath(v.model, v.version)}
                  aria-current={v.version === selected ? "page" : undefined}
                >
                  v{v.version}
                </Link>
              </td>
              <td className="mono">
                {v.trial_id != null ? (
                  <Link
                    to={`/trials/${v.trial_id}/checkpoints?checkpoint=${encodeURIComponent(v.checkpoint_uuid)}`}
                    title={v.checkpoint_uuid}
                  >
                    {shortUuid(v.checkpoint_uuid)}
                  </Link>
                ) : (
                  <span title={v.checkpoint_uuid}>{shortUuid(v.checkpoint_uuid)}</span>
                )}
              </td>
              <td>{v.trial_id != null ? <Link to={`/trials/${v.trial_id}`}>{v.trial_id}</Link> : "—"}</td>
              <td>
                {v.experiment_id != null ? <Link to={`/experiments/${v.experiment_id}`}>{v.experiment_id}</Link> : "—"}
              </td>
              <td>{formatDate(v.created_at)}</td>
              <td>{v.owner}</td>
              <td className="wrap">{metadataSummary(v.metadata)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function ModelView({ model, selected }: { model: Model; selected: number | null }) {
  const mayChange = useMayChange(model.project_id, model.owner);
  const client = useQueryClient();
  const navigate = useNavigate();
  const project = useQuery({
    queryKey: keys.workspaces.project(model.project_id),
    queryFn: () =>
      unwrap(api.GET("/api/v1/projects/{project_id}", { params: { path: { project_id: model.project_id } } })),
    staleTime: 60_000,
  });
  const workspaces = useQuery({
    queryKey: keys.workspaces.all,
    queryFn: () => unwrap(api.GET("/api/v1/workspaces")),
    staleTime: 30_000,
  });
  const workspace = workspaces.data?.find((ws) => ws.id === project.data?.workspace_id);
  const versions = useQuery({
    queryKey: keys.models.versions(model.name),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/models/{name}/versions", {
          params: { path: { name: model.name }, query: { limit: 1000 } },
        }),
      ),
  });
  const remove = useMutation({
    mutationFn: () => unwrap(api.DELETE("/api/v1/models/{name}", { params: { path: { name: model.name } } })),
    onSuccess: () => {
      client.removeQueries({ queryKey: keys.models.detail(model.name) });
      void client.invalidateQueries({ queryKey: keys.models.all });
      navigate("/models", { replace: true });
    },
  });

  return (
    <>
      <div className="page-header">
        <h1>{model.name}</h1>
        {mayChange ? (
          <button
            type="button"
            className="danger"
            disabled={remove.isPending}
            onClick={() => {
              const question = `Delete model ${model.name} and all its versions? The checkpoints stay.`;
              if (window.confirm(question)) remove.mutate();
            }}
          >
            Delete model
          </button>
        ) : null}
      </div>
      {remove.error ? <ErrorState error={remove.error} /> : null}
      {model.description ? <p className="wrap-text">{model.description}</p> : null}
      <Labels labels={model.labels} />
      <dl className="meta kv">
        <div>
          <dt>Owner</dt>
          <dd>{model.owner}</dd>
        </div>
        <div>
          <dt>Project</dt>
          <dd>
            {project.data ? (
              <Link to={`/projects/${model.project_id}`}>{project.data.name}</Link>
            ) : (
              `project ${model.project_id}`
            )}
          </dd>
        </div>
        {project.data ? (
          <div>
            <dt>Workspace</dt>
            <dd>
              <Link to={`/workspaces/${project.data.workspace_id}`}>
                {workspace?.name ?? `workspace ${project.data.workspace_id}`}
              </Link>
            </dd>
          </div>
        ) : null}
        <div>
          <dt>Versions</dt>
          <dd>{model.num_versions}</dd>
        </div>
        <div>
          <dt>Updated</dt>
          <dd>{formatDate(model.updated_at)}</dd>
        </div>
      </dl>
      {Object.keys(model.metadata).length ? <pre>{JSON.stringify(model.metadata, null, 2)}</pre> : null}
      <h2>Versions</h2>
      <QueryView query={versions} what="versions">
        {(page) =>
          page.items.length ? (
            <VersionsTable versions={page.items} selected={selected} />
          ) : (
            <Empty>No version yet: register a checkpoint from a trial's Checkpoints tab.</Empty>
          )
        }
      </QueryView>
      {selected != null ? <VersionDetail name={model.name} number={selected} mayChange={mayChange} /> : null}
    </>
  );
}

export function ModelPage() {
  const params = useParams();
  const name = params.name ?? "";
  const number = params.version == null ? null : Number(params.version.replace(/^v/, ""));
  const model = useQuery({
    queryKey: keys.models.detail(name),
    queryFn: () => unwrap(api.GET("/api/v1/models/{name}", { params: { path: { name } } })),
    enabled: !!name,
  });
  if (number != null && !(Number.isInteger(number) && number > 0)) return <Empty>No such version.</Empty>;
  return (
    <QueryView query={model} what="model">
      {(data) => <ModelView model={data} selected={number} />}
    </QueryView>
  );
}
