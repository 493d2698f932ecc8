/** Axes for hyperparameter charts: a number axis when every value is a number, else evenly
 * spaced categories (strings, booleans, lists) in sorted order. */

export interface Axis {
  name: string;
  kind: "numeric" | "categorical";
  /** Positive numbers spanning two or more decades (learning rates) read better on a log axis. */
  log: boolean;
  min: number;
  max: number;
  categories: string[];
}

function category(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

export function buildAxis(name: string, column: unknown[]): Axis {
  const present = column.filter((v) => v != null);
  const numeric = present.length > 0 && present.every((v) => typeof v === "number" && Number.isFinite(v));
  if (numeric) {
    const numbers = present as number[];
    const min = Math.min(...numbers);
    const max = Math.max(...numbers);
    return { name, kind: "numeric", log: min > 0 && max / min >= 100, min, max, categories: [] };
  }
  const categories = Array.from(new Set(present.map(category))).sort();
  return { name, kind: "categorical", log: false, min: 0, max: Math.max(0, categories.length - 1), categories };
}

/** Where `value` sits on `axis`, from 0 (bottom/left) to 1 (top/right); null when it has none. */
export function position(axis: Axis, value: unknown): number | null {
  if (value == null) return null;
  if (axis.kind === "numeric") {
    if (typeof value !== "number" || !Number.isFinite(value)) return null;
    if (axis.max === axis.min) return 0.5;
    if (axis.log) return value > 0 ? Math.log(value / axis.min) / Math.log(axis.max / axis.min) : null;
    return (value - axis.min) / (axis.max - axis.min);
  }
  const index = axis.categories.indexOf(category(value));
  if (index < 0) return null;
  return axis.categories.length === 1 ? 0.5 : index / (axis.categories.length - 1);
}

/** Tick labels along an axis: min, middle and max for numbers, every category otherwise. */
export function ticks(axis: Axis, format: (n: number) => string): { at: number; label: string }[] {
  if (axis.kind === "categorical") {
    return axis.categories.map((label) => ({ at: position(axis, label) ?? 0.5, label }));
  }
  if (axis.min === axis.max) return [{ at: 0.5, label: format(axis.min) }];
  const mid = axis.log ? Math.sqrt(axis.min * axis.max) : (axis.min + axis.max) / 2;
  return [
    { at: 0, label: format(axis.min) },
    { at: 0.5, label: format(mid) },
    { at: 1, label: format(axis.max) },
  ];
}

/** A line colour from blue (best metric) to orange (worst); grey when the trial has no metric. */
export function metricColor(value: number | null, axis: Axis | undefined, smallerIsBetter: boolean): string {
  if (value == null || !axis) return "#868e96";
  const at = position(axis, value) ?? 0.5;
  const goodness = smallerIsBetter ? 1 - at : at;
  const hue = 25 + goodness * 195;
  return `hsl(${Math.round(hue)}, 70%, 48%)`;
}

/** Long category names shortened for an axis; the full text goes in a <title>. */
export function shorten(text: string, max = 18): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
