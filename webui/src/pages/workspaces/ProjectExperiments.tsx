/** A project's experiments, 50 to a page; the page number lives in the URL so reload keeps it. */
import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { Link, useSearchParams } from "react-router";
import { api, unwrap } from "../../api/client";
import { keys, LIVE_MS } from "../../api/keys";
import { formatDate } from "../../components/format";
import { StateBadge } from "../../components/StateBadge";
import { Empty, QueryView } from "../../components/states";

export const PAGE_SIZE = 50;
const FINAL = new Set(["COMPLETED", "CANCELED", "ERROR", "DELETE_FAILED"]);

export function ProjectExperiments({ projectId }: { projectId: number }) {
  const [search, setSearch] = useSearchParams();
  const offset = Math.max(0, Math.floor(Number(search.get("offset")) || 0));
  const params = { project_id: projectId, limit: PAGE_SIZE, offset };
  const experiments = useQuery({
    queryKey: keys.experiments.list(params),
    queryFn: () => unwrap(api.GET("/api/v1/experiments", { params: { query: params } })),
    placeholderData: keepPreviousData,
    // Poll only while something on this page can still change.
    refetchInterval: (query) => (query.state.data?.items.some((e) => !FINAL.has(e.state)) ? LIVE_MS : false),
  });
  const goTo = (next: number) =>
    setSearch((prev) => {
      const copy = new URLSearchParams(prev);
      if (next > 0) copy.set("offset", String(next));
      else copy.delete("offset");
      return copy;
    });
  return (
    <section aria-labelledby="project-experiments">
      <h2 id="project-experiments">Experiments</h2>
      <QueryView query={experiments} what="experiments">
        {(page) =>
          page.total === 0 ? (
            <Empty>No experiments in this project yet.</Empty>
          ) : (
            <>
              <div className="table-wrap">
                <table data-testid="project-experiments">
                  <thead>
                    <tr>
                      <th scope="col" className="num">
                        ID
                      </th>
                      <th scope="col">Name</th>
                      <th scope="col">State</th>
                      <th scope="col">Owner</th>
                      <th scope="col">Created</th>
                    </tr>
                  </thead>
                  <tbody>
                    {page.items.map((e) => (
                      <tr key={e.id}>
                        <td className="num">{e.id}</td>
                        <td className="wrap">
                          <Link to={`/experiments/${e.id}`}>{e.name || `Experiment ${e.id}`}</Link>
                        </td>
                        <td>
                          <StateBadge state={e.state} />
                        </td>
                        <td>{e.owner}</td>
                        <td>{formatDate(e.created_at)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
              <nav className="pager" aria-label="Experiment pages">
                <button type="button" disabled={offset === 0} onClick={() => goTo(Math.max(0, offset - PAGE_SIZE))}>
                  Previous page
                </button>
                <span>
                  {page.items.length ? `${offset + 1}–${offset + page.items.length}` : "0"} of {page.total}
                </span>
                <button type="button" disabled={offset + PAGE_SIZE >= page.total} onClick={() => goTo(offset + PAGE_SIZE)}>
                  Next page
                </button>
              </nav>
            </>
          )
        }
      </QueryView>
    </section>
  );
}
