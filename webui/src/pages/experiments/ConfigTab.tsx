/** Config: the YAML as submitted and the config the master runs (defaults filled); both arrive
 * with secrets masked by the master and are shown as plain text. */
import type { ExperimentDetail } from "./data";

export function ConfigTab({ experiment }: { experiment: ExperimentDetail }) {
  return (
    <div className="grid">
      <section aria-labelledby="config-submitted">
        <h2 id="config-submitted">As submitted</h2>
        <pre data-testid="config-submitted">{experiment.original_config || "(empty)"}</pre>
      </section>
      <section aria-labelledby="config-defaults">
        <h2 id="config-defaults">With defaults</h2>
        <pre data-testid="config-defaults">{JSON.stringify(experiment.config, null, 2)}</pre>
      </section>
    </div>
  );
}
