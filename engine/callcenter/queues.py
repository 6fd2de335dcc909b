"""Queues and queue membership (tiers): the configuration mod_callcenter's queues and tiers are built from.

Every write is one transaction and reports what changed through
`engine.store.changes` once committed, so the ESL engine can follow the
configuration from this one place. Membership is written from either side —
a queue's agents or an agent's queues — through the same functions.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import peewee

from engine.callcenter import exits
from engine.directory import extensions
from engine.errors import ServiceError
from engine.media import library
from engine.store import fastq
from engine.store.changes import Pending
from engine.store.db import db
from engine.store.models import Did, Extension, Queue, Tier, TimeGroup, User, now

# mod_callcenter's strategies (vendor doc) plus ring-progressively, which mod_callcenter also has.
# `sequentially-by-next-agent-order` reaches FreeSWITCH as `round-robin` (DESIGN.md): the same behaviour.
STRATEGIES = (
    "ring-all", "longest-idle-agent", "round-robin", "top-down", "agent-with-least-talk-time",
    "agent-with-fewest-calls", "sequentially-by-agent-order", "sequentially-by-next-agent-order", "random",
    "ring-progressively",
)
FREESWITCH_STRATEGY = {"sequentially-by-next-agent-order": "round-robin"}
TIME_BASE_SCORES = ("system", "queue")

# Tier `mode` is a set of flags (DESIGN.md); the valid values are 1, 2, 3 and 4.
MODE_SELF_SERVICE = 1  # the agent may join and leave it with setQueues
MODE_AUTO_JOIN = 2  # joined automatically at check-in
MODE_LOCKED = 4  # joined whenever checked in; setQueues cannot remove it
MODES = (1, 2, 3, 4)
DEFAULT_MODE = MODE_SELF_SERVICE | MODE_AUTO_JOIN
TIER_MAX = 1000  # level and position: 0..TIER_MAX

_CHUNK = 5000  # ids per IN (...) list: far below SQLite's and PostgreSQL's parameter limits
_INSERT_CHUNK = 200


@dataclass(frozen=True)
class Membership:
    """One membership row as clients write it; `target_id` is the user id or the queue id, by side."""

    target_id: int
    mode: int = DEFAULT_MODE
    position: int = 1
    level: int = 1
    timegroup_id: int | None = None


@dataclass(frozen=True)
class _Spec:
    queue_id: int
    user_id: int
    mode: int
    position: int
    level: int
    timegroup_id: int | None


def _chunks(ids: Iterable[int], size: int = _CHUNK) -> Iterator[list[int]]:
    items = list(ids)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _id_list(ids: Iterable[int]) -> str:
    return ", ".join(str(i) for i in sorted(ids))


# --- reads ---------------------------------------------------------------------------------------


def get_queue(account_id: int, queue_id: int) -> Queue:
    return Queue.owned(account_id, queue_id)


def list_queues(account_id: int, *, name: str | None = None, strategy: str | None = None,
                time_base_score: str | None = None, limit: int | None = None, offset: int = 0) -> list[Queue]:
    rows = Queue.of(account_id).order_by(Queue.id)
    if name is not None:
        rows = rows.where(Queue.name == name)
    if strategy is not None:
        rows = rows.where(Queue.strategy == strategy)
    if time_base_score is not None:
        rows = rows.where(Queue.time_base_score == time_base_score)
    if limit:
        rows = rows.limit(limit)
    if offset:
        rows = rows.offset(offset)
    return list(rows)


def tiers_of_queues(queue_ids: list[int]) -> dict[int, list[Tier]]:
    """Each queue's tiers with the agent's name (`tier.user.name`), ordered by level, position, user."""
    out: dict[int, list[Tier]] = {q: [] for q in queue_ids}
    for chunk in _chunks(queue_ids):
        rows = (Tier.select(Tier, User.id, User.name).join(User)
                .where(Tier.queue.in_(chunk)).order_by(Tier.queue, Tier.level, Tier.position, Tier.user))
        for tier in rows:
            out[tier.queue_id].append(tier)
    return out


def tiers_of_users(user_ids: list[int]) -> dict[int, list[Tier]]:
    """Each user's tiers, ordered by queue id."""
    out: dict[int, list[Tier]] = {u: [] for u in user_ids}
    for chunk in _chunks(user_ids):
        for row in fastq.select("tiers_of_users", lambda some: (
            Tier.select().where(Tier.user.in_(some)).order_by(Tier.user, Tier.queue)
        ), chunk):
            tier = fastq.make(Tier, row)
            out[tier.user_id].append(tier)
    return out


