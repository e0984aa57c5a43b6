"""A worker as its own process, for the tests that kill or stop one: runs TYPE; each attempt
appends "<worker name> <job id> <attempt>" to LOG before sleeping SLEEP seconds, then returns
{"by": <worker name>}."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from conveyor import Worker  # noqa: E402

name, job_type, log, sleep = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
worker = Worker(os.environ["CONVEYOR_URL"], os.environ["CONVEYOR_KEY"], name=name,
                concurrency=2, lease_seconds=5, wait_seconds=2, shutdown_grace=0.5)


@worker.task(job_type)
def run(ctx):
    with open(log, "a") as f:
        f.write(f"{name} {ctx.id} {ctx.attempt}\n")
    time.sleep(sleep)
    return {"by": name}


worker.run()
