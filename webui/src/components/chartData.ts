/** Pure helpers behind <MetricChart>: series alignment and smoothing, kept apart to be tested. */

export interface Series {
  label: string;
  x: number[];
  y: (number | null)[];
}

/** Exponential moving average with TensorBoard's debiasing, so the first points are not pulled
 * toward zero; gaps (null) and non-finite values pass through unsmoothed. */
export function smooth(values: (number | null)[], weight: number): (number | null)[] {
  if (weight <= 0) return values.slice();
  const w = Math.min(weight, 0.999);
  let last = 0;
  let steps = 0;
  return values.map((value) => {
    if (value == null || !Number.isFinite(value)) return value;
    last = last * w + (1 - w) * value;
    steps += 1;
    return last / (1 - w ** steps);
  });
}

/** One shared, sorted x column with each series' values at those xs (null where it has none),
 * which is the table uPlot draws from. */
export function align(series: Series[]): [number[], ...(number | null)[][]] {
  const xs = Array.from(new Set(series.flatMap((s) => s.x))).sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const columns = series.map((s) => {
    const column: (number | null)[] = new Array(xs.length).fill(null);
    s.x.forEach((x, i) => {
      column[index.get(x)!] = s.y[i] ?? null;
    });
    return column;
  });
  return [xs, ...columns];
}

/** Log scales cannot show zero or negatives: those points become gaps rather than errors. */
export function positiveOnly(values: (number | null)[]): (number | null)[] {
  return values.map((v) => (v != null && v > 0 ? v : null));
}