# --- reference checks ----------------------------------------------------------------------------


def _check_agents(account_id: int, user_ids: set[int], field: str) -> None:
    """Only agents of the account can be members; another account's ids read as unknown."""
    found: dict[int, bool] = {}
    for chunk in _chunks(user_ids):
        for user in User.select(User.id, User.is_agent).where((User.account == account_id) & User.id.in_(chunk)):
            found[user.id] = user.is_agent
    unknown = user_ids - found.keys()
    if unknown:
        raise ServiceError(400, f"{field}: no user with id {_id_list(unknown)}", {"ids": sorted(unknown)})
    not_agents = {i for i, agent in found.items() if not agent}
    if not_agents:
        raise ServiceError(400, f"{field}: user {_id_list(not_agents)} is not an agent (set is_agent first)",
                           {"ids": sorted(not_agents)})


def _check_users_exist(account_id: int, user_ids: set[int], field: str) -> None:
    found: set[int] = set()
    for chunk in _chunks(user_ids):
        found.update(u.id for u in User.select(User.id).where((User.account == account_id) & User.id.in_(chunk)))
    unknown = user_ids - found
    if unknown:
        raise ServiceError(400, f"{field}: no user with id {_id_list(unknown)}", {"ids": sorted(unknown)})


def _check_queues(account_id: int, queue_ids: set[int], field: str) -> None:
    found: set[int] = set()
    for chunk in _chunks(queue_ids):
        found.update(q.id for q in Queue.select(Queue.id).where((Queue.account == account_id) & Queue.id.in_(chunk)))
    unknown = queue_ids - found
    if unknown:
        raise ServiceError(400, f"{field}: no queue with id {_id_list(unknown)}", {"ids": sorted(unknown)})


def _check_timegroups(account_id: int, timegroup_ids: set[int], field: str) -> None:
    found: set[int] = set()
    for chunk in _chunks(timegroup_ids):
        found.update(t.id for t in TimeGroup.select(TimeGroup.id).where(
            (TimeGroup.account == account_id) & TimeGroup.id.in_(chunk)))
    unknown = timegroup_ids - found
    if unknown:
        raise ServiceError(400, f"{field}: no time group with id {_id_list(unknown)}", {"ids": sorted(unknown)})


def _check_rows(rows: list[Membership], field: str) -> None:
    """Row values the schema may not have seen (engine callers): one target once, modes and ranges."""
    seen: set[int] = set()
    for row in rows:
        if row.target_id in seen:
            raise ServiceError(400, f"{field}: id {row.target_id} is listed twice")
        seen.add(row.target_id)
        if row.mode not in MODES:
            raise ServiceError(400, f"{field}: mode {row.mode} is not one of 1, 2, 3, 4")
        for name in ("position", "level"):
            value = getattr(row, name)
            if not 0 <= value <= TIER_MAX:
                raise ServiceError(400, f"{field}: {name} {value} is not in 0..{TIER_MAX}")


# --- membership writes (inside the caller's transaction) -------------------------------------------


