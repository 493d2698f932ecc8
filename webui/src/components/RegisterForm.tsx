/** Registers a checkpoint as a version of an existing model or of a new one (the experiment's and
 * the trial's Checkpoints tabs both use it). */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link } from "react-router";
import { api, unwrap } from "../api/client";
import { keys } from "../api/keys";
import { ErrorState } from "./states";

const NEW = "\u0000new";

export function RegisterForm({
  checkpointUuid,
  projectId,
  onClose,
}: {
  checkpointUuid: string;
  projectId: number;
  onClose?: () => void;
}) {
  const client = useQueryClient();
  const [choice, setChoice] = useState("");
  const [newName, setNewName] = useState("");
  const models = useQuery({
    queryKey: [...keys.models.all, "register-choices"],
    queryFn: () => unwrap(api.GET("/api/v1/models", { params: { query: { limit: 1000, order_by: "name" } } })),
  });
  const isNew = choice === NEW || (!models.isPending && !models.data?.items.length);
  const name = isNew ? newName.trim() : choice;

  const register = useMutation({
    mutationFn: async () => {
      if (isNew) {
        await unwrap(api.POST("/api/v1/models", { body: { name, description: "", project_id: projectId } }));
        // The model exists now: a retry after a failed version registers into it.
        setChoice(name);
      }
      return unwrap(
        api.POST("/api/v1/models/{name}/versions", {
          params: { path: { name } },
          body: { checkpoint_uuid: checkpointUuid, comment: "" },
        }),
      );
    },
    onSettled: () => {
      void client.invalidateQueries({ queryKey: keys.models.all });
      void client.invalidateQueries({ queryKey: keys.experiments.all });
      void client.invalidateQueries({ queryKey: ["checkpoints"] }); // lineage gains the version
    },
  });

  if (register.data) {
    const version = register.data;
    return (
      <div className="card" role="status">
        Registered as{" "}
        <Link to={`/models/${encodeURIComponent(version.model)}/${version.version}`}>
          {version.model} version {version.version}
        </Link>
        .{" "}
        {onClose ? (
          <button type="button" onClick={onClose}>
            Close
          </button>
        ) : null}
      </div>
    );
  }

  return (
    <form
      className="card toolbar"
      aria-label={`Register checkpoint ${checkpointUuid}`}
      onSubmit={(event) => {
        event.preventDefault();
        if (name) register.mutate();
      }}
    >
      <label>
        Model
        <select value={isNew ? NEW : choice} onChange={(event) => setChoice(event.target.value)} required>
          <option value="">{models.isPending ? "Loading…" : "Choose a model"}</option>
          {(models.data?.items ?? []).map((model) => (
            <option key={model.id} value={model.name}>
              {model.name}
            </option>
          ))}
          <option value={NEW}>New model…</option>
        </select>
      </label>
      {isNew ? (
        <label>
          New model name
          <input value={newName} onChange={(event) => setNewName(event.target.value)} required maxLength={255} />
        </label>
      ) : null}
      <button type="submit" className="primary" disabled={!name || register.isPending}>
        Register version
      </button>
      {onClose ? (
        <button type="button" onClick={onClose}>
          Close
        </button>
      ) : null}
      {models.error ? <ErrorState error={models.error} /> : null}
      {register.error ? <ErrorState error={register.error} /> : null}
    </form>
  );
}
