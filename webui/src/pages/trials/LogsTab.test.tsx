import { screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { LogsTab } from "./LogsTab";
import { renderAt, stubMaster } from "./testing";
import { parseLogLines } from "./trialData";

const LINES = [
  { id: 1, ts: "2024-01-01T00:00:01+00:00", rank: 0, stream: "stdout", message: "INFO: starting epoch 1" },
  { id: 2, ts: "2024-01-01T00:00:02+00:00", rank: 1, stream: "stderr", message: "<script>alert(1)</script>" },
  { id: 3, ts: "2024-01-01T00:00:03+00:00", rank: 0, stream: "stdout", message: "ERROR: loss is <b>NaN</b>" },
];

const ndjson = (lines: object[]) => lines.map((line) => JSON.stringify(line)).join("\n") + "\n";

describe("parseLogLines", () => {
  it("skips blank and torn lines", () => {
    expect(parseLogLines(ndjson(LINES.slice(0, 1)) + '\n{"id": 9, "mes')).toHaveLength(1);
  });
});

describe("LogsTab", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("renders log lines as text: a script tag in a line stays text", async () => {
    stubMaster({ "/api/v1/trials/5/logs": ndjson(LINES) });
    const { container } = renderAt("/trials/5/logs", "/trials/:trialId/:tab", <LogsTab trialId={5} live={false} />);

    const lines = await screen.findAllByTestId("log-line");
    expect(lines).toHaveLength(3);
    expect(screen.getByTestId("trial-logs")).toBeInTheDocument();
    expect(lines[1].textContent).toBe("[rank 1]<script>alert(1)</script>");
    expect(lines[1]).toHaveClass("logline", "stderr");
    expect(lines[0]).not.toHaveClass("stderr");
    expect(container.querySelector("script")).toBeNull();
    expect(container.querySelector(".logline b")).toBeNull();
  });

  it("searches loaded lines and asks the master for a level and a rank", async () => {
    const { calls } = stubMaster({
      "/api/v1/trials/5/logs": (url: URL) => {
        const level = url.searchParams.get("level");
        const rank = url.searchParams.get("rank_id");
        return ndjson(
          LINES.filter((l) => (level ? l.message.startsWith("ERROR") : true) && (rank ? String(l.rank) === rank : true)),
        );
      },
    });
    renderAt("/trials/5/logs", "/trials/:trialId/:tab", <LogsTab trialId={5} live={false} />);
    await screen.findAllByTestId("log-line");

    await userEvent.type(screen.getByLabelText("Search"), "epoch");
    expect(screen.getAllByTestId("log-line")).toHaveLength(1);
    await userEvent.clear(screen.getByLabelText("Search"));

    await userEvent.selectOptions(screen.getByLabelText("Level"), "ERROR");
    await waitFor(() => expect(screen.getAllByTestId("log-line")).toHaveLength(1));
    expect(new URL(calls[calls.length - 1].url).searchParams.get("level")).toBe("ERROR");
    expect(screen.getByTestId("log-line").textContent).toContain("ERROR: loss is <b>NaN</b>");

    await userEvent.selectOptions(screen.getByLabelText("Level"), "");
    await waitFor(() => expect(screen.getAllByTestId("log-line")).toHaveLength(3));
    await userEvent.selectOptions(screen.getByLabelText("Rank"), "1");
    await waitFor(() => expect(screen.getAllByTestId("log-line")).toHaveLength(1));
    expect(new URL(calls[calls.length - 1].url).searchParams.getAll("rank_id")).toEqual(["1"]);
    expect(screen.getByRole("button", { name: "Download" })).toBeEnabled();
    expect(screen.getByLabelText("Follow")).toBeChecked();
  });

  it("follows a live trial: reads with follow and asks again for lines after the last one", async () => {
    let reads = 0;
    const { calls } = stubMaster({
      "/api/v1/trials/7/logs": () => {
        reads += 1;
        // The second read overlaps the first (same line again) and brings one new line.
        return reads === 1 ? ndjson(LINES.slice(0, 2)) : ndjson(LINES.slice(1, 3));
      },
    });
    renderAt("/trials/7/logs", "/trials/:trialId/:tab", <LogsTab trialId={7} live />);
    await waitFor(() => expect(screen.getAllByTestId("log-line")).toHaveLength(3));
    const first = new URL(calls[0].url).searchParams;
    expect(first.get("follow")).toBe("true");
    expect(first.get("tail")).not.toBeNull();
    const second = new URL(calls[1].url).searchParams;
    expect(second.get("tail")).toBeNull();
    expect(second.get("timestamp_after")).not.toBeNull();
  });
});