def _upsert(account_id: int, specs: list[_Spec]) -> set[int]:
    """Insert or update tiers; returns the user ids whose membership changed."""
    if not specs:
        return set()
    wanted = {(s.queue_id, s.user_id): s for s in specs}
    queue_ids = {s.queue_id for s in specs}
    user_ids = {s.user_id for s in specs}
    existing: dict[tuple[int, int], Tier] = {}
    # One side always has a single id, so this reads only the tiers in question.
    many, one_side = (user_ids, Tier.queue.in_(queue_ids)) if len(queue_ids) == 1 else (queue_ids, None)
    for chunk in _chunks(many):
        if one_side is not None:
            where = one_side & Tier.user.in_(chunk)
        else:
            where = Tier.user.in_(user_ids) & Tier.queue.in_(chunk)
        for tier in Tier.select().where(where):
            existing[(tier.queue_id, tier.user_id)] = tier
    rows: list[dict[str, Any]] = []
    changed: set[int] = set()
    t = now()
    for key, spec in wanted.items():
        tier = existing.get(key)
        if tier is not None and (tier.mode, tier.position, tier.level, tier.timegroup_id) == (
                spec.mode, spec.position, spec.level, spec.timegroup_id):
            continue
        rows.append({"account": account_id, "queue": spec.queue_id, "user": spec.user_id, "mode": spec.mode,
                     "position": spec.position, "level": spec.level, "timegroup": spec.timegroup_id,
                     "joined": False, "ts": t})
        changed.add(spec.user_id)
    # One statement per chunk for new and changed rows alike (SQLite >= 3.24 and PostgreSQL);
    # an existing tier keeps its `joined` state and `ts`.
    for chunk in _chunks(rows, _INSERT_CHUNK):
        Tier.insert_many(chunk).on_conflict(
            conflict_target=[Tier.queue, Tier.user],
            preserve=[Tier.mode, Tier.position, Tier.level, Tier.timegroup],
        ).execute()
    return changed


def _delete_tiers(where: peewee.Expression) -> set[int]:
    """Delete the matching tiers; returns the user ids that lost a membership."""
    user_ids = {t.user_id for t in Tier.select(Tier.user).where(where)}
    if user_ids:
        Tier.delete().where(where).execute()
    return user_ids


def _write_queue_members(account_id: int, queue_id: int, rows: list[Membership], *, replace: bool,
                         field: str = "users") -> set[int]:
    _check_rows(rows, field)
    if rows:
        _check_agents(account_id, {r.target_id for r in rows}, field)
        _check_timegroups(account_id, {r.timegroup_id for r in rows if r.timegroup_id}, field + ".timegroup_id")
    changed: set[int] = set()
    if replace:
        keep = [r.target_id for r in rows]
        where = Tier.queue == queue_id
        if keep:
            gone = {t.user_id for t in Tier.select(Tier.user).where(where)} - set(keep)
            for chunk in _chunks(gone):
                changed |= _delete_tiers(where & Tier.user.in_(chunk))
        else:
            changed |= _delete_tiers(where)
    specs = [_Spec(queue_id, r.target_id, r.mode, r.position, r.level, r.timegroup_id) for r in rows]
    return changed | _upsert(account_id, specs)


def write_user_queues(account_id: int, user: User, rows: list[Membership], *, replace: bool,
                      pending: Pending, field: str = "queue_perms") -> None:
    """An agent's memberships from the user side; runs inside the caller's transaction.

    Used by the user service too, so `queue_perms` on PUT /api/user and
    /api/user/{id}/queues are one code path.
    """
    _check_rows(rows, field)
    if rows:
        if not user.is_agent:
            raise ServiceError(400, f"{field}: user {user.id} is not an agent (set is_agent first)")
        _check_queues(account_id, {r.target_id for r in rows}, field)
        _check_timegroups(account_id, {r.timegroup_id for r in rows if r.timegroup_id}, field + ".timegroup_id")
    changed: set[int] = set()
    if replace:
        where = Tier.user == user.id
        keep = {r.target_id for r in rows}
        gone = [t.queue_id for t in Tier.select(Tier.queue).where(where) if t.queue_id not in keep]
        if gone:
            changed |= _delete_tiers(where & Tier.queue.in_(gone))
    specs = [_Spec(r.target_id, user.id, r.mode, r.position, r.level, r.timegroup_id) for r in rows]
    changed |= _upsert(account_id, specs)
    pending.add("tier", account_id, changed)


