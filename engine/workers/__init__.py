"""`serve --workers N`: the API and FreeSWITCH's xml_curl lookups served by worker processes.

One gevent process serves everything by default. Under a call storm its one event loop is shared by
ESL events, the outbox, xml_curl answers and the API, and every one of them waits for the others
(issue 19: xml_curl answers 50 ms late at 20 calls/s, the API 4-5x slower than idle). With
`--workers N` the process that was started (the *engine process*) keeps the FreeSWITCH engine, its
timers, the webhook deliverer and the check-in socket, and no longer accepts HTTP: N worker processes
accept on the listening socket it opened, each a gevent process with the whole API, so a lookup from
FreeSWITCH or a client's request never waits behind an event handler.

What ties them together, in a private directory of the engine process (mode 0700):

* `hub.sock` (engine.workers.hub): a line of JSON per message. Workers tell the engine process of
  the changes they committed (engine.store.changes; on PostgreSQL too, where the processes of one
  `serve` share one NOTIFY origin and ignore each other's NOTIFY), of the push events they recorded
  (to wake the deliverer at once) and of the statistics they touched (engine.stats.hub); the engine
  process relays each to the other workers and sends its own, plus a snapshot of the engine's status
  twice a second, which `/api/status` answers from without asking anyone.
* `engine.sock` (engine.workers.proxy): the few routes that act through the engine's FreeSWITCH
  connection or its memory (click-to-call, call control, voicemail messages, campaign control,
  `/metrics`) are declared `engine=True` (api.spec.endpoint); a worker relays such a request as it
  came to the engine process, which serves it with the same app, the same authentication and the
  client's own address.

The engine process supervises its workers: one that exits is started again (backing off to 30 s
while they keep failing), and each dies with the engine process (PR_SET_PDEATHSIG), so a killed
`serve` never leaves a worker holding its port.
"""
from __future__ import annotations

ENV = "SWITCHDESK_WORKER"  # set in a worker's environment: the JSON of engine.workers.supervisor.WorkerSpec
TOKEN_HEADER = "X-Switchdesk-Worker-Token"  # noqa: S105 (a header name)
REMOTE_HEADER = "X-Switchdesk-Remote-Addr"
