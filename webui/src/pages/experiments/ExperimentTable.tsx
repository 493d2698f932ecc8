/** The experiments table: one row per experiment, sortable headers, a checkbox per row. */
import { Link } from "react-router";
import { formatDate, formatDuration, formatNumber, formatPercent, secondsBetween } from "../../components/format";
import { Labels } from "../../components/Labels";
import { StateBadge } from "../../components/StateBadge";
import type { Experiment } from "./data";
import type { Order, SortKey } from "./listParams";

interface Sorting {
  sort: SortKey;
  order: Order;
  onSort: (key: SortKey) => void;
}

function SortHeader({ label, column, sorting, className, title }: { label: string; column: SortKey; sorting: Sorting; className?: string; title?: string }) {
  const active = sorting.sort === column;
  const direction = sorting.order === "asc" ? "ascending" : "descending";
  return (
    <th scope="col" aria-sort={active ? direction : "none"} className={className} title={title}>
      <button type="button" className="sort" onClick={() => sorting.onSort(column)}>
        {label}
        {active ? (sorting.order === "asc" ? " ▲" : " ▼") : ""}
      </button>
    </th>
  );
}

export function Progress({ fraction }: { fraction: number | null | undefined }) {
  if (fraction == null) return <>—</>;
  const percent = Math.max(0, Math.min(100, fraction * 100));
  return (
    <span className="progress-cell">
      <span className="progress" aria-hidden="true">
        <span style={{ width: `${percent}%` }} />
      </span>{" "}
      {formatPercent(fraction)}
    </span>
  );
}

export function ExperimentTable({
  experiments,
  sorting,
  selected,
  onSelect,
  onSelectAll,
}: {
  experiments: Experiment[];
  sorting: Sorting;
  selected: Set<number>;
  onSelect: (id: number, on: boolean) => void;
  onSelectAll: (on: boolean) => void;
}) {
  const allSelected = experiments.length > 0 && experiments.every((e) => selected.has(e.id));
  return (
    <div className="table-wrap">
      <table>
        <thead>
          <tr>
            <th scope="col">
              <input
                type="checkbox"
                aria-label="Select all experiments on this page"
                checked={allSelected}
                onChange={(event) => onSelectAll(event.target.checked)}
              />
            </th>
            <SortHeader label="ID" column="id" sorting={sorting} className="num" />
            <SortHeader label="Name" column="name" sorting={sorting} />
            <SortHeader label="State" column="state" sorting={sorting} />
            <SortHeader label="Owner" column="owner" sorting={sorting} />
            <th scope="col">Project</th>
            <th scope="col">Labels</th>
            <SortHeader label="Progress" column="progress" sorting={sorting} />
            <SortHeader
              label="Best metric"
              column="best_metric"
              sorting={sorting}
              className="num"
              title="Best value of each experiment's searcher metric (hover a value for the metric's name)"
            />
            <SortHeader label="Trials" column="trial_count" sorting={sorting} className="num" />
            <SortHeader label="Started" column="created_at" sorting={sorting} />
            <th scope="col">Duration</th>
          </tr>
        </thead>
        <tbody>
          {experiments.map((e) => (
            <tr key={e.id} data-testid={`experiment-row-${e.id}`}>
              <td>
                <input
                  type="checkbox"
                  aria-label={`Select experiment ${e.id}`}
                  checked={selected.has(e.id)}
                  onChange={(event) => onSelect(e.id, event.target.checked)}
                />
              </td>
              <td className="num">{e.id}</td>
              <td className="wrap exp-name">
                <Link to={`/experiments/${e.id}`}>{e.name}</Link>
                {e.archived ? <span className="chip"> archived</span> : null}
              </td>
              <td>
                <StateBadge state={e.state} />
              </td>
              <td>{e.owner}</td>
              <td className="wrap">
                <Link to={`/projects/${e.project_id}`}>{e.project_name ?? `project ${e.project_id}`}</Link>
              </td>
              <td className="wrap">
                <Labels labels={e.labels} />
              </td>
              <td>
                <Progress fraction={e.progress} />
              </td>
              <td className="num" title={e.searcher_metric ?? undefined}>
                {formatNumber(e.best_metric)}
              </td>
              <td className="num">{e.trial_count ?? "—"}</td>
              <td>{formatDate(e.started_at ?? e.created_at)}</td>
              <td>{formatDuration(e.duration_seconds ?? secondsBetween(e.started_at ?? e.created_at, e.ended_at))}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