# --- queue writes --------------------------------------------------------------------------------


def _check_name(account_id: int, name: str, exclude_id: int | None = None) -> None:
    if Queue.name_taken(account_id, name, exclude_id):
        raise ServiceError(409, f"name: a queue named {name!r} already exists")


def _save(queue: Queue, *, insert: bool) -> None:
    try:
        with db.atomic():  # a savepoint: a lost race on the unique name is a 409, not a broken transaction
            queue.save(force_insert=insert)
    except peewee.IntegrityError:
        raise ServiceError(409, f"name: a queue named {queue.name!r} already exists") from None


def _check_references(account_id: int, fields: dict[str, Any], queue_id: int | None = None) -> None:
    """Media ids, the site and exits name what the account has (inside the writing transaction)."""
    named = {f: fields[f] for f in library.QUEUE_MEDIA_FIELDS if f in fields}
    if "audio_playback" in fields:
        playback = fields["audio_playback"] or {}
        playlist = playback.get("playlist") if isinstance(playback, dict) else None
        if playlist is not None:
            if (not isinstance(playlist, list) or len(playlist) > library.PLAYLIST_MAX
                    or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in playlist)):
                raise ServiceError(400, f"audio_playback.playlist: a list of up to {library.PLAYLIST_MAX} media ids")
            named["audio_playback.playlist"] = playlist
    library.check_ids(account_id, named)
    if fields.get("site_id"):
        from engine.directory import sites

        sites.check_ids(account_id, "site_id", [fields["site_id"]])
    if "exits" in fields:
        fields["exits"] = exits.validate(account_id, fields["exits"], queue_id)


def create_queue(account_id: int, fields: dict[str, Any], members: list[Membership] | None = None) -> Queue:
    """A new queue; `members` (when given) become its agents."""
    pending = Pending()
    with db.atomic():
        _check_name(account_id, fields["name"])
        _check_references(account_id, fields)
        queue = Queue(account=account_id, **fields)
        _save(queue, insert=True)
        pending.add("queue", account_id, [queue.id])
        if members:
            pending.add("tier", account_id, _write_queue_members(account_id, queue.id, members, replace=True))
    pending.send()
    return queue


def update_queue(account_id: int, queue_id: int, fields: dict[str, Any],
                 members: list[Membership] | None = None) -> Queue:
    """Change only the given fields; `members` (when given) replace the queue's agents."""
    pending = Pending()
    with db.atomic():
        queue = get_queue(account_id, queue_id)
        if "name" in fields and fields["name"] != queue.name:
            _check_name(account_id, fields["name"], exclude_id=queue.id)
        _check_references(account_id, fields, queue.id)
        changed = {k: v for k, v in fields.items() if getattr(queue, k) != v}
        if changed:
            for name, value in changed.items():
                setattr(queue, name, value)
            _save(queue, insert=False)
            pending.add("queue", account_id, [queue.id])
        if members is not None:
            pending.add("tier", account_id, _write_queue_members(account_id, queue.id, members, replace=True))
    pending.send()
    return queue


