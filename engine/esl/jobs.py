"""bgapi jobs: a command answered later by a BACKGROUND_JOB event.

Waiting for a job is a different contract from waiting for a command's reply:
our own Job-UUID, a waiter keyed by it registered before the command goes out,
and a handle the caller may wait on later (``bgapi_async``, used to fan out
many jobs at once).  :class:`BackgroundJobs` is mixed into
:class:`~engine.esl.connection.ESLConnection`, whose reader resolves the keyed
waiter when the BACKGROUND_JOB arrives.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import gevent
import gevent.event

from .errors import DEFAULT_TIMEOUT, CommandTimeout, ESLError, is_error_reply
from .protocol import Event, Frame, check_command_line

__all__ = ["BackgroundJob", "BackgroundJobs"]


class BackgroundJobs:
    """``bgapi`` / ``bgapi_async`` for a connection.

    Expects ``send_command`` and the keyed waiters (``_keyed``, failed by the
    connection when it is lost) from the connection it is mixed into.
    """

    _keyed: dict[tuple[str, str], gevent.event.AsyncResult]
    send_command: Callable[..., Frame]

    def bgapi(self, command: str, timeout: float | None = 60.0, *, check: bool = True) -> str:
        """Run ``bgapi`` with our own Job-UUID and return the BACKGROUND_JOB body.

        The waiter keyed by the Job-UUID exists before the command is sent,
        so even an instant job result cannot be missed.  Needs BACKGROUND_JOB
        events on this connection (ESLClient subscribes them by default).
        """
        return self.bgapi_async(command).get_result(timeout, check=check)

    def bgapi_async(self, command: str, timeout: float | None = DEFAULT_TIMEOUT) -> BackgroundJob:
        """Start a bgapi job and return at once with a handle on its result."""
        check_command_line(command)
        job_uuid = str(uuid.uuid4())
        result = gevent.event.AsyncResult()
        self._keyed[("job", job_uuid)] = result
        try:
            reply = self.send_command(f"bgapi {command}", timeout, {"Job-UUID": job_uuid}).reply_text
        except BaseException:
            self._keyed.pop(("job", job_uuid), None)
            raise
        if not reply.startswith("+OK"):
            self._keyed.pop(("job", job_uuid), None)
            raise ESLError(reply, command)
        return BackgroundJob(self, job_uuid, command, result)

    def _forget_job(self, job_uuid: str) -> None:
        self._keyed.pop(("job", job_uuid), None)


class BackgroundJob:
    """Handle on a running bgapi job."""

    def __init__(self, conn: BackgroundJobs, job_uuid: str, command: str, result: gevent.event.AsyncResult) -> None:
        self.job_uuid = job_uuid
        self.command = command
        self._conn = conn
        self._result = result

    def ready(self) -> bool:
        return self._result.ready()

    def get_event(self, timeout: float | None = 60.0) -> Event:
        try:
            return self._result.get(timeout=timeout)
        except gevent.Timeout:
            self._conn._forget_job(self.job_uuid)
            raise CommandTimeout(f"no BACKGROUND_JOB within {timeout}s", self.command) from None

    def get_result(self, timeout: float | None = 60.0, *, check: bool = True) -> str:
        body = self.get_event(timeout).body or ""
        if check and is_error_reply(body):
            raise ESLError(body, self.command)
        return body
