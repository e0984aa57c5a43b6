"""A remote worker in Python: runs `resize-image` jobs for its tenant.

    CONVEYOR_URL=http://127.0.0.1:8080 CONVEYOR_KEY=cvk_... python worker.py
"""

import os

from conveyor import PermanentError, Worker

worker = Worker(os.environ.get("CONVEYOR_URL", "http://127.0.0.1:8080"),
                os.environ["CONVEYOR_KEY"], concurrency=4)


@worker.task("resize-image", payload_schema={"type": "object", "required": ["url", "width"]})
def resize(ctx):
    if not ctx.payload["url"].startswith("https://"):
        raise PermanentError("only https images")  # dead now; any other exception is retried
    return {"thumbnail": f"{ctx.payload['url']}?w={ctx.payload['width']}"}


worker.run()  # until SIGTERM or Ctrl-C: running jobs finish or are handed back
