/** Hyperparameters: how the searcher metric moved with each hyperparameter across trials. */
import { useMemo, useState } from "react";
import { Empty } from "../../components/states";
import { flattenHparams, trialMetric, type Searcher, type Trial } from "./data";
import { buildAxis, metricColor, type Axis } from "./hparamAxes";
import { HparamScatter } from "./HparamScatter";
import { ParallelCoordinates, type PcRow } from "./ParallelCoordinates";

export function HyperparametersTab({ trials, searcher }: { trials: Trial[]; searcher: Searcher }) {
  const model = useMemo(() => {
    const hparams = trials.map((t) => flattenHparams(t.hparams));
    const names = Array.from(new Set(hparams.flatMap((h) => Object.keys(h)))).sort();
    const axes = names.map((name) => buildAxis(name, hparams.map((h) => h[name])));
    const metrics = trials.map(trialMetric);
    const metricAxis: Axis = buildAxis(searcher.metric || "searcher metric", metrics);
    const colors = metrics.map((m) => metricColor(m, metricAxis.kind === "numeric" ? metricAxis : undefined, searcher.smallerIsBetter));
    const rows: PcRow[] = trials.map((t, i) => ({
      id: t.id,
      label: `trial ${t.id}: ${searcher.metric || "metric"} ${metrics[i] ?? "not reported"}`,
      values: [...names.map((name) => hparams[i][name]), metrics[i]],
      color: colors[i],
    }));
    return { hparams, axes, metrics, metricAxis, colors, rows };
  }, [trials, searcher]);
  const numeric = model.axes.filter((a) => a.kind === "numeric");
  const [choice, setChoice] = useState("");

  if (trials.length < 2) return <Empty>Hyperparameter charts need at least two trials.</Empty>;
  if (!numeric.length) return <Empty>No numeric hyperparameters to chart.</Empty>;

  const chosen = model.axes.find((a) => a.name === choice) ?? numeric[0];
  const column = model.axes.indexOf(chosen);
  const hasMetric = model.metricAxis.kind === "numeric";
  const points = hasMetric
    ? trials.flatMap((t, i) => {
        const y = model.metrics[i];
        return y == null ? [] : [{ id: t.id, x: model.hparams[i][chosen.name], y, color: model.colors[i] }];
      })
    : [];

  return (
    <>
      <h2>Parallel coordinates</h2>
      <p className="hint">
        One line per trial; colour runs from orange (worst {searcher.metric || "metric"}) to blue (best).
      </p>
      <ParallelCoordinates axes={[...model.axes, model.metricAxis]} rows={model.rows} />
      <h2>Against {searcher.metric || "the searcher metric"}</h2>
      <div className="toolbar">
        <label>
          Hyperparameter
          <select value={chosen.name} onChange={(event) => setChoice(event.target.value)}>
            {model.axes.map((axis) => (
              <option key={axis.name} value={axis.name}>
                {axis.name}
              </option>
            ))}
          </select>
        </label>
      </div>
      {hasMetric && column >= 0 ? (
        <HparamScatter xAxis={chosen} yAxis={model.metricAxis} points={points} />
      ) : (
        <Empty>No trial has reported {searcher.metric || "the searcher metric"} yet.</Empty>
      )}
    </>
  );
}
