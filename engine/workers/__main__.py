"""A worker process of `serve --workers N`, started by engine.workers.supervisor only."""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402

from engine.workers import ENV  # noqa: E402
from engine.workers.serving import run_worker  # noqa: E402
from engine.workers.supervisor import WorkerSpec  # noqa: E402

if __name__ == "__main__":
    text = os.environ.pop(ENV, None)
    if not text:
        print("switchdesk: engine.workers is started by `switchdesk serve --workers N`", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_worker(WorkerSpec.loads(text)))
