import { describe, expect, it } from "vitest";
import { align, positiveOnly, smooth } from "./chartData";

describe("align", () => {
  it("joins series on one sorted x column with gaps where a series has no point", () => {
    const [xs, a, b] = align([
      { label: "a", x: [1, 3], y: [10, 30] },
      { label: "b", x: [2, 3], y: [20, 31] },
    ]);
    expect(xs).toEqual([1, 2, 3]);
    expect(a).toEqual([10, null, 30]);
    expect(b).toEqual([null, 20, 31]);
  });
});

describe("smooth", () => {
  it("is the identity at weight 0 and debiased (first point kept) above it", () => {
    expect(smooth([1, 2, 3], 0)).toEqual([1, 2, 3]);
    const out = smooth([4, 4, 4], 0.9);
    out.forEach((v) => expect(v).toBeCloseTo(4));
  });
  it("passes gaps and non-finite values through", () => {
    expect(smooth([1, null, Number.NaN, 1], 0.5)).toEqual([1, null, Number.NaN, 1]);
  });
});

describe("positiveOnly", () => {
  it("turns points a log scale cannot show into gaps", () => {
    expect(positiveOnly([0, -1, 2, null])).toEqual([null, null, 2, null]);
  });
});
