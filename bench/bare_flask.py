"""The baseline of bench/api_users.py: a bare Flask endpoint served the same way as switchdesk."""
from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from flask import Flask, jsonify  # noqa: E402

from engine.server import make_server  # noqa: E402

app = Flask(__name__)


@app.get("/api/user/<int:user_id>")
def user(user_id: int):
    return jsonify({"success": True, "data": {"id": user_id, "name": "bare"}})


@app.get("/api/user")
def users():
    return jsonify({"success": True, "data": [{"id": 1, "name": "bare"}]})


if __name__ == "__main__":
    make_server(app, "127.0.0.1", int(sys.argv[1])).serve_forever()
