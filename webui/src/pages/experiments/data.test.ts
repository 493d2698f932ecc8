import { describe, expect, it } from "vitest";
import { treeOf } from "./CodeTab";
import { bestTrials, runningBest, searcherOf, type Trial } from "./data";
import { buildAxis, position } from "./hparamAxes";
import { readListParams, writeListParams } from "./listParams";

describe("runningBest", () => {
  const points = [
    { trialId: 1, step: 10, value: 0.9 },
    { trialId: 2, step: 10, value: 0.7 },
    { trialId: 1, step: 20, value: 0.8 },
    { trialId: 2, step: 30, value: 0.4 },
  ];
  it("keeps the smallest value so far, one point per step", () => {
    expect(runningBest(points, true)).toEqual({ x: [10, 20, 30], y: [0.7, 0.7, 0.4], best: points[3] });
  });
  it("keeps the largest when larger is better", () => {
    expect(runningBest(points, false)).toEqual({ x: [10, 20, 30], y: [0.9, 0.9, 0.9], best: points[0] });
  });
});

describe("metric helpers", () => {
  it("defaults the searcher to smaller is better", () => {
    expect(searcherOf({ searcher: { metric: "loss" } })).toEqual({ metric: "loss", smallerIsBetter: true });
    expect(searcherOf({ searcher: { metric: "acc", smaller_is_better: false } }).smallerIsBetter).toBe(false);
  });
  it("orders best trials by direction and skips trials without a metric", () => {
    const trials = [{ id: 1, best_validation: 0.3 }, { id: 2, best_validation: null }, { id: 3, best_validation: 0.1 }] as Trial[];
    expect(bestTrials(trials, { metric: "m", smallerIsBetter: true }, 5).map((t) => t.id)).toEqual([3, 1]);
    expect(bestTrials(trials, { metric: "m", smallerIsBetter: false }, 1).map((t) => t.id)).toEqual([1]);
  });
});

describe("axes", () => {
  it("spaces categories evenly and scales numbers", () => {
    const categories = buildAxis("opt", ["sgd", "adam", "rmsprop", "adam"]);
    expect(categories.categories).toEqual(["adam", "rmsprop", "sgd"]);
    expect(position(categories, "rmsprop")).toBe(0.5);
    const numbers = buildAxis("lr", [0.1, 0.3, null]);
    expect(position(numbers, 0.2)).toBeCloseTo(0.5);
    expect(position(numbers, null)).toBeNull();
    const rates = buildAxis("lr", [1e-4, 1e-2]);
    expect(rates.log).toBe(true);
    expect(position(rates, 1e-3)).toBeCloseTo(0.5);
  });
});

describe("list params", () => {
  it("round-trips through the URL and leaves defaults out", () => {
    const search = new URLSearchParams("state=ACTIVE&q=x&sort=bogus&offset=-5");
    const params = readListParams(search);
    expect(params).toMatchObject({ state: "ACTIVE", q: "x", sort: "id", order: "desc", offset: 0 });
    expect(writeListParams(params).toString()).toBe("state=ACTIVE&q=x");
  });
});

describe("treeOf", () => {
  it("lists each folder once before its files, with depth", () => {
    const tree = treeOf([
      { path: "src/b.py", size: 1 },
      { path: "a.py", size: 2 },
      { path: "src/util/c.py", size: 3 },
    ]);
    expect(tree.map((e) => [e.kind, e.name, e.depth])).toEqual([
      ["file", "a.py", 0],
      ["folder", "src", 0],
      ["file", "b.py", 1],
      ["folder", "util", 1],
      ["file", "c.py", 2],
    ]);
  });
});
