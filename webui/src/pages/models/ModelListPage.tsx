/** The model registry: every model the user can see, searchable by name, a page at a time. */
import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { useDeferredValue, useId, useState } from "react";
import { Link } from "react-router";
import { api, unwrap, type Schemas } from "../../api/client";
import { keys } from "../../api/keys";
import { formatDate } from "../../components/format";
import { Labels } from "../../components/Labels";
import { Empty, QueryView } from "../../components/states";
import { NewModelForm, useMayCreateModels } from "./NewModelForm";

const PAGE = 50;

function ModelTable({ models }: { models: Schemas["ModelOut"][] }) {
  return (
    <div className="table-wrap">
      <table>
        <caption className="visually-hidden">Registered models</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Description</th>
            <th scope="col">Labels</th>
            <th scope="col" className="num">Versions</th>
            <th scope="col">Owner</th>
            <th scope="col">Updated</th>
          </tr>
        </thead>
        <tbody>
          {models.map((model) => (
            <tr key={model.id}>
              <td className="wrap">
                <Link to={`/models/${encodeURIComponent(model.name)}`}>{model.name}</Link>
              </td>
              <td className="wrap description-cell">{model.description || "—"}</td>
              <td className="wrap">
                <Labels labels={model.labels} />
              </td>
              <td className="num">{model.num_versions}</td>
              <td>{model.owner}</td>
              <td>{formatDate(model.updated_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function ModelListPage() {
  const [search, setSearch] = useState("");
  const [offset, setOffset] = useState(0);
  const [creating, setCreating] = useState(false);
  const name = useDeferredValue(search.trim());
  const mayCreate = useMayCreateModels();
  const ids = useId();
  const params = { name: name || undefined, limit: PAGE, offset };
  const models = useQuery({
    queryKey: keys.models.list(params),
    queryFn: () => unwrap(api.GET("/api/v1/models", { params: { query: params } })),
    placeholderData: keepPreviousData,
  });

  return (
    <>
      <div className="page-header">
        <h1>Models</h1>
        {mayCreate && !creating ? (
          <button type="button" className="primary" onClick={() => setCreating(true)}>
            New model
          </button>
        ) : null}
      </div>
      {creating ? <NewModelForm onClose={() => setCreating(false)} /> : null}
      <div className="toolbar">
        <label htmlFor={`${ids}-search`}>
          Search
          <input
            id={`${ids}-search`}
            type="search"
            placeholder="Model name"
            value={search}
            onChange={(e) => {
              setSearch(e.target.value);
              setOffset(0);
            }}
          />
        </label>
      </div>
      <QueryView query={models} what="models">
        {(page) =>
          page.items.length ? (
            <>
              <ModelTable models={page.items} />
              <div className="pager">
                <button type="button" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>
                  Previous
                </button>
                <span>
                  {offset + 1}–{offset + page.items.length} of {page.total}
                </span>
                <button
                  type="button"
                  disabled={offset + page.items.length >= page.total}
                  onClick={() => setOffset(offset + PAGE)}
                >
                  Next
                </button>
              </div>
            </>
          ) : (
            <Empty>{name ? "No model matches that name." : "No model registered yet."}</Empty>
          )
        }
      </QueryView>
    </>
  );
}
