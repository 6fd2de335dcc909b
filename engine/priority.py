"""`serve --realtime`: switchdesk's event loops at the lowest real-time CPU priority.

FreeSWITCH runs its threads at real-time priority (SCHED_FIFO) wherever it may. On a busy box a normal
process then waits for a CPU whenever FreeSWITCH's threads want one, and switchdesk is in FreeSWITCH's
own call path: the SIP thread that asks xml_curl for a directory or dialplan answer waits for switchdesk,
which waits behind that switch's media threads (a priority inversion). In the call storms of
bench/call_storm.py switchdesk's loop spent more time runnable-but-waiting than running, and that wait,
not its own work, was most of its answers' p99.

Only the thread that calls `apply` (the event loop's) is raised, to SCHED_RR priority 1: above every
normal process, below FreeSWITCH's timer and media threads (which use higher real-time priorities),
round-robin with its priority-1 ones. SCHED_RESET_ON_FORK makes every thread and process it starts
afterwards begin at normal priority: gevent's threadpool, where the long jobs run (media conversion,
lead imports, statistics, password hashing), never holds a CPU at real-time priority, and neither do
the worker processes until they raise their own loop. The kernel keeps 5 % of each second for normal
processes (sched_rt_runtime_us), so even a loop gone wrong cannot starve the box.

It needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least 1 (systemd: `LimitRTPRIO=1`, as the shipped unit
has); without, switchdesk says so once and serves at normal priority.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger("switchdesk")

PRIORITY = 1  # the lowest real-time priority: FreeSWITCH's own media and timer threads stay above


def apply(enabled: bool) -> bool:
    """Raise the calling thread to SCHED_RR `PRIORITY`; True if it now runs there."""
    if not enabled:
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(PRIORITY))
    except (AttributeError, OSError) as exc:  # PermissionError without CAP_SYS_NICE or RLIMIT_RTPRIO
        log.warning("--realtime: the event loop of pid %d stays at normal priority (%s); it needs CAP_SYS_NICE "
                    "or RLIMIT_RTPRIO >= %d (systemd: LimitRTPRIO=%d, RestrictRealtime=no)",
                    os.getpid(), getattr(exc, "strerror", None) or exc, PRIORITY, PRIORITY)
        return False
    log.info("--realtime: the event loop of pid %d runs at real-time priority (SCHED_RR %d); the threads "
             "and processes it starts do not", os.getpid(), PRIORITY)
    return True


def is_realtime(pid: int = 0) -> bool:
    """Whether `pid`'s main thread (0: the calling thread) is at a real-time policy."""
    policy = os.sched_getscheduler(pid) & ~os.SCHED_RESET_ON_FORK
    return policy in (os.SCHED_RR, os.SCHED_FIFO)
