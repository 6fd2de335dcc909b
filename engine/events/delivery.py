"""Webhook delivery: the outbox's pending events POSTed to each account's Event Push URL.

This is the scheduler (which account sends, when, in what order, with what
retries, and how outcomes are recorded); one request is `engine.events.sender`
and the API's view of the outbox is `engine.events.webhooks`.

Guarantees (issue 7; DESIGN.md, Webhooks and Scale-out):

* At least once. An event leaves `pending` only after its receiver answered
  (or gave up on it), and that is recorded after the send: a crash between
  the two sends it again, with the same `id`, so receivers drop duplicates.
* Per-call and per-agent order, several requests in flight. An account's
  worker keeps up to `concurrency` requests in flight (CONCURRENCY, `serve
  --webhook-concurrency`), taking events in `seq` order; an event is not sent
  while an earlier event of the same call (`call_id` in its data) or agent
  (`user_id`) is unacknowledged: in flight, waiting for its retry, or itself
  waiting. Events with neither key wait for nothing. So a failing event holds
  up only the later events of its call and agent. After `concurrency` failed
  attempts in a row (the receiver looks down) the account sends only its due
  retries until one of them succeeds, instead of trying every call once.
* Batches, if the account asks (`event_push_batch` N > 1; sender.batch_body).
  A request then carries up to N events (`_Lane.take`): the ready ones in
  `seq` order, each with the next events of its keys that wait for nothing
  outside the request. So a request is in flight for every key of its
  events, no event of those keys goes in another request meanwhile, and
  within a request each key's events are in `seq` order. Nothing waits to
  fill a batch. The answer is every event's answer; a retry keeps the
  request's events together (one delay; the later events of a key wait for
  their head instead of their own timer) and may take along events that
  became ready meanwhile.
* The account's order is restorable. Before its first attempt an event gets
  `account_seq`, the account's next number (1, 2, 3, ... in `seq` order, no
  gaps; the counter is `WebhookLease.last_seq`, advanced only by the lease's
  holder), sent in the body and as `X-Switchdesk-Account-Seq`.
* One sender per account across processes. Boxes sharing a PostgreSQL
  database take a lease on the account (`WebhookLease`) before sending; a
  crashed holder's lease runs out after `LEASE_SECONDS`. A box given
  `account_ids` delivers only for the accounts it owns.
* Prompt and cheap. A commit that recorded an event wakes the deliverer in
  the same process (`engine.events.outbox.on_commit`); events written by other
  processes are found by a poll every `POLL_INTERVAL`. On each wake the
  scheduler reads the first batch of every woken account in one query; a
  wake within `WAKE_GAP` of the last round waits for the gap to pass, so a
  busy switch's commits are gathered into ten rounds a second while an event
  after a quiet spell goes at once. A
  worker then reads on by itself (after the last `seq` it read, numbering
  each read in one transaction) when fewer than `concurrency` of its events
  are left to start (half a batch while its reads come back full), at most
  every REFILL_GAP while requests are in flight; it ends when nothing is in
  flight and nothing may go, remembering what waits for a retry (`_parked`)
  so polls do not restart it for nothing. Deliveries are recorded every `ACK_DELAY`
  for all accounts in one write; requests go over keep-alive connections of
  a gevent-native client.

Statuses: `pending` (waiting or retrying), `delivered` (2xx), `failed` (a
4xx other than 408/429, a refused target, or 24 hours of retries), `skipped`
(the account had no Event Push URL when the deliverer reached the event; it
is never sent unless redelivered).
"""
from __future__ import annotations

import collections
import contextlib
import heapq
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import peewee
from peewee import fn

from engine.events import outbox as events
from engine.events.outbox import DELIVERED, FAILED, PENDING, SKIPPED
from engine.events.sender import (
    HOST_CONNECTIONS,
    SEND_TIMEOUT,
    Outcome,
    Sender,
    Target,
    batch_body,
    batch_headers,
    read_target,
    signed_headers,
    wire_body,
)
from engine.store import fastq
from engine.store.db import db, is_sqlite
from engine.store.models import Account, OutboxEvent, WebhookLease

log = logging.getLogger("switchdesk.webhooks")

RETRY_BASE = 1.0            # first retry after ~1 s, doubling ...
RETRY_CAP = 600.0           # ... up to 10 minutes between attempts
MAX_AGE = 24 * 3600         # retries stop this long after the event's ts; the event is then failed (and kept)
BATCH = 200                 # events read (and acknowledged) per database round trip
HEADS_PER_READ = 32         # accounts whose first batch the scheduler reads in one query
TURN_BATCHES = 10           # batches' worth of events (x BATCH) an account may read before yielding its pool slot
POOL_SIZE = 100             # accounts delivered in parallel by one process
CONCURRENCY = 8             # requests in flight per account (serve --webhook-concurrency)
WINDOW = 10 * BATCH         # events an account's worker holds at most (read, not yet finished)
DB_SLOTS = 8                # database connections the deliverer uses at once (the API needs the rest)
LEASE_SECONDS = 60          # how long a crashed process keeps an account's events waiting
POLL_INTERVAL = 1.0         # how often other processes' events (and due retries) are looked for
KEEP_DELIVERED = 7 * 86400  # delivered and skipped events stay listed (GET /api/event) this long
KEEP_FAILED = 30 * 86400    # failed ones this long, for redelivery
PRUNE_EVERY = 3600.0
ACK_DELAY = 0.1             # deliveries are recorded this often, for all accounts in one write (a crash
                            # before it sends them again: at least once, as documented)
