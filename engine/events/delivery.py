"""Webhook delivery: the outbox's pending events POSTed to each account's Event Push URL.

This is the scheduler (which account sends, when, in what order, with what
retries, and how outcomes are recorded); one request is `engine.events.sender`
and the API's view of the outbox is `engine.events.webhooks`.

Guarantees (issue 7; DESIGN.md, Webhooks and Scale-out):

* At least once. An event leaves `pending` only after its receiver answered
  (or gave up on it), and that is recorded after the send: a crash between
  the two sends it again, with the same `id`, so receivers drop duplicates.
* Per-account order. One greenlet at a time sends an account's events, one
  request in flight, in `seq` order; while the oldest pending event waits for
  a retry, the later ones wait behind it. Accounts proceed in parallel in a
  bounded pool.
* One sender per account across processes. Boxes sharing a PostgreSQL
  database take a lease on the account (`WebhookLease`) before sending; a
  crashed holder's lease runs out after `LEASE_SECONDS`. A box given
  `account_ids` delivers only for the accounts it owns.
* Prompt and cheap. A commit that recorded an event wakes the deliverer in
  the same process (`engine.events.outbox.on_commit`); events written by other
  processes are found by a poll every `POLL_INTERVAL`. On each wake the
  scheduler reads the first batch of every woken account in one query; a
  worker reads further batches itself only while its account has a backlog
  (its batches come back full). Deliveries are recorded every `ACK_DELAY`
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
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import peewee
from peewee import fn

from engine.events import outbox as events
from engine.events.outbox import DELIVERED, FAILED, PENDING, SKIPPED
from engine.events.sender import SEND_TIMEOUT, Outcome, Sender, Target, read_target, signed_headers, wire_body
from engine.store import fastq
from engine.store.db import db, is_sqlite
from engine.store.models import Account, OutboxEvent, WebhookLease

log = logging.getLogger("switchdesk.webhooks")

RETRY_BASE = 1.0            # first retry after ~1 s, doubling ...
RETRY_CAP = 600.0           # ... up to 10 minutes between attempts
MAX_AGE = 24 * 3600         # retries stop this long after the event's ts; the event is then failed (and kept)
BATCH = 200                 # events read (and acknowledged) per database round trip
HEADS_PER_READ = 32         # accounts whose first batch the scheduler reads in one query
TURN_BATCHES = 10           # batches an account may send before yielding its pool slot to others
POOL_SIZE = 100             # accounts delivered in parallel by one process
DB_SLOTS = 8                # database connections the deliverer uses at once (the API needs the rest)
LEASE_SECONDS = 60          # how long a crashed process keeps an account's events waiting
POLL_INTERVAL = 1.0         # how often other processes' events (and due retries) are looked for
KEEP_DELIVERED = 7 * 86400  # delivered and skipped events stay listed (GET /api/event) this long
KEEP_FAILED = 30 * 86400    # failed ones this long, for redelivery
PRUNE_EVERY = 3600.0
ACK_DELAY = 0.01            # deliveries are recorded this often, for all accounts in one write


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failures: doubling, capped, with jitter.

    The jitter (the upper half of the window) keeps many accounts behind one
    receiver that came back from hitting it in the same second.
    """
    window = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, attempts - 1))
    return window / 2 + random.uniform(0, window / 2)  # jitter, not a secret


_ack_cache: dict[tuple, tuple[str, list]] = {}  # the SQL of `Deliverer._record_delivered` and its parameters
_heads_cache: dict[tuple, str] = {}  # the SQL of `Deliverer._read_heads` by number of accounts and database
_SEQ_COLUMN, _ACCOUNT_COLUMN = ([f.name for f in OutboxEvent._meta.sorted_fields].index(name)
                                for name in ("seq", "account"))


