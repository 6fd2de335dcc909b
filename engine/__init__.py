"""switchdesk's engine, one room per domain.

Imports run one way: `api/` → the domain rooms (`directory`, `callcenter`, `calls`, `events`, `boxes`,
`leads`, `dialer`) → `store` and `esl`. A room reaches another only through its public functions; each
room's docstring says what it owns and what it may use. On top: `engine.engine` (the FreeSWITCH
side: connections, sync, plugins), `server` (the one gevent process), `cli`, `logs`, `errors`.
"""
