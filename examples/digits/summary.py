"""Prints what `make demo` ends with: where the master is, how to log in, and how well it trained."""

from __future__ import annotations

import json
import sys

from stalwart.client import Client


def main() -> None:
    with open(sys.argv[1]) as handle:
        experiment = json.load(handle)
    password = sys.argv[2]
    with Client() as client:
        trials = client.list_trials(experiment["id"])
        metrics = client.trial_metrics(trials[0].id, group="validation") if trials else []
        accuracy = metrics[-1].values.get("validation_accuracy") if metrics else None
        print(f"Experiment {experiment['id']} ({experiment['name']}) is {experiment['state']}")
        if accuracy is not None:
            print(f"Validation accuracy: {accuracy:.4f}")
        print(f"Master: {client.master}  (user admin, password {password})")


if __name__ == "__main__":
    main()
