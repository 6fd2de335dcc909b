"""The one error type of the services; the API turns it into the response envelope."""
from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A refused request: HTTP-style `status`, a human `msg` (part of the API), optional details."""

    def __init__(self, status: int, msg: str, data: Any = None):
        super().__init__(msg)
        self.status = status
        self.msg = msg
        self.data = data