def delete_queue(account_id: int, queue_id: int) -> None:
    """Delete a queue with its tiers and the extensions and DIDs that route to it, in one transaction."""
    pending = Pending()
    with db.atomic():
        queue = get_queue(account_id, queue_id)
        # Explicit rather than trusting ON DELETE CASCADE, which SQLite applies only with foreign_keys on,
        # and so the engine hears which agents lost a tier.
        pending.add("tier", account_id, _delete_tiers(Tier.queue == queue.id))
        routed = (Extension.target_type == "queue") & (Extension.target_id == queue.id)
        pending.add("extension", account_id, [e.id for e in Extension.select(Extension.id).where(routed)])
        pending.add("did", account_id, [d.id for d in Did.select(Did.id).where(
            (Did.target_type == "queue") & (Did.target_id == queue.id))])
        extensions.delete_for("queue", [queue.id])
        queue.delete_instance()
        pending.add("queue", account_id, [queue_id])
    pending.send()


# --- membership from the queue side --------------------------------------------------------------


def queue_members(account_id: int, queue_id: int) -> list[Tier]:
    queue = get_queue(account_id, queue_id)
    return tiers_of_queues([queue.id])[queue.id]


def set_queue_members(account_id: int, queue_id: int, rows: list[Membership], *, replace: bool) -> list[Tier]:
    """Add or update (`replace=False`) or replace all (`replace=True`) of a queue's agents."""
    pending = Pending()
    with db.atomic():
        queue = get_queue(account_id, queue_id)
        try:
            with db.atomic():
                changed = _write_queue_members(account_id, queue.id, rows, replace=replace)
        except peewee.IntegrityError:
            raise ServiceError(409, "Membership changed concurrently: try again") from None
        pending.add("tier", account_id, changed)
    pending.send()
    return tiers_of_queues([queue_id])[queue_id]


def remove_queue_members(account_id: int, queue_id: int, user_ids: list[int]) -> list[Tier]:
    """Remove agents from a queue; ids of users who are not members are ignored."""
    pending = Pending()
    with db.atomic():
        queue = get_queue(account_id, queue_id)
        ids = set(user_ids)
        _check_users_exist(account_id, ids, "ids")
        for chunk in _chunks(ids):
            pending.add("tier", account_id, _delete_tiers((Tier.queue == queue.id) & Tier.user.in_(chunk)))
    pending.send()
    return tiers_of_queues([queue_id])[queue_id]


# --- membership from the user side ---------------------------------------------------------------


def _get_user(account_id: int, user_id: int) -> User:
    user = User.get_or_none((User.id == user_id) & (User.account == account_id))
    if user is None:
        raise ServiceError(404, f"User {user_id} not found")
    return user


def user_queues(account_id: int, user_id: int) -> list[Tier]:
    user = _get_user(account_id, user_id)
    return tiers_of_users([user.id])[user.id]


def set_user_queues(account_id: int, user_id: int, rows: list[Membership], *, replace: bool) -> list[Tier]:
    pending = Pending()
    with db.atomic():
        user = _get_user(account_id, user_id)
        try:
            with db.atomic():
                write_user_queues(account_id, user, rows, replace=replace, pending=pending, field="queues")
        except peewee.IntegrityError:
            raise ServiceError(409, "Membership changed concurrently: try again") from None
    pending.send()
    return tiers_of_users([user_id])[user_id]


def remove_user_queues(account_id: int, user_id: int, queue_ids: list[int]) -> list[Tier]:
    """Remove an agent from queues; queues it is not a member of are ignored."""
    pending = Pending()
    with db.atomic():
        user = _get_user(account_id, user_id)
        ids = set(queue_ids)
        _check_queues(account_id, ids, "ids")
        for chunk in _chunks(ids):
            pending.add("tier", account_id, _delete_tiers((Tier.user == user.id) & Tier.queue.in_(chunk)))
    pending.send()
    return tiers_of_users([user_id])[user_id]


def drop_user_tiers(account_id: int, user_id: int, pending: Pending) -> None:
    """A deleted user's memberships, removed explicitly in the caller's transaction.

    ON DELETE CASCADE would do it too, but SQLite applies it only with the
    foreign_keys pragma on; this way the engine also hears of it.
    """
    pending.add("tier", account_id, _delete_tiers(Tier.user == user_id))