REFILL_GAP = 0.01           # a worker with requests in flight reads newly committed events at most this often
WAKE_GAP = 0.1              # under a steady stream of commits the scheduler starts a round at most this often
                            # (a wake after a quiet spell starts one at once): a call's events, a few ms apart,
                            # then cost one outbox read, one numbering and one request instead of one each


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failures: doubling, capped, with jitter.

    The jitter (the upper half of the window) keeps many accounts behind one
    receiver that came back from hitting it in the same second.
    """
    window = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, attempts - 1))
    return window / 2 + random.uniform(0, window / 2)  # jitter, not a secret


def order_keys(event: OutboxEvent) -> tuple[tuple[str, str], ...]:
    """What an event is ordered with: its call (`call_id`) and its agent (`user_id`) in the event's data.

    An event with neither is ordered with nothing: it goes as soon as a slot is free.
    """
    data = event.data
    if not isinstance(data, dict):
        return ()
    keys = []
    call_id, user_id = data.get("call_id"), data.get("user_id")
    if call_id is not None and call_id != "":
        keys.append(("call", str(call_id)))
    if user_id is not None and user_id != "":
        keys.append(("user", str(user_id)))
    return tuple(keys)


class _Lane:
    """One account's worker while it runs: the events it read and has not finished, and which may go.

    Each call and agent key has a queue of its events in `seq` order; an event may go when it heads the
    queue of each of its keys (and its retry, if any, is due). Starting, finishing or retrying an event
    touches only its own keys' queues, so the cost per event does not grow with the backlog.
    """

    def __init__(self, account_id: int):
        self.account_id = account_id
        self.window: dict[int, OutboxEvent] = {}   # seq -> event: read, not yet delivered or given up
        self.keys: dict[int, tuple] = {}           # seq -> order_keys(event)
        self.queues: dict[tuple, collections.deque[int]] = {}  # key -> its events' seqs, in order
        self.ready: list[int] = []                 # heap of seqs that may go now
        self.retrying: list[tuple[float, int]] = []  # heap of (next_attempt, seq): heads waiting for a retry
        self.held: list[int] = []                  # ready first attempts held while the receiver looks down
        self.inflight: dict[int, bool] = {}        # seqs being sent
        self.requests = 0                          # requests in flight (each carries one event, or a batch)
        self.sends = gevent.pool.Group()           # the senders (at most `concurrency`)
        self.senders = 0                           # how many of them run (the group forgets them later)
        self.wake = gevent.event.Event()           # an attempt ended, or new events were committed
        self.cursor = 0                            # the highest seq read: further reads start after it
        self.more = False                          # the last read was full
        self.taken = 0                             # events read so far: a turn is TURN_BATCHES * BATCH of them
        self.read_at = 0.0                         # time.monotonic() of the last read
        self.read_freed = True                     # the last read brought an event that could go
        self.lost = False                          # the lease went to another process
        self.target: Target | None = None

    def add(self, event: OutboxEvent, now: float) -> None:
        """A newly read event, after every event already added (reads go up in `seq`)."""
        seq = event.seq
        keys = self.keys[seq] = order_keys(event)
        self.window[seq] = event
        for key in keys:
            self.queues.setdefault(key, collections.deque()).append(seq)
        self._release(seq, now)

    def _release(self, seq: int, now: float) -> None:
        if all(self.queues[key][0] == seq for key in self.keys[seq]):
            event = self.window[seq]
            if event.next_attempt > now:
                heapq.heappush(self.retrying, (event.next_attempt, seq))
            else:
                heapq.heappush(self.ready, seq)

    def take(self, size: int, first_attempts: bool, now: float) -> list[int]:
        """Up to `size` events for one request, taken into flight, in `seq` order (None taken: an empty list).

        The ready events in `seq` order, and with each the next events of its keys that no longer wait for
        anything outside the request: an event joins only when, on every one of its keys, all the events
        before it (still unfinished) are in this request, and it is due. So a request is in flight for all
        the keys of its events, an event whose key is held elsewhere (in flight, retrying) never joins, and
        within a request each key's events are in recording order. Only what was read is taken: nothing
        waits to fill a batch. Without `first_attempts` (the receiver looks down) only retries go.
        """
        taken: list[int] = []
        counts: dict[tuple, int] = {}      # key -> how many of its queue's head events are in this request
        joined: list[int] = []             # heap of later events that may join
        while len(taken) < size:
            if joined and (not self.ready or joined[0] < self.ready[0]):
                seq = heapq.heappop(joined)
            elif self.ready:
                seq = heapq.heappop(self.ready)
                if not first_attempts and not self.window[seq].attempts:
                    self.held.append(seq)
                    continue
            else:
                break
            taken.append(seq)
            self.inflight[seq] = True
            if size == 1:
                break  # one event per request: nothing may join (the vendor's format, the default)
            successors = []
            for key in self.keys[seq]:
                n = counts[key] = counts.get(key, 0) + 1
                queue = self.queues[key]
                if len(queue) > n:
                    successors.append(queue[n])
            for successor in dict.fromkeys(successors):
                event = self.window[successor]
                if (event.next_attempt <= now and (first_attempts or event.attempts)
                        and all(len(self.queues[key]) > counts.get(key, 0)
                                and self.queues[key][counts.get(key, 0)] == successor
                                for key in self.keys[successor])):
                    heapq.heappush(joined, successor)
        taken.sort()
        return taken

    def settle(self, seq: int, finished: bool, now: float) -> None:
        """An attempt ended: the event is done (its keys' next events may go), or it waits for its retry.

        The events of one request are settled in `seq` order while all of them still count as in flight, so
        an event's successor in the same request is settled by its own turn, not released. A retrying event
        that does not head its keys' queues (an earlier event of its request retries too) waits for its
        predecessor instead of its own timer: it goes again with it, or after it.
        """
        event = self.window.get(seq)
        if event is None:
            return
        if not finished:
            if all(self.queues[key][0] == seq for key in self.keys[seq]):
                heapq.heappush(self.retrying, (event.next_attempt, seq))
            return
        del self.window[seq]
        successors = []
        for key in self.keys.pop(seq):
            queue = self.queues[key]
            queue.popleft()  # it headed every queue of its keys, or it would not have gone
            if queue:
                successors.append(queue[0])
            else:
                del self.queues[key]
        for successor in dict.fromkeys(successors):
            if successor not in self.inflight:
                self._release(successor, now)

    def due(self, now: float) -> float | None:
        """Move the retries that are due to `ready`; the time of the next one, if any."""
        while self.retrying and self.retrying[0][0] <= now:
            heapq.heappush(self.ready, heapq.heappop(self.retrying)[1])
        return self.retrying[0][0] if self.retrying else None

    def unhold(self) -> None:
        for seq in self.held:
            heapq.heappush(self.ready, seq)
        self.held.clear()


@dataclass
class _Parked:
    """What an account's worker left when it ended with events waiting (for a retry, or behind one)."""

    top: int                  # the highest seq it had read
    count: int                # how many pending events it left
    wake: float               # when the soonest of their retries is due


_number_cache: dict[tuple, tuple[str, str]] = {}  # the SQL of `Deliverer._number` by padded size and database
_ack_cache: dict[tuple, tuple[str, list]] = {}  # the SQL of `Deliverer._record_delivered` and its parameters
_heads_cache: dict[tuple, str] = {}  # the SQL of `Deliverer._read_heads` by number of accounts and database
_SEQ_COLUMN, _ACCOUNT_COLUMN = ([f.name for f in OutboxEvent._meta.sorted_fields].index(name)
                                for name in ("seq", "account"))


class Deliverer:
    """The webhook sender of one process; `start()` it beside the API (engine.server)."""

    def __init__(self, *, account_ids: Iterable[int] | None = None, allow_private: bool = False,
                 pool_size: int = POOL_SIZE, poll_interval: float = POLL_INTERVAL, timeout: float = SEND_TIMEOUT,
                 batch: int = BATCH, clock: Callable[[], float] = time.time, owner: str | None = None,
                 keep_delivered: int | None = KEEP_DELIVERED, keep_failed: int = KEEP_FAILED,
                 concurrency: int = CONCURRENCY, wake_gap: float = WAKE_GAP):
        if concurrency < 1:
            raise ValueError("webhook concurrency must be at least 1")
        self.account_ids = frozenset(account_ids) if account_ids is not None else None
        self.concurrency = concurrency
        self.sender = Sender(allow_private=allow_private, timeout=timeout,
                             connections=max(HOST_CONNECTIONS, concurrency))
        self.poll_interval = poll_interval
        self.wake_gap = wake_gap
        self._round_at = -math.inf  # time.monotonic() of the last round that found woken accounts
        self.batch = batch
        self.clock = clock
        self.keep_delivered = keep_delivered
        self.keep_failed = keep_failed
        self.owner = owner or f"{uuid.uuid4().hex[:12]}"
        self.pool = gevent.pool.Pool(pool_size)
        self.stats = collections.Counter()
        self._wake = gevent.event.Event()
        self._db_slots = gevent.lock.BoundedSemaphore(DB_SLOTS)
        self._dirty: set[int] = set()      # accounts that may have new events
        self._running: set[int] = set()    # accounts with a worker in this process
        self._leases: dict[int, int] = {}  # account -> lease end we hold
        self._unacked: dict[int, set[int]] = {}  # account -> seqs delivered but not yet recorded
        self._lanes: dict[int, _Lane] = {}       # account -> its running worker's state
        self._parked: dict[int, _Parked] = {}    # account -> what its last worker left waiting
        self._failing: dict[int, int] = {}       # account -> failed attempts in a row
        self._ack_wake = gevent.event.Event()
        self._acker: gevent.Greenlet | None = None
        self._stopping = False
        self._scheduler: gevent.Greenlet | None = None
        self._pruner: gevent.Greenlet | None = None
        self._unlisten: Callable[[], None] | None = None

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> Deliverer:
        self._stopping = False
        self._unlisten = events.on_commit(self.notify)
        self._scheduler = gevent.spawn(self._run)
        self._acker = gevent.spawn(self._ack_loop)
        self._pruner = gevent.spawn(self._prune_every, PRUNE_EVERY) if self.keep_delivered else None
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Finish the requests in flight, record them, and give the leases back."""
        self._stopping = True
        if self._unlisten:
            self._unlisten()
        self._wake.set()
        for lane in list(self._lanes.values()):
            lane.wake.set()
        if self._pruner is not None:
            self._pruner.kill(timeout=1)
        if self._scheduler is not None:
            self._scheduler.join(timeout=1)
            self._scheduler.kill(timeout=1)
        self.pool.join(timeout=timeout if timeout is not None else self.sender.timeout + 2)
        self.pool.kill(timeout=1)
        if self._acker is not None:
            # it records what the workers delivered, then ends; killed only if the database hangs
            self._ack_wake.set()
            self._acker.join(timeout=5)
            self._acker.kill(timeout=1)
        try:
            with self._db():
                WebhookLease.update(until=0).where(WebhookLease.owner == self.owner).execute()
        except Exception:  # the leases run out by themselves
            log.exception("webhooks: could not release the leases")
        self._leases.clear()
        self.sender.close()

    @contextlib.contextmanager
    def _db(self) -> Iterator[None]:
        """A pooled connection for one short database step; the slots keep the workers from draining the pool."""
        with self._db_slots, db.connection_context():
            yield

    def notify(self, account_id: int) -> None:
        """New events for `account_id` were committed in this process. Never blocks."""
        if self.account_ids is None or account_id in self.account_ids:
            self._dirty.add(account_id)
            self._parked.pop(account_id, None)
            lane = self._lanes.get(account_id)
            if lane is not None:
                lane.wake.set()
            self._wake.set()

    # -- scheduling -------------------------------------------------------------------------------

    def _run(self) -> None:
        next_poll = 0.0
        while not self._stopping:
            gap = self._round_at + self.wake_gap - time.monotonic()
            if gap > 0 and self._dirty:
                gevent.sleep(gap)  # gather the commits that follow (see WAKE_GAP)
            self._wake.clear()
            if self._dirty:
                self._round_at = time.monotonic()
            candidates = set(self._dirty)
            now = self.clock()
            wake_at = None  # the soonest retry of an account whose worker left it waiting
            for account_id, parked in list(self._parked.items()):
                if parked.wake <= now:
                    candidates.add(account_id)
                else:
                    wake_at = parked.wake if wake_at is None else min(wake_at, parked.wake)
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.poll_interval
                try:
                    candidates |= self.due_accounts()
                except Exception:  # the database may be briefly away; try at the next poll
                    log.exception("webhooks: cannot read the outbox")
            ready = []
            for account_id in sorted(candidates):
                if account_id in self._running:
                    continue
                if len(ready) >= self.pool.free_count():
                    self._dirty.add(account_id)  # started when a slot frees (a worker's end wakes us)
                    continue
                ready.append(account_id)
            for start in range(0, len(ready), HEADS_PER_READ):
                self._start(ready[start:start + HEADS_PER_READ])
            timeout = next_poll - time.monotonic()
            if wake_at is not None:
                timeout = min(timeout, wake_at - self.clock())
            self._wake.wait(timeout=max(0.0, timeout))

    def _start(self, account_ids: list[int]) -> None:
        """Read the first batch of every account in `account_ids` in one query and start a worker for each that
        has one: events arriving one per account per commit would otherwise cost a query (or two) each."""
        for account_id in account_ids:
            self._dirty.discard(account_id)
            self._parked.pop(account_id, None)
        try:
            with self._db():
                leased = [account_id for account_id in account_ids if self._hold_lease(account_id)]
                heads = self._read_heads(leased) if leased else {}
        except Exception:  # the database may be briefly away; tried again at the next wake or poll
            log.exception("webhooks: cannot read the outbox")
            self._dirty.update(account_ids)
            return
        try:  # numbered here for all of them in one transaction (a worker would number its own batch alone)
            lost = self._number_many({account_id: batch for account_id, (batch, target, _) in heads.items()
                                      if batch and target.url and account_id not in self._running})
        except Exception:
            log.exception("webhooks: numbering events")
            lost = set()  # each worker numbers its own batch
        for account_id, (batch, target, full) in heads.items():
            if not batch or account_id in self._running or account_id in lost or self._stopping:
                continue  # (no batch: every row read was sent already, its acknowledgement not yet written)
            self._running.add(account_id)
            self.pool.spawn(self._work, account_id, (batch, target, full))

    def due_accounts(self) -> set[int]:
        """Accounts with pending events a worker may have something to do for: all of them, but for an account
        whose last worker left only events waiting (for a retry, or behind one) nothing has changed since (no
        more pending events, no higher `seq`) and no retry is due. One grouped index scan."""
        query = (OutboxEvent.select(OutboxEvent.account, fn.COUNT(OutboxEvent.seq), fn.MAX(OutboxEvent.seq))
                 .where(OutboxEvent.status == PENDING).group_by(OutboxEvent.account).tuples())
        if self.account_ids is not None:
            query = query.where(OutboxEvent.account.in_(sorted(self.account_ids)))
        with self._db():
            rows = list(query)
        now = self.clock()
        due = set()
        for account_id, count, top in rows:
            parked = self._parked.get(account_id)
            if (parked is None or top > parked.top or count > parked.count + len(self._unacked.get(account_id, ()))
                    or parked.wake <= now):
                due.add(account_id)
        return due

    # -- retention ------------------------------------------------------------------------------

    def _prune_every(self, seconds: float) -> None:
        while not self._stopping:
            try:
                self.prune()
            except Exception:  # the next round tries again
                log.exception("webhooks: pruning the outbox")
            gevent.sleep(seconds)

    def prune(self, chunk: int = 5000) -> int:
        """Delete delivered and skipped events older than `keep_delivered`, failed ones older than `keep_failed`.

        In chunks, each its own short statement, so the outbox never holds a
        long lock; pending events are never deleted. Returns how many went.
        """
        if not self.keep_delivered:
            return 0
        now = int(self.clock())
        old = (((OutboxEvent.status << [DELIVERED, SKIPPED]) & (OutboxEvent.ts < now - self.keep_delivered))
               | ((OutboxEvent.status == FAILED) & (OutboxEvent.ts < now - self.keep_failed)))
        if self.account_ids is not None:
            old &= OutboxEvent.account.in_(sorted(self.account_ids))
        removed = 0
        while not self._stopping:
            with self._db():
                seqs = [seq for (seq,) in OutboxEvent.select(OutboxEvent.seq).where(old).limit(chunk).tuples()]
                if seqs:
                    OutboxEvent.delete().where(OutboxEvent.seq.in_(seqs)).execute()
            removed += len(seqs)
            if len(seqs) < chunk:
                break
            gevent.sleep(0)
        return removed

    # -- one account ------------------------------------------------------------------------------

    def _work(self, account_id: int, first: tuple[list[OutboxEvent], Target, bool] | None = None) -> None:
        """Send the account's events: `first` (read by the scheduler), then what further reads bring while a
        backlog lasts, up to `concurrency` requests in flight, each call's and agent's events in order.

        The worker ends when nothing is in flight and nothing may go now: its events all sent, or the rest
        waiting for retries (the scheduler starts it again when one is due, `_parked`), or after
        TURN_BATCHES batches' worth of events (back of the line, so other accounts get their turn). It never ends with a
        request in flight: a new worker reads the account afresh and must not send those again.
        """
        lane = self._lanes[account_id] = _Lane(account_id)
        try:
            if first is not None:
                self._take(lane, *first)
            else:
                self._refill(lane)
            self._drive(lane)
        except Exception:  # one account's trouble must not stop the others; retried at the next poll
            log.exception("webhooks: delivering for account %s", account_id)
        finally:
            # let what is in flight finish and record itself (a stop joins the pool for as long)
            lane.sends.join(timeout=self.sender.timeout + 2)
            lane.sends.kill(timeout=1)
            self._lanes.pop(account_id, None)
            wakes = [e.next_attempt for e in lane.window.values() if e.next_attempt > self.clock()]
            if wakes and not lane.lost and not self._stopping:  # the rest waits for retries: not before the first
                self._parked[account_id] = _Parked(top=lane.cursor, count=len(lane.window), wake=min(wakes))
            self._running.discard(account_id)
            self._wake.set()

    def _drive(self, lane: _Lane) -> None:
        account_id = lane.account_id
        while not self._stopping and not lane.lost:
            lane.wake.clear()
            now = self.clock()
            wake_at = lane.due(now)
            if lane.held and (not self._failing.get(account_id) or not (lane.retrying or lane.inflight)):
                lane.unhold()  # a retry got through (or none is left to probe with)
            for _ in range(min(self.concurrency - lane.senders, math.ceil(len(lane.ready) / self._per_request(lane)))):
                lane.senders += 1
                lane.sends.spawn(self._sender, lane)
            # Read on while a backlog lasts or new events were committed, once fewer than `concurrency` events
            # read are left to start (or some wait for a retry and may clog the window); while requests are in
            # flight, at most every REFILL_GAP. Commits of a few events each would otherwise cost a read and a
            # numbering write each; this way the reads grow with the backlog, as with one request in flight.
            read = ((lane.more or account_id in self._dirty)
                    and len(lane.ready) < self.concurrency * self._per_request(lane) and len(lane.window) < WINDOW
                    and (len(lane.window) - len(lane.inflight) < self._low_water(lane) or bool(lane.retrying)))
            if read and lane.retrying and not lane.inflight and not lane.ready and not lane.read_freed:
                # everything read waits behind retries, and so did all of the last read: reading on would most
                # likely find more of the same (a worker is started on every commit), so the rest waits too
                read = False
            if read and not lane.more and not lane.senders and not lane.ready:
                return  # idle, and new events were committed: the scheduler reads them with other accounts' own
            gap = lane.read_at + REFILL_GAP - time.monotonic() if lane.inflight else 0.0
            if read and gap <= 0:
                if lane.taken >= TURN_BATCHES * self.batch:
                    if not lane.inflight:
                        self._dirty.add(account_id)  # more to send: back of the line
                        return
                elif self._refill(lane):
                    continue
                else:
                    return  # the lease is gone
            if not lane.senders and not lane.ready:
                return  # all sent, or the rest waits for a retry (`_parked`)
            timeout = self.poll_interval if wake_at is None else min(self.poll_interval, max(0.0, wake_at - now))
            if read and gap > 0:
                timeout = min(timeout, gap)
            lane.wake.wait(timeout=timeout)

    @staticmethod
    def _per_request(lane: _Lane) -> int:
        """How many events one request of the account may carry (its `event_push_batch`, as last read)."""
        return lane.target.per_request if lane.target is not None else 1

    def _low_water(self, lane: _Lane) -> int:
        """Fewer events than this left to start and the worker reads on: half a batch ahead while a backlog
        lasts (its reads come back full), else enough to fill every request (`concurrency` x events per
        request: new events are read as the last ones go)."""
        full = self.concurrency * self._per_request(lane)
        return max(full, self.batch // 2) if lane.more else full

    def _next_batch(self, lane: _Lane) -> tuple[list[OutboxEvent], Target | None]:
        """The events of the next request, taken into flight (`_Lane.take`), and the target they go to; no
        events when none may go. After `concurrency` failed attempts in a row (the receiver looks down) only
        retries go until one of them gets through."""
        if not lane.ready or lane.requests >= self.concurrency:
            return [], None
        now = self.clock()
        if self._leases.get(lane.account_id, 0) - now <= LEASE_SECONDS / 2:
            with self._db():
                if not self._hold_lease(lane.account_id):
                    lane.lost = True
                    return [], None
        down = self._failing.get(lane.account_id, 0) >= self.concurrency
        target = lane.target
        seqs = lane.take(self._per_request(lane), not down, now)
        if not seqs:
            return [], None
        lane.requests += 1
        if lane.requests > self.stats["peak_in_flight"]:
            self.stats["peak_in_flight"] = lane.requests
        return [lane.window[seq] for seq in seqs], target

    def _sender(self, lane: _Lane) -> None:
        """One of the account's `concurrency` senders: sends the next request that may go until none may (a
        finished event's successor on its call or agent is usually in the next), then ends."""
        try:
            while not self._stopping and not lane.lost:
                batch, target = self._next_batch(lane)
                if not batch:
                    return
                finished: dict[int, bool] = {}
                try:
                    finished = self._send(lane, batch, target)
                finally:
                    now = self.clock()
                    for event in batch:  # in seq order, all still in flight (`_Lane.settle`)
                        lane.settle(event.seq, finished.get(event.seq, False), now)
                    for event in batch:
                        lane.inflight.pop(event.seq, None)
                    lane.requests -= 1
                if lane.retrying or ((lane.more or lane.account_id in self._dirty)
                                     and len(lane.window) - len(lane.inflight) < self._low_water(lane)):
                    lane.wake.set()  # the worker may read on, or time a retry
        finally:
            lane.senders -= 1
            lane.wake.set()

    def _send(self, lane: _Lane, batch: list[OutboxEvent], target: Target | None) -> dict[int, bool]:
        """One request (one event, or a batch) and its record; by seq, True when the event is finished
        (delivered, failed), False when it retries. A batch's answer is every one of its events' answer."""
        now = self.clock()
        seqs = [event.seq for event in batch]
        try:
            outcome = self._attempt(lane.account_id, batch, target)
            if outcome.kind == DELIVERED:
                self._failing.pop(lane.account_id, None)
                self._unacked.setdefault(lane.account_id, set()).update(seqs)
                self._ack_wake.set()
                return dict.fromkeys(seqs, True)
            if outcome.kind == FAILED:
                self._failing.pop(lane.account_id, None)
                self._mark(seqs, status=FAILED, last_error=outcome.error, attempts=OutboxEvent.attempts + 1)
                self.stats[FAILED] += len(seqs)
                return dict.fromkeys(seqs, True)
            self._failing[lane.account_id] = self._failing.get(lane.account_id, 0) + 1
            return self._retry_later(lane, batch, outcome.error or "failed", now)
        except Exception:  # the outcome could not be recorded (the database is away): try the events again later
            log.exception("webhooks: recording an attempt for account %s", lane.account_id)
            for event in batch:
                event.next_attempt = max(event.next_attempt, math.ceil(now + RETRY_BASE))
            return dict.fromkeys(seqs, False)

    def _refill(self, lane: _Lane) -> bool:
        """Read the account's next pending events after the worker's cursor into its window."""
        self._dirty.discard(lane.account_id)
        with self._db():
            if not self._hold_lease(lane.account_id):
                lane.lost = True
                return False
            heads = self._read_heads([lane.account_id], after={lane.account_id: lane.cursor})
        batch, target, full = heads.get(lane.account_id, ([], lane.target, False))
        self._take(lane, batch, target, full)
        return not lane.lost

    def _take(self, lane: _Lane, batch: list[OutboxEvent], target: Target | None, full: bool) -> None:
        """Add a batch read in `seq` order to the window, numbered (`account_seq`); skipped without a URL."""
        lane.read_at = time.monotonic()
        lane.more = full
        if not batch:
            return
        self.stats["batches"] += 1
        lane.taken += len(batch)
        lane.cursor = max(lane.cursor, batch[-1].seq)
        lane.target = target
        batch = [event for event in batch if event.seq not in lane.window]
        if not target or not target.url:
            if batch:
                self._mark([e.seq for e in batch], status=SKIPPED, last_error="no Event Push URL")
                self.stats[SKIPPED] += len(batch)
            return
        if not self._number(lane.account_id, batch):
            lane.lost = True
            return
        now = self.clock()
        ready = len(lane.ready)
        for event in batch:
            lane.add(event, now)
        lane.read_freed = len(lane.ready) > ready

    def _number(self, account_id: int, batch: list[OutboxEvent]) -> bool:
        """Give the batch's unnumbered events the account's next numbers; False when the lease is lost."""
        return account_id not in self._number_many({account_id: batch})

    def _number_many(self, batches: dict[int, list[OutboxEvent]]) -> set[int]:
        """Give the unnumbered events of each account's batch the account's next numbers (`account_seq`), in
        `seq` order, before any of them is sent; returns the accounts whose lease we no longer hold (their
        events stay unnumbered and are not sent).

        One transaction for all the accounts: an account's counter on its lease row advances only while we
        hold the lease (a lapsed holder never numbers events the new one is numbering), and the rows get
        their numbers with it. On PostgreSQL it commits without waiting for the WAL flush, as outcomes do: a
        database crash that loses it rolls the counter back with the rows, and numbering the same pending
        events again in `seq` order gives them the same numbers.
        """
        todo = {account_id: [event for event in batch if event.account_seq is None]
                for account_id, batch in batches.items()}
        todo = {account_id: events for account_id, events in todo.items() if events}
        lost: set[int] = set()
        if not todo:
            return lost
        now = int(self.clock())
        if not is_sqlite():
            numbers = self._number_pg(todo, now)
            for account_id, events in todo.items():
                if events[0].seq not in numbers:
                    lost.add(account_id)
                    self._leases.pop(account_id, None)
                    continue
                for event in events:
                    event.account_seq = numbers[event.seq]
            return lost
        with self._db(), db.atomic():
            for account_id, events in todo.items():
                seqs = fastq._padded([event.seq for event in events])
                lease_sql, rows_sql = self._number_sql(len(seqs))
                row = db.obj.execute_sql(lease_sql, (len(events), account_id, self.owner, now)).fetchone()
                if row is None:
                    lost.add(account_id)
                    continue
                first = row[0] - len(events) + 1
                db.obj.execute_sql(rows_sql, (first - 1, *seqs)).close()
                for n, event in enumerate(events):
                    event.account_seq = first + n
        for account_id in lost:
            self._leases.pop(account_id, None)
        return lost

    def _number_pg(self, todo: dict[int, list[OutboxEvent]], now: int) -> dict[int, int]:
        """PostgreSQL: every account's counter and rows in one statement, one round trip (its SQL built once per
        padded shape); seq -> number for the accounts whose lease we hold."""
        pairs = fastq._padded([(account_id, len(events)) for account_id, events in todo.items()])
        seqs = fastq._padded([event.seq for events in todo.values() for event in events])
        key = ("pg", len(pairs), len(seqs), fastq._dialect())
        sql = _number_cache.get(key)
        if sql is None:
            values = ", ".join(["(%s::bigint, %s::bigint)"] * len(pairs))
            marks = ", ".join(["%s"] * len(seqs))
            # names from the model definitions only; every value is a bound parameter
            async_commit = "set_config('synchronous_commit', 'off', true) = 'off'"  # as `_record_delivered`
            sql = _number_cache[key] = (
                f'WITH v ("account_id", "n") AS (SELECT DISTINCT * FROM (VALUES {values}) AS p), '  # noqa: S608
                'l AS (UPDATE "webhook_lease" AS w SET "last_seq" = w."last_seq" + v."n" FROM v '
                'WHERE w."account_id" = v."account_id" AND w."owner" = %s AND w."until" >= %s '
                'RETURNING w."account_id", w."last_seq" - v."n" AS "base"), '
                'r AS (SELECT "seq", "account_id", '
                'ROW_NUMBER() OVER (PARTITION BY "account_id" ORDER BY "seq") AS "k" '
                f'FROM "outbox_event" WHERE "seq" IN ({marks})) '
                'UPDATE "outbox_event" AS o SET "account_seq" = l."base" + r."k" '
                'FROM r JOIN l ON l."account_id" = r."account_id" '
                f'WHERE o."seq" = r."seq" AND {async_commit} RETURNING o."seq", o."account_seq"')
        params = [x for pair in pairs for x in pair] + [self.owner, now, *seqs]
        with self._db():  # one statement, its own transaction
            return dict(db.obj.execute_sql(sql, params).fetchall())

    @staticmethod
    def _number_sql(size: int) -> tuple[str, str]:
        key = (size, fastq._dialect())
        sqls = _number_cache.get(key)
        if sqls is None:
            p = db.obj.param
            marks = ", ".join([p] * size)
            # names from the model definitions only; every value is a bound parameter
            sqls = _number_cache[key] = (
                f'UPDATE "webhook_lease" SET "last_seq" = "last_seq" + {p} '  # noqa: S608
                f'WHERE "account_id" = {p} AND "owner" = {p} AND "until" >= {p} RETURNING "last_seq"',
                f'UPDATE "outbox_event" SET "account_seq" = n."number" FROM ('  # noqa: S608
                f'SELECT "seq", ROW_NUMBER() OVER (ORDER BY "seq") + {p} AS "number" FROM "outbox_event" '
                f'WHERE "seq" IN ({marks})) AS n WHERE "outbox_event"."seq" = n."seq"')
        return sqls

    def _batch_sql(self) -> str:
        sql, _ = fastq.compiled("webhooks:batch", lambda: (
            OutboxEvent.select(OutboxEvent, Account.event_push_batch, Account.event_push_url,
                               Account.webhook_secret_enc)
            .join(Account, on=(OutboxEvent.account == Account.id))
            .where((OutboxEvent.account == 0) & (OutboxEvent.status == PENDING) & (OutboxEvent.seq > 0))
            .order_by(OutboxEvent.seq).limit(1)))
        return sql

    def _read_batch(self, account_id: int, after: int = 0) -> tuple[list[OutboxEvent], Target | None, bool]:
        """The account's next pending events in order (after `seq` `after`), with its URL and secret, and
        whether the batch is full.

        Events delivered but not yet recorded (`_unacked`) are still pending in
        the database and are left out here.
        """
        return self._read_heads([account_id], after={account_id: after}).get(account_id, ([], None, False))

    def _read_heads(self, account_ids: list[int], after: dict[int, int] | None = None,
                    ) -> dict[int, tuple[list[OutboxEvent], Target, bool]]:
        """The next batch of each account with pending events (after `seq` `after[account]`, default from the
        start), by account: one query (a UNION ALL of the per-account index range scans), its SQL built once per
        number of accounts rounded up to a power of two (the padding reads nothing: `LIMIT 0`).
        """
        account_ids = list(dict.fromkeys(account_ids))
        after = after or {}
        size = 1 << (len(account_ids) - 1).bit_length()
        key = (size, fastq._dialect())
        sql = _heads_cache.get(key)
        if sql is None:
            one = self._batch_sql()
            # our own compiled SQL, every value a bound parameter
            sql = _heads_cache[key] = " UNION ALL ".join(
                f"SELECT * FROM ({one}) AS h{n}" for n in range(size))  # noqa: S608
        # taken before the query: the acknowledgement writer replaces these sets once it has recorded them,
        # and a row read before that write committed must still be recognised as sent
        sent = {account_id: self._unacked.get(account_id, set()) for account_id in account_ids}
        limits = {account_id: self.batch + len(sent[account_id]) for account_id in account_ids}
        params: list[Any] = []
        for account_id in account_ids:
            params += [account_id, PENDING, after.get(account_id, 0), limits[account_id]]
        params += [0, PENDING, 0, 0] * (size - len(account_ids))
        rows = db.obj.execute_sql(sql, params).fetchall()
        found: dict[int, list[tuple]] = {}
        for row in rows:
            found.setdefault(row[_ACCOUNT_COLUMN], []).append(row)
        heads = {}
        for account_id, account_rows in found.items():
            account_rows.sort(key=lambda row: row[_SEQ_COLUMN])
            batch = [fastq.make(OutboxEvent, row) for row in account_rows
                     if row[_SEQ_COLUMN] not in sent[account_id]]  # rows sent already are not even decoded
            first = account_rows[0]
            heads[account_id] = (batch, read_target(first[-2], first[-1], first[-3]),
                                 len(account_rows) >= limits[account_id])
        return heads

    def _hold_lease(self, account_id: int) -> bool:
        """Take or renew the account's lease (a database step: call inside a connection)."""
        now = int(self.clock())
        if self._leases.get(account_id, 0) - now > LEASE_SECONDS / 2:
            return True
        until = now + LEASE_SECONDS
        mine = WebhookLease.account == account_id
        taken = WebhookLease.update(owner=self.owner, until=until).where(
            mine & ((WebhookLease.owner == self.owner) | (WebhookLease.until < now))).execute()
        if not taken:
            WebhookLease.insert(account=account_id, owner=self.owner, until=until).on_conflict_ignore().execute()
            taken = WebhookLease.select().where(
                mine & (WebhookLease.owner == self.owner) & (WebhookLease.until == until)).exists()
        if taken:
            self._leases[account_id] = until
        else:
            self._leases.pop(account_id, None)
            self.stats["lease_busy"] += 1
        return bool(taken)

    def _attempt(self, account_id: int, batch: list[OutboxEvent], target: Target) -> Outcome:
        """One POST: the vendor's one-event body, or (the account's `event_push_batch` above 1) a batch body."""
        if target.secret_problem:
            return Outcome("retry", target.secret_problem)
        if target.per_request > 1:
            body = batch_body(account_id, batch)
            headers = batch_headers(batch, body, target.secret)
        else:
            (event,) = batch
            body = wire_body(event)
            headers = signed_headers(event.id, body, target.secret, event.account_seq)
        self.stats["attempts"] += 1
        self.stats["events_sent"] += len(batch)
        return self.sender.deliver(target.url, body, headers)

    def _retry_later(self, lane: _Lane, batch: list[OutboxEvent], error: str, now: float) -> dict[int, bool]:
        """Record a failed attempt of a request: its events' next try, together (one delay, from the most
        attempts among them), or (24 hours after an event) that event's end. By seq, True when it ended.

        An event gives up only when no earlier event of its keys in the request keeps retrying: a call's or
        agent's events never finish out of order.
        """
        attempts = max(event.attempts for event in batch) + 1
        retry_at = math.ceil(now + retry_delay(attempts))
        blocked: set[tuple] = set()
        ended, waits = [], {}
        for event in batch:  # in seq order
            keys = lane.keys.get(event.seq) or order_keys(event)
            if now >= event.ts + MAX_AGE and blocked.isdisjoint(keys):
                ended.append(event)
            else:
                blocked.update(keys)
                waits.setdefault(min(retry_at, max(event.ts + MAX_AGE, math.ceil(now))), []).append(event)
        if ended:
            self._mark([event.seq for event in ended], status=FAILED, attempts=OutboxEvent.attempts + 1,
                       last_error=f"{error}; gave up {MAX_AGE // 3600} hours after the event")
            self.stats[FAILED] += len(ended)
        for next_attempt, group in waits.items():
            self._mark([event.seq for event in group], attempts=OutboxEvent.attempts + 1,
                       next_attempt=next_attempt, last_error=error)
            for event in group:
                event.attempts, event.next_attempt, event.last_error = event.attempts + 1, next_attempt, error
            self.stats["retries"] += len(group)
        gone = {event.seq for event in ended}
        return {event.seq: event.seq in gone for event in batch}

    def _ack_loop(self) -> None:
        while True:
            self._ack_wake.wait()
            gevent.sleep(ACK_DELAY)  # gather the acknowledgements of every account into one write
            self._ack_wake.clear()
            try:
                self._flush_acks()
            except Exception:  # kept in memory (and not re-sent meanwhile); written at the next round
                log.exception("webhooks: recording deliveries")
                gevent.sleep(1)
                self._ack_wake.set()
                continue
            if self._stopping and self.pool.free_count() == self.pool.size and not self._unacked:
                return

    def _flush_acks(self) -> None:
        """Record every delivery acknowledged so far, for all accounts, in one statement per chunk.

        Until then the events stay `pending` in the database, so the workers
        skip them by `_unacked`; a crash before this write sends them again.
        """
        todo = {account_id: set(seqs) for account_id, seqs in self._unacked.items() if seqs}
        seqs = sorted(seq for taken in todo.values() for seq in taken)
        for start in range(0, len(seqs), 1000):
            self._record_delivered(seqs[start:start + 1000])
        for account_id, taken in todo.items():
            left = self._unacked.get(account_id, set()) - taken
            if left:
                self._unacked[account_id] = left
            else:
                self._unacked.pop(account_id, None)
        self.stats[DELIVERED] += len(seqs)
        self.stats["ack_writes"] += bool(seqs)

    def _record_delivered(self, seqs: list[int]) -> None:
        """One statement, one round trip, its SQL built once per (padded) number of events.

        As `_write` does, on PostgreSQL without waiting for the WAL flush, here by `set_config(..., true)`
        inside the statement itself: it is its own transaction, so no BEGIN, SET LOCAL and COMMIT trips.
        """
        padded = fastq._padded(seqs)
        key = ("webhooks:delivered", len(padded), fastq._dialect())
        hit = _ack_cache.get(key)
        if hit is None:
            sql, template = fastq._template(key[0], lambda at, keys: OutboxEvent.update(
                status=DELIVERED, delivered_at=at, attempts=OutboxEvent.attempts + 1,
            ).where(OutboxEvent.seq.in_(keys) & (OutboxEvent.status == PENDING)), (0, padded))
            if not is_sqlite():
                sql += " AND set_config('synchronous_commit', 'off', true) = 'off'"
            hit = _ack_cache[key] = (sql, template)
        sql, template = hit
        flat = [int(self.clock()), *padded]
        params = [flat[n] if is_slot else n for is_slot, n in template]
        with self._db():
            db.obj.execute_sql(sql, params).close()

    def _mark(self, seqs: list[int], **fields: Any) -> None:
        self._write(OutboxEvent.update(**fields).where(OutboxEvent.seq.in_(seqs) & (OutboxEvent.status == PENDING)))

    def _write(self, query: peewee.ModelUpdate) -> None:
        """Record a delivery outcome.

        On PostgreSQL without waiting for the WAL flush: an outcome lost to a
        database crash only means the event is sent again (at least once), and
        a flush per acknowledgement would cost more than the send itself.
        """
        with self._db():
            if is_sqlite():
                query.execute()
                return
            with db.atomic():
                db.execute_sql("SET LOCAL synchronous_commit TO OFF")
                query.execute()
