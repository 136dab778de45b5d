"""Run coordination in Redis: the lease that makes a run exclusive, cancel flags, and the reaper that
takes up runs whose worker died.

Why a lease and not Celery alone: Celery with Redis delivers a message at least once (a redelivery
after `visibility_timeout`, a requeue after a lost worker, a resubmission). A run must execute at most
once at a time and never again after it ended, so every execution first takes the run's lease: a Redis
key set only if absent, with a TTL, renewed by a heartbeat thread while the run trains. A second
delivery finds the lease taken and ends without touching the run.

Why a reaper: when a worker dies (SIGKILL, OOM, container restart) its lease expires within the lease
TTL (COLORMAMBA_LEASE_TTL) but its message may be gone or held for hours by the visibility timeout. Every
worker runs a reaper thread; once per reaper interval (COLORMAMBA_REAP_INTERVAL) one of them (a Redis
lock elects it) takes each started, unfinished run without a lease: the caller's `requeue` marks it
`lost` and queues it again. The new execution resumes from the last checkpoint. Bound: a dead worker's
run is queued again within TTL + interval (defaults 30 s + 10 s) and starts when a GPU worker is free.
Once per expiry: taking an orphan clears its `started` flag, which only the next execution sets again,
so a run that waits for a free worker is queued once, not once per round.

Keys (prefix `colormamba:`): `lease:<study>/<run>` (token), `active` (set of queued or running runs),
`started:<study>/<run>` (an execution took the run up and has not been reaped), `reaping:<study>/<run>`
(a reaper is queuing it again), `cancel:<study>/<run>` (flag), `error:<study>/<run>` (why the last
execution stopped, for the reaper's `lost` reason), `reaper` (the reaper's election lock).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from colormamba.env import redact_url
from services.settings import REDIS_URL, settings

log = logging.getLogger(__name__)

PREFIX = "colormamba:"
CANCEL_TTL_S = 30 * 24 * 3600
ERROR_TTL_S = 7 * 24 * 3600

_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
# a submission claims a run: active unless it was already, and then its cancel flag is cleared
_QUEUE = "if redis.call('sadd', KEYS[1], ARGV[1]) == 1 then redis.call('del', KEYS[2]) return 1 end return 0"
# the reaper takes an orphan in hand: while it is started, has no lease and no other reaper has it
_TAKE = (
    "if redis.call('exists', KEYS[1]) == 1 and redis.call('exists', KEYS[2]) == 0 then "
    "return redis.call('set', KEYS[3], '1', 'NX', 'PX', ARGV[1]) end return false"
)
# ... and, once it is queued again, clears its started flag, unless an execution took the lease meanwhile
_CLAIM = "if redis.call('exists', KEYS[2]) == 0 then return redis.call('del', KEYS[1]) end return 0"


class LeaseLost(RuntimeError):
    """This worker no longer owns the run (its lease expired and may be someone else's now)."""


class BrokerUnreachable(RuntimeError):
    """Redis does not answer, or refuses the password; the message names the URL (without its password)
    and what to do."""


def connect(url: str) -> redis.Redis:
    """A Redis client with short timeouts (a hung broker must end in an error, not a hang), pinged once."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10, health_check_interval=30)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise BrokerUnreachable(
            f"Redis at {redact_url(url)}: authentication failed ({exc}); the password in {REDIS_URL.name} "
            "must be the server's (compose: COLORMAMBA_REDIS_PASSWORD)"
        ) from None
    except redis.RedisError as exc:
        raise BrokerUnreachable(
            f"Redis unreachable at {redact_url(url)} ({exc}). Start the stack (`docker compose up -d`), set "
            f"{REDIS_URL.name} to the broker's address, or run the study on this machine with --local."
        ) from None
    return client


def run_key(study: str, run: str) -> str:
    return f"{study}/{run}"


class Lease:
    """Exclusive ownership of one run, kept alive by a heartbeat thread until `release`.

    `lost` becomes set when a renewal finds the lease gone or Redis unreachable for a whole TTL: from
    then on another worker may own the run, so the holder must stop without writing anything.

    Why `confirm` as well as the heartbeat: the heartbeat notices a takeover up to a third of a TTL late,
    and a worker that wrote its record in that gap would put `running` over the `lost` the reaper wrote
    (or an old checkpoint over the new owner's). Every write of a leased execution goes through
    `confirm` first (services.exclusive.FencedStore): the lease renewed and found ours in one Redis call,
    or, with Redis unreachable, still ours by our own clock for `write_margin` more, the time the write
    has to land before the reaper could see the run without a lease. The margin trades two risks: a
    Redis outage stops a run once less than the margin of its lease is left (a shorter margin rides out
    longer outages), and a write slower than the margin could land after the lease expired. A status
    write takes milliseconds; a checkpoint's upload may take longer, but what a late one can overwrite is
    the new owner's resume point from the same epoch, which it recomputes identically (resumes are
    bit-exact), so a few seconds suffice.
    """

    WRITE_MARGIN_S = 3.0  # at most; a third of the TTL when that is less

    def __init__(self, client: redis.Redis, key: str, token: str, ttl: float) -> None:
        self.client, self.key, self.token, self.ttl = client, key, token, ttl
        self.run = key.removeprefix(PREFIX + "lease:")
        self.lost = threading.Event()
        self.reason = ""  # why `lost` was set: what the holder's LeaseLost message says
        self.valid_until = time.monotonic() + ttl  # our lease cannot have expired before this instant
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease {key}", daemon=True)
        self._thread.start()

    def _renew(self) -> bool:
        """One renewal; True while the lease is ours (it then lives a TTL from the call's start)."""
        asked = time.monotonic()
        if not self.client.eval(_RENEW, 1, self.key, self.token, int(self.ttl * 1000)):
            return False
        self.valid_until = max(self.valid_until, asked + self.ttl)
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self._renew():
                    self._lose("its lease expired or was taken over; another worker may own the run now")
                    return
            except redis.RedisError as exc:
                log.warning("lease %s: renewal failed (%s)", self.key, exc)
                if time.monotonic() >= self.valid_until:
                    self._lose(self._unreachable(exc))
                    return

    def _unreachable(self, exc: Exception) -> str:
        down = self.ttl - (self.valid_until - time.monotonic())
        return (
            f"Redis unreachable for {down:.0f} s, too close to the lease's TTL ({self.ttl:g} s) to write, so "
            f"another worker may own the run now (last error: {exc}); once Redis answers, the reaper queues "
            "the run again and it resumes from its last checkpoint"
        )

    def _lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            log.error("lease %s lost: %s", self.key, reason)
            self.lost.set()

    def check(self) -> None:
        """Raise LeaseLost if the heartbeat found the lease gone (no Redis call)."""
        if self.lost.is_set():
            raise LeaseLost(f"{self.run}: stopped without recording anything: {self.reason}")

    def confirm(self) -> None:
        """Before a write: raise LeaseLost unless the lease is ours now (renewed in this call) or, with
        Redis unreachable, surely ours for `write_margin` seconds more."""
        self.check()
        try:
            if not self._renew():
                self._lose("its lease expired or was taken over; another worker may own the run now")
        except redis.RedisError as exc:
            if self.valid_until - time.monotonic() < self.write_margin:
                self._lose(self._unreachable(exc))
        self.check()

    @property
    def write_margin(self) -> float:
        """Seconds of the lease that must be left for a write made while Redis is unreachable."""
        return min(self.ttl / 3, self.WRITE_MARGIN_S)

    def release(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError as exc:  # it expires by itself within the TTL
            log.warning("lease %s: release failed (%s)", self.key, exc)


class Coordinator:
    """The Redis side of runs: leases, the active set, cancel flags."""

    def __init__(self, client: redis.Redis, lease_ttl: float | None = None) -> None:
        self.client = client
        self.lease_ttl = settings().lease_ttl_s if lease_ttl is None else lease_ttl

    def acquire(self, key: str, owner: str) -> Lease | None:
        token = f"{owner}:{uuid.uuid4().hex}"
        if not self.client.set(PREFIX + "lease:" + key, token, nx=True, px=int(self.lease_ttl * 1000)):
            return None
        return Lease(self.client, PREFIX + "lease:" + key, token, self.lease_ttl)

    def wait_for(self, key: str, owner: str, timeout: float, poll: float = 0.5) -> Lease:
        """`acquire`, waiting up to `timeout` seconds for the holder to release (or die: a lease outlives a
        killed holder by one TTL at most, where a lock with a fixed timeout would block for all of it).
        TimeoutError when it stays taken."""
        deadline = time.monotonic() + timeout
        while (lease := self.acquire(key, owner)) is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{key}: still held by {self.holder(key)} after {timeout:.0f} s")
            time.sleep(poll)
        return lease

    def holder(self, key: str) -> str | None:
        value = self.client.get(PREFIX + "lease:" + key)
        return value.decode() if value is not None else None

    def mark_queued(self, key: str) -> bool:
        """A submission claims the run to queue it: True when the run was not active (nobody queued it
        since it last ended), and it is now active and no longer cancelled; False when it is active
        already (queued, running or waiting for the reaper: a message for it is out), which this leaves
        alone. One Redis call, so of two submissions racing for a run exactly one sends it."""
        return bool(self.client.eval(_QUEUE, 2, PREFIX + "active", PREFIX + "cancel:" + key, key))

    def unmark_queued(self, key: str) -> None:
        """Undo `mark_queued` when the message could not be sent (a later submission may send it)."""
        self.client.srem(PREFIX + "active", key)

    def mark_started(self, key: str) -> None:
        """An execution took the run up: from now on, the run without a lease is the reaper's."""
        pipe = self.client.pipeline()
        pipe.set(PREFIX + "started:" + key, "1")
        pipe.delete(PREFIX + "error:" + key)
        pipe.execute()

    def mark_done(self, key: str) -> None:
        """The run reached a state recorded in the store: nothing to reap."""
        pipe = self.client.pipeline()
        pipe.srem(PREFIX + "active", key)
        pipe.delete(PREFIX + "started:" + key, PREFIX + "error:" + key)
        pipe.execute()

    def record_error(self, key: str, reason: str) -> None:
        """Why an execution stopped without recording an outcome (its store failed, say): the reaper puts
        it in the run's `lost` status, where `submit.py status` shows it."""
        self.client.set(PREFIX + "error:" + key, reason, ex=ERROR_TTL_S)

    def last_error(self, key: str) -> str | None:
        value = self.client.get(PREFIX + "error:" + key)
        return value.decode(errors="replace") if value is not None else None

    def request_cancel(self, key: str) -> None:
        self.client.set(PREFIX + "cancel:" + key, "1", ex=CANCEL_TTL_S)

    def cancel_requested(self, key: str) -> bool:
        return bool(self.client.exists(PREFIX + "cancel:" + key))

    def active(self) -> list[str]:
        return sorted(m.decode() for m in self.client.smembers(PREFIX + "active"))

    def orphans(self) -> list[str]:
        """Active runs that were taken up once and have no lease now: their worker died."""
        out = []
        for key in self.active():
            if self.client.exists(PREFIX + "started:" + key) and not self.client.exists(
                PREFIX + "lease:" + key
            ):
                out.append(key)
        return out

    def reap(self, requeue: Callable[[str, str], None]) -> list[str]:
        """Hand each orphaned run to `requeue(study, run)` once per expiry of its lease.

        Crash-safe: an orphan is first taken in hand (a `reaping:` key, only while it is started and has
        no lease, and for two lease TTLs: the time a requeue may spend retrying the store), and its
        `started` flag is cleared only once `requeue` has returned (unless an execution took the lease
        meanwhile); the next execution sets it again. A reaper that dies in between (its worker killed,
        say) leaves the flag, and the run is taken again when the `reaping:` key expires, never lost.
        If `requeue` fails, the run is left for the next round."""
        done = []
        for key in self.orphans():
            started, lease = PREFIX + "started:" + key, PREFIX + "lease:" + key
            reaping = PREFIX + "reaping:" + key
            if not self.client.eval(_TAKE, 3, started, lease, reaping, int(2 * self.lease_ttl * 1000)):
                continue  # another reaper has it in hand, or a worker took it up or ended it, meanwhile
            study, run = key.split("/", 1)
            log.warning("reaper: %s has no live worker; queuing it again (it resumes from its checkpoint)",
                        key)  # fmt: skip
            try:
                requeue(study, run)
            except Exception:
                log.exception("reaper: could not queue %s again; trying in the next round", key)
                self.client.delete(reaping)
                continue
            self.client.eval(_CLAIM, 2, started, lease)
            self.client.delete(reaping)
            done.append(key)
        return done


def start_reaper(client: redis.Redis, requeue: Callable[[str, str], None], interval: float | None = None,
                 heartbeat: str | None = None) -> threading.Event:  # fmt: skip
    """A daemon thread that reaps every `interval` seconds while it holds the election lock; returns the
    event that stops it.

    `heartbeat`: a file touched at start and after every election round that reached Redis, so a
    container healthcheck can test liveness with `find FILE -mmin -2` instead of starting a Celery client.
    """
    interval = settings().reap_interval_s if interval is None else interval
    stop = threading.Event()
    coord = Coordinator(client)
    me = uuid.uuid4().hex

    def beat() -> None:
        if heartbeat:
            try:
                Path(heartbeat).touch()
            except OSError as exc:
                log.warning("reaper: cannot touch heartbeat file %s (%s)", heartbeat, exc)

    def loop() -> None:
        while not stop.wait(interval):
            try:
                elected = client.set(PREFIX + "reaper", me, nx=True, px=int(interval * 1000 * 0.9))
                beat()
                if elected:
                    coord.reap(requeue)
            except redis.RedisError as exc:
                log.warning("reaper: Redis error (%s); trying again in %.0f s", exc, interval)
            except Exception:
                log.exception("reaper: unexpected error")

    beat()  # the caller just reached Redis (services.coord.connect pings it)
    threading.Thread(target=loop, name="colormamba reaper", daemon=True).start()
    return stop