class Deliverer:
    """The webhook sender of one process; `start()` it beside the API (engine.server)."""

    def __init__(self, *, account_ids: Iterable[int] | None = None, allow_private: bool = False,
                 pool_size: int = POOL_SIZE, poll_interval: float = POLL_INTERVAL, timeout: float = SEND_TIMEOUT,
                 batch: int = BATCH, clock: Callable[[], float] = time.time, owner: str | None = None,
                 keep_delivered: int | None = KEEP_DELIVERED, keep_failed: int = KEEP_FAILED):
        self.account_ids = frozenset(account_ids) if account_ids is not None else None
        self.sender = Sender(allow_private=allow_private, timeout=timeout)
        self.poll_interval = poll_interval
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
            self._wake.set()

    # -- scheduling -------------------------------------------------------------------------------

    def _run(self) -> None:
        next_poll = 0.0
        while not self._stopping:
            self._wake.clear()
            candidates = set(self._dirty)
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
            self._wake.wait(timeout=max(0.0, next_poll - time.monotonic()))

    def _start(self, account_ids: list[int]) -> None:
        """Read the first batch of every account in `account_ids` in one query and start a worker for each that
        has one: events arriving one per account per commit would otherwise cost a query (or two) each."""
        for account_id in account_ids:
            self._dirty.discard(account_id)
        try:
            with self._db():
                leased = [account_id for account_id in account_ids if self._hold_lease(account_id)]
                heads = self._read_heads(leased) if leased else {}
        except Exception:  # the database may be briefly away; tried again at the next wake or poll
            log.exception("webhooks: cannot read the outbox")
            self._dirty.update(account_ids)
            return
        for account_id, (batch, target, full) in heads.items():
            if not batch or account_id in self._running or self._stopping:
                continue  # (no batch: every row read was sent already, its acknowledgement not yet written)
            self._running.add(account_id)
            self.pool.spawn(self._work, account_id, (batch, target, full))

    def due_accounts(self) -> set[int]:
        """Accounts whose oldest pending event may be sent now (two index lookups per account with a backlog)."""
        heads = (OutboxEvent.select(fn.MIN(OutboxEvent.seq)).where(OutboxEvent.status == PENDING)
                 .group_by(OutboxEvent.account))
        if self.account_ids is not None:
            heads = heads.where(OutboxEvent.account.in_(sorted(self.account_ids)))
        query = (OutboxEvent.select(OutboxEvent.account)
                 .where(OutboxEvent.seq.in_(heads) & (OutboxEvent.next_attempt <= int(self.clock()))).tuples())
        with self._db():
            return {account_id for (account_id,) in query}

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
        """Send the account's events, `first` (read by the scheduler) then batch by batch while a backlog lasts.

        After a batch that was not full the worker ends even if new events were announced meanwhile: the
        scheduler reads those with the other accounts' in one query.
        """
        try:
            for _ in range(TURN_BATCHES):
                if self._stopping:
                    return
                if first is not None:
                    (batch, target, full), first = first, None
                else:
                    self._dirty.discard(account_id)
                    with self._db():
                        if not self._hold_lease(account_id):
                            return
                        batch, target, full = self._read_batch(account_id)
                if not batch:
                    return  # the lease is kept (and runs out unless renewed): the next event needs no write for it
                self.stats["batches"] += 1
                if not self._deliver(account_id, batch, target) or not full:
                    return
            self._dirty.add(account_id)  # more to send: back of the line, so other accounts get their turn
        except Exception:  # one account's trouble must not stop the others; retried at the next poll
            log.exception("webhooks: delivering for account %s", account_id)
        finally:
            self._running.discard(account_id)
            self._wake.set()

    def _batch_sql(self) -> str:
        sql, _ = fastq.compiled("webhooks:batch", lambda: (
            OutboxEvent.select(OutboxEvent, Account.event_push_url, Account.webhook_secret_enc)
            .join(Account, on=(OutboxEvent.account == Account.id))
            .where((OutboxEvent.account == 0) & (OutboxEvent.status == PENDING))
            .order_by(OutboxEvent.seq).limit(1)))
        return sql

    def _read_batch(self, account_id: int) -> tuple[list[OutboxEvent], Target | None, bool]:
        """The account's next pending events in order, with its URL and secret, and whether the batch is full.

        Events delivered but not yet recorded (`_unacked`) are still pending in
        the database and are left out here.
        """
        return self._read_heads([account_id]).get(account_id, ([], None, False))

    def _read_heads(self, account_ids: list[int]) -> dict[int, tuple[list[OutboxEvent], Target, bool]]:
        """The next batch of each account with pending events, by account: one query (a UNION ALL of the
        per-account index range scans), its SQL built once per number of accounts rounded up to a power of two
        (the padding reads nothing: `LIMIT 0`).
        """
        account_ids = list(dict.fromkeys(account_ids))
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
            params += [account_id, PENDING, limits[account_id]]
        params += [0, PENDING, 0] * (size - len(account_ids))
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
            heads[account_id] = (batch, read_target(first[-2], first[-1]), len(account_rows) >= limits[account_id])
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

    def _deliver(self, account_id: int, batch: list[OutboxEvent], target: Target) -> bool:
        """Send `batch` in order; False when the account must wait (a retry, a lost lease, a stop)."""
        if not target.url:
            self._mark([e.seq for e in batch], status=SKIPPED, last_error="no Event Push URL")
            self.stats[SKIPPED] += len(batch)
            return True
        for event in batch:
            now = self.clock()
            if self._stopping or event.next_attempt > now:
                return False
            if self._leases.get(account_id, 0) - now <= LEASE_SECONDS / 2:
                with self._db():
                    if not self._hold_lease(account_id):
                        return False
            outcome = self._attempt(event, target)
            if outcome.kind == DELIVERED:
                self._unacked.setdefault(account_id, set()).add(event.seq)
                self._ack_wake.set()
                continue
            if outcome.kind == FAILED:
                self._mark([event.seq], status=FAILED, last_error=outcome.error, attempts=event.attempts + 1)
                self.stats[FAILED] += 1
                continue
            return self._retry_later(event, outcome.error or "failed", now)
        return True

    def _attempt(self, event: OutboxEvent, target: Target) -> Outcome:
        if target.secret_problem:
            return Outcome("retry", target.secret_problem)
        body = wire_body(event)
        headers = signed_headers(event.id, body, target.secret)
        self.stats["attempts"] += 1
        return self.sender.deliver(target.url, body, headers)

    def _retry_later(self, event: OutboxEvent, error: str, now: float) -> bool:
        attempts = event.attempts + 1
        give_up_at = event.ts + MAX_AGE
        if now >= give_up_at:
            self._mark([event.seq], status=FAILED, attempts=attempts,
                       last_error=f"{error}; gave up {MAX_AGE // 3600} hours after the event")
            self.stats[FAILED] += 1
            return True  # the next event's turn
        next_attempt = min(math.ceil(now + retry_delay(attempts)), give_up_at)
        self._mark([event.seq], attempts=attempts, next_attempt=next_attempt, last_error=error)
        self.stats["retries"] += 1
        return False

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
