/** /experiments: every experiment the user may see, filtered, sorted and paged by the master. */
import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { useEffect, useRef, useState } from "react";
import { useSearchParams } from "react-router";
import { api, unwrap } from "../../api/client";
import { keys, LIVE_MS } from "../../api/keys";
import { Empty, ErrorState, Loading } from "../../components/states";
import { BulkBar } from "./BulkBar";
import { isLive, type Experiment } from "./data";
import { ExperimentTable } from "./ExperimentTable";
import { listQuery, PAGE_SIZE, readListParams, writeListParams, type ListParams, type SortKey } from "./listParams";

const STATES = [
  "ACTIVE",
  "PAUSED",
  "STOPPING_CANCELED",
  "STOPPING_KILLED",
  "STOPPING_COMPLETED",
  "STOPPING_ERROR",
  "COMPLETED",
  "CANCELED",
  "ERROR",
  "DELETING",
  "DELETE_FAILED",
];

/** A text filter that reaches the URL (and the master) once typing pauses for 300 ms. */
function DebouncedInput({ label, value, onCommit, type = "text" }: { label: string; value: string; onCommit: (value: string) => void; type?: string }) {
  const [text, setText] = useState(value);
  const commit = useRef(onCommit);
  useEffect(() => {
    commit.current = onCommit;
  });
  useEffect(() => setText(value), [value]);
  useEffect(() => {
    if (text === value) return;
    const timer = setTimeout(() => commit.current(text), 300);
    return () => clearTimeout(timer);
  }, [text, value]);
  return (
    <label>
      {label}
      <input type={type} value={text} onChange={(event) => setText(event.target.value)} />
    </label>
  );
}

export function ExperimentListPage() {
  const [search, setSearch] = useSearchParams();
  const params = readListParams(search);
  const [selected, setSelected] = useState<Set<number>>(new Set());

  // Filters, sort and page each start from a fresh selection: the rows it named may be gone.
  const update = (change: Partial<ListParams>) => {
    setSelected(new Set());
    setSearch(writeListParams({ ...params, offset: 0, ...change }));
  };

  const list = useQuery({
    queryKey: keys.experiments.list(params),
    queryFn: () =>
      unwrap(api.GET("/api/v1/experiments", { params: { query: listQuery(params) } })),
    placeholderData: keepPreviousData,
    // Always: an experiment submitted from the CLI must appear without a reload. ETags make an
    // unchanged page a 304; the pace slows when nothing shown is running.
    refetchInterval: (query) => (query.state.data?.items.some((e) => isLive(e.state)) ? LIVE_MS : LIVE_MS * 2),
  });
  const experiments: Experiment[] = list.data?.items ?? [];
  const total = list.data?.total ?? 0;
  const shownSelected = experiments.filter((e) => selected.has(e.id));

  const onSort = (column: SortKey) =>
    update({
      sort: column,
      order: params.sort === column ? (params.order === "asc" ? "desc" : "asc") : column === "name" || column === "owner" ? "asc" : "desc",
    });

  return (
    <>
      <div className="page-header">
        <h1>Experiments</h1>
      </div>
      <div className="toolbar" role="search">
        <label>
          State
          <select value={params.state} onChange={(event) => update({ state: event.target.value })}>
            <option value="">any</option>
            {STATES.map((state) => (
              <option key={state} value={state}>
                {state}
              </option>
            ))}
          </select>
        </label>
        <DebouncedInput label="Label" value={params.label} onCommit={(label) => update({ label })} />
        <DebouncedInput label="Owner" value={params.owner} onCommit={(owner) => update({ owner })} />
        <DebouncedInput label="Search" type="search" value={params.q} onCommit={(q) => update({ q })} />
      </div>
      <BulkBar experiments={shownSelected} />
      {list.isPending ? (
        <Loading what="experiments" />
      ) : list.error && !list.data ? (
        <ErrorState error={list.error} />
      ) : !experiments.length ? (
        <Empty>{params.offset ? "No experiments on this page." : "No experiments match."}</Empty>
      ) : (
        <>
          {list.error ? <ErrorState error={list.error} /> : null}
          <ExperimentTable
            experiments={experiments}
            sorting={{ sort: params.sort, order: params.order, onSort }}
            selected={selected}
            onSelect={(id, on) => {
              const next = new Set(selected);
              if (on) next.add(id);
              else next.delete(id);
              setSelected(next);
            }}
            onSelectAll={(on) => setSelected(on ? new Set(experiments.map((e) => e.id)) : new Set())}
          />
        </>
      )}
      <nav className="pager" aria-label="Pages">
        <button
          type="button"
          disabled={params.offset === 0}
          onClick={() => update({ offset: Math.max(0, params.offset - PAGE_SIZE) })}
        >
          Previous page
        </button>
        <button
          type="button"
          disabled={params.offset + PAGE_SIZE >= total}
          onClick={() => update({ offset: params.offset + PAGE_SIZE })}
        >
          Next page
        </button>
        <span aria-live="polite">
          {total ? `Showing ${params.offset + 1}–${Math.min(params.offset + experiments.length, total)} of ${total}` : ""}
        </span>
      </nav>
    </>
  );
}
