"""Stage 0, the way Determined's Core API tutorial starts: plain training code, no API calls yet
beyond the import and the logging format."""

import logging
import os
import time

import stalwart as det


def main(increment_by: int) -> None:
    x = 0
    for batch in range(20):
        x += increment_by
        time.sleep(0.01)
        logging.info("batch %d: x is now %d", batch, x)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT)
    main(increment_by=int(os.environ["COMPAT_INCREMENT"]))  # from the config's environment_variables
