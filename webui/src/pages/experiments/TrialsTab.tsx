/** Trials: one row per trial with its hyperparameters and latest metrics; pick some to compare. */
import { useMemo, useState } from "react";
import { Link } from "react-router";
import { formatNumber } from "../../components/format";
import { MetricChart, type Series } from "../../components/MetricChart";
import { Empty, ErrorState } from "../../components/states";
import { StateBadge } from "../../components/StateBadge";
import { asText, flattenHparams, seriesOf, trialMetric, type Searcher, type Trial } from "./data";
import { Progress } from "./ExperimentTable";
import { useTrialMetrics } from "./useMetrics";

function cell(value: unknown): string {
  return typeof value === "number" ? formatNumber(value) : asText(value);
}

function keysOf(records: (Record<string, unknown> | null | undefined)[]): string[] {
  return Array.from(new Set(records.flatMap((r) => Object.keys(r ?? {})))).sort();
}

export function TrialsTab({ trials, searcher, live }: { trials: Trial[]; searcher: Searcher; live: boolean }) {
  const [selected, setSelected] = useState<number[]>([]);
  const hparams = useMemo(() => trials.map((t) => flattenHparams(t.hparams)), [trials]);
  const hparamNames = useMemo(() => keysOf(hparams), [hparams]);
  const validationNames = useMemo(() => keysOf(trials.map((t) => t.latest_validation)), [trials]);
  if (!trials.length) return <Empty>No trials yet.</Empty>;

  const toggle = (id: number, on: boolean) =>
    setSelected(on ? [...selected.filter((s) => s !== id), id] : selected.filter((s) => s !== id));

  return (
    <>
      <div className="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">
                <span className="visually-hidden">Compare</span>
              </th>
              <th scope="col">Trial</th>
              <th scope="col">State</th>
              <th scope="col" className="num">Restarts</th>
              <th scope="col" className="num">Steps</th>
              <th scope="col">Progress</th>
              <th scope="col" className="num" title="searcher metric">
                {searcher.metric || "Searcher metric"}
              </th>
              {hparamNames.map((name) => (
                <th key={`h:${name}`} scope="col" title="hyperparameter">
                  {name}
                </th>
              ))}
              {validationNames.map((name) => (
                <th key={`v:${name}`} scope="col" className="num" title="latest validation">
                  {name} (validation)
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {trials.map((trial, i) => (
              <tr key={trial.id} data-testid={`trial-row-${trial.id}`}>
                <td>
                  <input
                    type="checkbox"
                    aria-label={`Compare trial ${trial.id}`}
                    checked={selected.includes(trial.id)}
                    onChange={(event) => toggle(trial.id, event.target.checked)}
                  />
                </td>
                <td>
                  <Link to={`/trials/${trial.id}`}>{trial.id}</Link>
                </td>
                <td>
                  <StateBadge state={trial.state} />
                </td>
                <td className="num">{trial.restarts}</td>
                <td className="num">{trial.steps_completed}</td>
                <td>
                  <Progress fraction={trial.progress} />
                </td>
                <td className="num">{formatNumber(trialMetric(trial))}</td>
                {hparamNames.map((name) => (
                  <td key={`h:${name}`} className="wrap">
                    {cell(hparams[i][name])}
                  </td>
                ))}
                {validationNames.map((name) => (
                  <td key={`v:${name}`} className="num">
                    {cell(trial.latest_validation?.[name])}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {selected.length ? (
        <Compare trials={trials} ids={selected} searcher={searcher} live={live} />
      ) : (
        <p className="hint">Tick trials to compare them on one chart.</p>
      )}
    </>
  );
}

function Compare({ trials, ids, searcher, live }: { trials: Trial[]; ids: number[]; searcher: Searcher; live: boolean }) {
  const options = useMemo(() => {
    const validation = keysOf(trials.map((t) => t.latest_validation)).map((name) => `validation/${name}`);
    const training = keysOf(trials.map((t) => t.latest_training)).map((name) => `training/${name}`);
    const all = [...validation, ...training];
    const searcherOption = `validation/${searcher.metric}`;
    return searcher.metric && !all.includes(searcherOption) ? [searcherOption, ...all] : all;
  }, [trials, searcher.metric]);
  const [choice, setChoice] = useState("");
  const chosen = options.includes(choice) ? choice : (options[0] ?? "");
  const slash = chosen.indexOf("/");
  const group = chosen.slice(0, slash);
  const metric = chosen.slice(slash + 1);
  const metrics = useTrialMetrics(ids, { group, metrics: [metric], maxPoints: 1000 }, live);
  const series: Series[] = useMemo(
    () => ids.map((id, i) => ({ label: `trial ${id}`, ...seriesOf(metrics.answers[i], metric) })).filter((s) => s.x.length),
    [metrics.stamp, metric],
  );
  return (
    <section aria-labelledby="compare-heading">
      <h2 id="compare-heading">Compare</h2>
      {options.length ? (
        <>
          <div className="toolbar">
            <label>
              Metric
              <select value={chosen} onChange={(event) => setChoice(event.target.value)}>
                {options.map((option) => (
                  <option key={option} value={option}>
                    {option}
                  </option>
                ))}
              </select>
            </label>
          </div>
          {metrics.error ? <ErrorState error={metrics.error} /> : null}
          <MetricChart title={`${metric} (${group}) of trials ${ids.join(", ")}`} series={series} xLabel="steps" />
        </>
      ) : (
        <Empty>No metrics reported yet.</Empty>
      )}
    </section>
  );
}
