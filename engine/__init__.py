"""switchdesk's engine, one room per domain.

Imports run one way: `api/` → the domain rooms (`directory`, `callcenter`, `calls`, `events`, `boxes`,
`leads`, `dialer`) → `store` and `esl`. A room reaches another only through its public functions; each
room's docstring says what it owns and what it may use. On top: `engine.engine` (the FreeSWITCH
side: connections, sync, plugins), `server` (the gevent process, or with `--workers` the engine process),
`workers` (the worker and webhook-sender processes of `serve --workers N` and what ties them), `cli`,
`logs`, `errors`.
"""
