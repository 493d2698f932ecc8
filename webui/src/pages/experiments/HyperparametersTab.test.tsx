import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import type { Trial } from "./data";
import { HyperparametersTab } from "./HyperparametersTab";

function trial(id: number, hparams: Record<string, unknown>, metric: number | null): Trial {
  return {
    id,
    experiment_id: 1,
    request_id: `r${id}`,
    hparams,
    seed: 0,
    state: "COMPLETED",
    restarts: 0,
    run_id: 1,
    steps_completed: 10,
    progress: 1,
    latest_checkpoint: null,
    warm_start_checkpoint: null,
    best_validation: metric,
    end_reason: "",
    created_at: "2026-01-01T00:00:00Z",
    ended_at: null,
  };
}

const SEARCHER = { metric: "val_loss", smallerIsBetter: true };

describe("HyperparametersTab", () => {
  it("draws one parallel-coordinates line per trial, categories and metric as axes", () => {
    const trials = [
      trial(1, { lr: 0.1, optimizer: { name: "<b>sgd</b>" } }, 0.5),
      trial(2, { lr: 0.01, optimizer: { name: "adam" } }, 0.2),
      trial(3, { lr: 0.001, optimizer: { name: "adam" } }, null),
    ];
    const { container } = render(<HyperparametersTab trials={trials} searcher={SEARCHER} />);
    const lines = screen.getAllByTestId("pc-line");
    expect(lines).toHaveLength(3);
    // Trial 3 has no metric: its line stops at the last hyperparameter axis (two points).
    expect(lines[2].getAttribute("d")?.match(/[ML]/g)).toEqual(["M", "L"]);
    expect(lines[0].getAttribute("d")?.match(/[ML]/g)).toEqual(["M", "L", "L"]);
    const svg = container.querySelector("svg.pcoords")!;
    const texts = Array.from(svg.querySelectorAll("text")).map((t) => t.textContent);
    expect(texts).toEqual(expect.arrayContaining(["lr (log)", "optimizer.name", "val_loss", "adam"]));
    expect(svg.querySelector("b")).toBeNull();
    expect(screen.getByText("<b>sgd</b>", { selector: "title" })).toBeInTheDocument();
  });

  it("plots the chosen hyperparameter against the metric for trials that have one", async () => {
    const trials = [trial(1, { lr: 0.1, layers: 2 }, 0.5), trial(2, { lr: 0.01, layers: 4 }, 0.2), trial(3, { lr: 0.5, layers: 3 }, null)];
    render(<HyperparametersTab trials={trials} searcher={SEARCHER} />);
    expect(screen.getAllByTestId("scatter-dot")).toHaveLength(2);
    await userEvent.selectOptions(screen.getByLabelText("Hyperparameter"), "lr");
    expect(screen.getByRole("img", { name: "val_loss against lr: 2 trials" })).toBeInTheDocument();
  });

  it("shows an empty state for one trial or no numeric hyperparameters", () => {
    const { rerender } = render(<HyperparametersTab trials={[trial(1, { lr: 0.1 }, 1)]} searcher={SEARCHER} />);
    expect(screen.getByText("Hyperparameter charts need at least two trials.")).toBeInTheDocument();
    rerender(<HyperparametersTab trials={[trial(1, { opt: "a" }, 1), trial(2, { opt: "b" }, 2)]} searcher={SEARCHER} />);
    expect(screen.getByText("No numeric hyperparameters to chart.")).toBeInTheDocument();
    expect(screen.queryAllByTestId("pc-line")).toHaveLength(0);
  });
});
