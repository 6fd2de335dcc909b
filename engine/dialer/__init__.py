"""The outbound dialer: campaigns over phone lists, lead claiming, pacing, and the calls it places.

Owns the campaign tables (engine.store.models.dialer). Uses `leads` (phone
lists, canonical numbers), `callcenter` (time groups, the queue's agents as
mod_callcenter reports them), `calls` (click-to-call for preview mode),
`events` (nothing of its own: the call events carry the dialer's fields) and
`store`/`esl`. Modules: `campaigns` (the service the API calls), `window`
(calling windows), `leads` (claiming and outcomes), `pacing` (how many to
dial), `runner` (the Engine plugin that dials and follows the calls).
"""
