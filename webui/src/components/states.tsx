/** Loading, empty and error states: every page shows one of these instead of a blank area. */
import type { UseQueryResult } from "@tanstack/react-query";
import type { ReactNode } from "react";

export function Loading({ what = "" }: { what?: string }) {
  return (
    <p className="state-loading" role="status" aria-live="polite">
      Loading{what ? ` ${what}` : ""}…
    </p>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="state-empty">{children}</p>;
}

export function ErrorState({ error }: { error: unknown }) {
  const message = error instanceof Error ? error.message : String(error);
  return (
    <p className="state-error" role="alert">
      {message}
    </p>
  );
}

/** Renders `children(data)` once the query has data; the loading or error state until then. */
export function QueryView<T>({
  query,
  what,
  children,
}: {
  query: UseQueryResult<T>;
  what?: string;
  children: (data: T) => ReactNode;
}) {
  if (query.isPending) return <Loading what={what} />;
  if (query.error) return <ErrorState error={query.error} />;
  return <>{children(query.data as T)}</>;
}
