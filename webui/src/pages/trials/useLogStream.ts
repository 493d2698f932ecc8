/**
 * A trial's log lines, following live: while the trial may still write, the master's `follow`
 * stream stays open and this hook appends what arrives. The stream ends when no run is going or
 * coming (a trial between runs); the hook then asks again after LIVE_MS, from a little before the
 * last line it holds, and drops lines it already has (ids only grow).
 */
import { useEffect, useRef, useState } from "react";
import { api, ApiError, unwrap } from "../../api/client";
import { LIVE_MS } from "../../api/keys";
import { parseLogLines, type LogLine } from "./trialData";

export type LogLevel = "TRACE" | "DEBUG" | "INFO" | "WARNING" | "ERROR" | "CRITICAL";

export interface LogFilter {
  level: LogLevel | null;
  rank: number | null;
}

/** The first read shows the last TAIL lines; the view keeps at most KEEP lines. */
export const TAIL = 5000;
export const KEEP = 20_000;
// Reconnects ask from this long before the last line seen, in case lines share a timestamp.
const OVERLAP_MS = 5000;

export interface LogStream {
  lines: LogLine[];
  error: unknown;
  loading: boolean;
}

function wait(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export function useLogStream(trialId: number, live: boolean, filter: LogFilter): LogStream {
  const [state, setState] = useState<LogStream>({ lines: [], error: null, loading: true });
  // Read by the running loop, so the trial ending does not restart (and reload) the stream.
  const liveRef = useRef(live);
  liveRef.current = live;

  useEffect(() => {
    const abort = new AbortController();
    const { signal } = abort;
    let lastId = 0;
    let lastTs: string | null = null;
    setState({ lines: [], error: null, loading: true });

    function append(batch: LogLine[]) {
      const fresh = batch.filter((line) => line.id > lastId);
      if (!fresh.length) return;
      lastId = fresh[fresh.length - 1].id;
      lastTs = fresh[fresh.length - 1].ts;
      setState((s) => {
        const lines = s.lines.concat(fresh);
        return { lines: lines.length > KEEP ? lines.slice(lines.length - KEEP) : lines, error: null, loading: false };
      });
    }

    async function readOnce(first: boolean) {
      const after = lastTs ? new Date(Date.parse(lastTs) - OVERLAP_MS).toISOString() : undefined;
      const body = await unwrap(
        api.GET("/api/v1/trials/{trial_id}/logs", {
          params: {
            path: { trial_id: trialId },
            query: {
              follow: liveRef.current,
              tail: first ? TAIL : undefined,
              timestamp_after: first ? undefined : after,
              level: filter.level ?? undefined,
              rank_id: filter.rank == null ? undefined : [filter.rank],
            },
          },
          parseAs: "stream",
          signal,
        }),
      );
      if (!body) return;
      const reader = body.pipeThrough(new TextDecoderStream()).getReader();
      let pending = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pending += value;
        const cut = pending.lastIndexOf("\n");
        if (cut < 0) continue;
        append(parseLogLines(pending.slice(0, cut)));
        pending = pending.slice(cut + 1);
      }
      append(parseLogLines(pending));
    }

    async function loop() {
      let first = true;
      while (!signal.aborted) {
        try {
          await readOnce(first);
          first = false;
          setState((s) => (s.loading || s.error ? { ...s, loading: false, error: null } : s));
        } catch (error) {
          if (signal.aborted) return;
          setState((s) => ({ ...s, loading: false, error }));
          // A refusal (403, 404) will not change by asking again.
          if (error instanceof ApiError && error.status >= 400 && error.status < 500) return;
        }
        if (!liveRef.current) return;
        await wait(LIVE_MS, signal);
      }
    }

    void loop();
    return () => abort.abort();
  }, [trialId, filter.level, filter.rank]);

  return state;
}
