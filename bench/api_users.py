"""GET /api/user/{id} and GET /api/user?q= under 50 keep-alive connections, against the real
server (`switchdesk serve`, 10,000 users) and a bare Flask endpoint served the same way.

Prints one JSON line; the ratio to bare Flask is what to compare across machines.
"""
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http import free_port, load, spawn, wait_http  # noqa: E402

USERS = 10_000
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "5000"))


def seed(url: str) -> str:
    from engine.directory import accounts, security
    from engine.store import db, schema
    from engine.store.models import User

    database = db.bind(url)
    with database.connection_context():
        schema.init_schema(database)
        new = accounts.create_account("Bench", "bench.test", "admin")
        pw = security.hash_password("Ab123456")
        rows = [dict(account=new.account.id, name=f"Agent {i}", username=f"agent{i}", username_key=f"agent{i}",
                     email=f"agent{i}@bench.test", email_key=f"agent{i}@bench.test", password_hash=pw,
                     is_agent=True) for i in range(USERS)]
        with database.atomic():
            for i in range(0, len(rows), 500):
                User.insert_many(rows[i:i + 500]).execute()
    return new.api_key


def main() -> None:
    tmp = tempfile.mkdtemp()
    url = f"sqlite:///{tmp}/bench.db"
    key = seed(url)
    sd_port, bare_port = free_port(), free_port()
    server = spawn(["-m", "engine.cli", "serve", "--db", url, "--listen", f"127.0.0.1:{sd_port}"])
    bare = spawn([str(Path(__file__).resolve().parent / "bare_flask.py"), str(bare_port)],
                 env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        wait_http(sd_port, "/api/health")
        wait_http(bare_port, "/api/user/1")
        auth = {"Authorization": f"Bearer {key}"}
        by_id = [f"/api/user/{i}" for i in range(2, 2000)]
        search = [f"/api/user?q=agent{i}1&limit=20" for i in range(1, 500)]
        load(sd_port, by_id[:100], 500, headers=auth)  # warm-up
        load(bare_port, by_id[:100], 500)
        result = {
            "bench": "api_users",
            "users": USERS,
            "concurrency": 50,
            "requests": REQUESTS,
            "get_by_id": load(sd_port, by_id, REQUESTS, headers=auth),
            "search_q": load(sd_port, search, REQUESTS // 5, headers=auth),
            "bare_flask": load(bare_port, by_id, REQUESTS),
        }
        result["ratio_get_by_id"] = round(result["get_by_id"]["rps"] / result["bare_flask"]["rps"], 3)
        result["ratio_search_q"] = round(result["search_q"]["rps"] / result["bare_flask"]["rps"], 3)
        print(json.dumps(result))
    finally:
        server.terminate()
        bare.terminate()
        server.wait()
        bare.wait()


if __name__ == "__main__":
    main()
