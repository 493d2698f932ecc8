/** A trial's logs, following live, with search, level and rank filters and a download. Every line is
 * the trial's own output, so it is rendered as text only. */
import { useEffect, useId, useLayoutEffect, useMemo, useRef, useState } from "react";
import { Empty, ErrorState, Loading } from "../../components/states";
import type { LogLine } from "./trialData";
import { TAIL, useLogStream, type LogLevel } from "./useLogStream";

const LEVELS: LogLevel[] = ["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];
// Within this many pixels of the bottom counts as "at the bottom" (following).
const STICKY_PX = 24;

function lineText(line: LogLine): string {
  return `${line.ts} [rank ${line.rank ?? 0}] ${line.stream === "stderr" ? "stderr " : ""}${line.message}`;
}

function download(trialId: number, lines: LogLine[]) {
  const blob = new Blob([lines.map(lineText).join("\n") + "\n"], { type: "text/plain;charset=utf-8" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = `trial-${trialId}-logs.txt`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 0);
}

export function LogsTab({ trialId, live }: { trialId: number; live: boolean }) {
  const [level, setLevel] = useState<LogLevel | null>(null);
  const [rank, setRank] = useState<number | null>(null);
  const [search, setSearch] = useState("");
  const [follow, setFollow] = useState(true);
  const { lines, error, loading } = useLogStream(trialId, live, { level, rank });
  const box = useRef<HTMLDivElement>(null);
  const ids = useId();

  // Ranks seen so far stay offered after the reader narrows to one of them.
  const [ranks, setRanks] = useState<number[]>([]);
  useEffect(() => {
    setRanks((known) => {
      const seen = new Set(known);
      for (const line of lines) seen.add(line.rank ?? 0);
      return seen.size === known.length ? known : [...seen].sort((a, b) => a - b);
    });
  }, [lines]);

  const needle = search.trim().toLowerCase();
  const shown = useMemo(
    () => (needle ? lines.filter((line) => line.message.toLowerCase().includes(needle)) : lines),
    [lines, needle],
  );

  useLayoutEffect(() => {
    const element = box.current;
    if (follow && element) element.scrollTop = element.scrollHeight;
  }, [shown, follow]);

  function onScroll() {
    const element = box.current;
    if (!element) return;
    const atBottom = element.scrollHeight - element.scrollTop - element.clientHeight <= STICKY_PX;
    if (atBottom !== follow) setFollow(atBottom);
  }

  return (
    <section data-testid="trial-logs" aria-label="Logs">
      <div className="toolbar">
        <label htmlFor={`${ids}-search`}>
          Search
          <input id={`${ids}-search`} type="search" value={search} onChange={(e) => setSearch(e.target.value)} />
        </label>
        <label htmlFor={`${ids}-level`}>
          Level
          <select
            id={`${ids}-level`}
            value={level ?? ""}
            onChange={(e) => setLevel((e.target.value || null) as LogLevel | null)}
          >
            <option value="">All levels</option>
            {LEVELS.map((name) => (
              <option key={name} value={name}>
                {name} and above
              </option>
            ))}
          </select>
        </label>
        <label htmlFor={`${ids}-rank`}>
          Rank
          <select
            id={`${ids}-rank`}
            value={rank ?? ""}
            onChange={(e) => setRank(e.target.value === "" ? null : Number(e.target.value))}
          >
            <option value="">All ranks</option>
            {ranks.map((r) => (
              <option key={r} value={r}>
                rank {r}
              </option>
            ))}
          </select>
        </label>
        <label className="inline">
          <input type="checkbox" checked={follow} onChange={(e) => setFollow(e.target.checked)} />
          Follow
        </label>
        <button type="button" onClick={() => download(trialId, shown)} disabled={!shown.length}>
          Download
        </button>
      </div>
      <p className="muted">
        {lines.length >= TAIL ? `The last ${lines.length} lines` : `${lines.length} lines`}
        {needle ? `, ${shown.length} matching` : ""}
        {live ? " · following live" : ""}
      </p>
      {error ? <ErrorState error={error} /> : null}
      {loading ? (
        <Loading what="logs" />
      ) : !shown.length ? (
        <Empty>{needle ? "No line matches the search." : "No log lines yet."}</Empty>
      ) : (
        <div
          className="logs"
          ref={box}
          onScroll={onScroll}
          tabIndex={0}
          role="log"
          aria-live="off"
          aria-label="Log lines"
        >
          {shown.map((line) => (
            <div
              key={line.id}
              className={line.stream === "stderr" ? "logline stderr" : "logline"}
              data-testid="log-line"
            >
              <span className="rank">[rank {line.rank ?? 0}]</span>
              {line.message}
            </div>
          ))}
        </div>
      )}
    </section>
  );
}
