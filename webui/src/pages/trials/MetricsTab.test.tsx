import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { epochKey, metricNames, seriesFor } from "./metricsData";
import { MetricsTab } from "./MetricsTab";
import { renderAt, stubMaster } from "./testing";
import { parseLooseJson, type MetricRow } from "./trialData";

// No canvas in a test DOM: a uPlot that refuses to draw, as MetricChart expects there.
vi.mock("uplot", () => ({
  default: class {
    constructor() {
      throw new Error("no canvas");
    }
  },
}));

function row(group: string, step: number, values: Record<string, number>): MetricRow {
  return {
    group,
    steps_completed: step,
    run_id: 1,
    values,
    reported_at: new Date(Date.UTC(2024, 0, 1, 0, 0, step)).toISOString(),
    archived: false,
  };
}

const TRAINING = [1, 2, 3, 4, 5].map((s) => row("training", s * 10, { loss: 1 / s, epoch: s / 5 }));
const VALIDATION = [2, 4, 6].map((s) => row("validation", s * 10, { accuracy: s / 10, loss: 1 / s }));
const CUSTOM = [1, 2].map((s) => row("custom", s * 10, { throughput: 100 * s }));

/** The master writes NaN as a bare token: the page must still read it. */
function withNaN(answer: object): string {
  return JSON.stringify(answer).replace('"loss":0.2,', '"loss":NaN,');
}

function chart(title: string): HTMLElement {
  const caption = screen.getByText(title, { selector: "figcaption" });
  return within(caption.closest("figure")!).getByTestId("metric-chart");
}

describe("parseLooseJson", () => {
  it("reads NaN and Infinity tokens but leaves them alone inside strings", () => {
    const parsed = parseLooseJson('{"a": NaN, "b": -Infinity, "c": "NaN Infinity", "d": [Infinity]}') as Record<string, unknown>;
    expect(parsed.a).toBeNaN();
    expect(parsed.b).toBe(-Infinity);
    expect(parsed.c).toBe("NaN Infinity");
    expect(parsed.d).toEqual([Infinity]);
  });
});

describe("metric series", () => {
  it("finds metrics and the epoch key, and skips rows without the chosen x", () => {
    expect(metricNames(TRAINING)).toEqual(["loss"]);
    expect(epochKey(TRAINING)).toBe("epoch");
    expect(epochKey(VALIDATION)).toBeNull();
    const series = seriesFor(VALIDATION, "accuracy", "epochs", "epoch");
    expect(series.x).toEqual([]);
    expect(seriesFor(TRAINING, "loss", "time", null).x[0]).toBe(Date.UTC(2024, 0, 1, 0, 0, 10) / 1000);
  });
});

describe("MetricsTab", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("draws one chart per metric and group from the master's downsampled series", async () => {
    const { calls } = stubMaster({
      "/api/v1/trials/5/metrics": (url: URL) => {
        const group = url.searchParams.get("group");
        if (group === "training") return withNaN({ items: TRAINING, downsampled: true, total: 50_000 });
        if (group === "validation") return { items: VALIDATION, downsampled: false, total: 3 };
        if (group === "custom") return { items: CUSTOM, downsampled: false, total: 2 };
        return { items: [TRAINING[0], VALIDATION[0], CUSTOM[0]], downsampled: true, total: 10 };
      },
    });
    renderAt("/trials/5", "/trials/:trialId", <MetricsTab trialId={5} live={false} />);

    await screen.findByText("training: loss", { selector: "figcaption" });
    await screen.findByText("custom: throughput", { selector: "figcaption" });
    expect(screen.getByTestId("trial-metrics")).toBeInTheDocument();
    expect(chart("training: loss")).toHaveAttribute("data-points", "5");
    expect(chart("validation: accuracy")).toHaveAttribute("data-points", "3");
    expect(chart("validation: loss")).toHaveAttribute("data-points", "3");
    expect(chart("custom: throughput")).toHaveAttribute("data-points", "2");
    expect(screen.getByText(/downsampled from 50000 points/)).toBeInTheDocument();
    const groups = calls.map((r) => new URL(r.url).searchParams);
    expect(groups.find((p) => p.get("group") === "training")?.get("max_points")).toBe("1000");

    // Epochs are reported by training only: validation rows have no x on that axis.
    const axis = screen.getByLabelText("X axis");
    expect(within(axis).getByRole("option", { name: "Epochs" })).not.toBeDisabled();
    await userEvent.selectOptions(axis, "epochs");
    expect(chart("training: loss")).toHaveAttribute("data-points", "5");
    expect(chart("validation: loss")).toHaveAttribute("data-points", "0");

    await userEvent.click(within(screen.getByRole("group", { name: "Metrics" })).getByLabelText("loss"));
    await waitFor(() => expect(screen.queryByText("training: loss")).toBeNull());
    expect(screen.queryByText("validation: loss")).toBeNull();
    expect(screen.getByText("validation: accuracy")).toBeInTheDocument();
    expect(screen.getByLabelText("Log scale")).not.toBeChecked();
    expect(screen.getByLabelText("Smoothing")).toHaveAttribute("max", "0.99");
  });

  it("offers no epoch axis when no epoch is reported", async () => {
    stubMaster({
      "/api/v1/trials/6/metrics": (url: URL) =>
        url.searchParams.get("group") === "validation" ? { items: VALIDATION } : { items: [] },
    });
    renderAt("/trials/6", "/trials/:trialId", <MetricsTab trialId={6} live={false} />);
    await screen.findByText("validation: accuracy", { selector: "figcaption" });
    expect(within(screen.getByLabelText("X axis")).getByRole("option", { name: /Epochs/ })).toBeDisabled();
  });
});
