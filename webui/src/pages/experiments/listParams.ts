import type { Schemas } from "../../api/client";
import type { paths } from "../../api/schema";

type ExperimentsQuery = NonNullable<paths["/api/v1/experiments"]["get"]["parameters"]["query"]>;

/** The experiment list's filters, sort and page live in the URL, so reload and shared links keep them. */

export const PAGE_SIZE = 50;

export const SORT_KEYS = [
  "id",
  "name",
  "state",
  "owner",
  "created_at",
  "ended_at",
  "progress",
  "best_metric",
  "trial_count",
] as const;
export type SortKey = (typeof SORT_KEYS)[number];
export type Order = "asc" | "desc";

export interface ListParams {
  state: string;
  label: string;
  owner: string;
  q: string;
  sort: SortKey;
  order: Order;
  offset: number;
}

export function readListParams(search: URLSearchParams): ListParams {
  const sort = search.get("sort") as SortKey | null;
  const offset = Number(search.get("offset") ?? 0);
  return {
    state: search.get("state") ?? "",
    label: search.get("label") ?? "",
    owner: search.get("owner") ?? "",
    q: search.get("q") ?? "",
    sort: sort && SORT_KEYS.includes(sort) ? sort : "id",
    order: search.get("order") === "asc" ? "asc" : "desc",
    offset: Number.isInteger(offset) && offset > 0 ? offset : 0,
  };
}

/** The URL for `params`, leaving defaults out so a plain /experiments stays plain. */
export function writeListParams(params: ListParams): URLSearchParams {
  const search = new URLSearchParams();
  if (params.state) search.set("state", params.state);
  if (params.label) search.set("label", params.label);
  if (params.owner) search.set("owner", params.owner);
  if (params.q) search.set("q", params.q);
  if (params.sort !== "id") search.set("sort", params.sort);
  if (params.order !== "desc") search.set("order", params.order);
  if (params.offset) search.set("offset", String(params.offset));
  return search;
}

/** The master's list query for these params (empty filters left out). */
export function listQuery(params: ListParams): ExperimentsQuery {
  return {
    ...(params.state ? { state: [params.state as Schemas["ExperimentState"]] } : {}),
    ...(params.label ? { label: [params.label] } : {}),
    ...(params.owner ? { owner: params.owner } : {}),
    ...(params.q ? { q: params.q } : {}),
    sort: params.sort,
    order: params.order,
    limit: PAGE_SIZE,
    offset: params.offset,
  };
}
