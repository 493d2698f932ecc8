"""Launches one fake trial runner through the agent's launcher, prints its pid, then waits forever.

The survival test SIGKILLs this process (standing in for the agent) and checks that the runner
outlives it and can be adopted. It launches from its main thread, as the daemon does.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from stalwart_agent.launcher import launch_trial
from stalwart_agent.master import StartAction

FAKE_RUNNER = Path(__file__).with_name("fake_runner.py")


def main() -> None:
    work_root = Path(sys.argv[1])
    action = StartAction("alloc-hold", "tok", trial_id=1, experiment_id=1, slot_uuids=())
    trial = launch_trial(
        action,
        master_url="http://127.0.0.1:1",
        slots={},
        work_root=work_root,
        command=[sys.executable, str(FAKE_RUNNER), *sys.argv[2:]],
    )
    print(trial.pid, flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
