#!/usr/bin/env python3
"""The chaos soak (issue 22): a tiny study of 12 runs on real servers (redis-server, SeaweedFS S3, Celery
workers, `jobs/submit.py`; 127.0.0.1 only, bounded in time) while a seeded schedule of faults hits it, and
the same study undisturbed in the same invocation as the baseline.

    python benchmarks/chaos_soak.py --seed 1 [--runs 12] [--short] [--out FILE.jsonl] [--keep]

The faults (one at a time, in a seeded order, a few seconds apart; `--short`: fewer, and shorter budgets):
- kill: SIGKILL to a GPU worker's whole process group while a run trains mid-epoch (`mid_epoch`), or just
  after an epoch ended with its checkpoint not yet reported stored or while it writes its results
  (`mid_upload`); the worker is started again (same name) a few seconds later, as a container restart.
- redis_stop / s3_stop: the server stopped for 20-60 s and started again on its ports, keeping its data
  (Redis saves its keys on the way down, as compose's appendonly Redis keeps them): once for less than the
  budget (Redis: two thirds of the lease TTL, the renewals' slack; S3: COLORMAMBA_S3_RETRY_SECONDS), once
  for longer.
- cache_full: a third GPU worker joins with its dataset cache on a small tmpfs, filled up (skipped, with a
  line on stderr, where `mount` is refused); freed a few seconds later.
- aggregator_restart: SIGKILL to the aggregator, started again a few seconds later.
- duplicate_submit: `submit.py SPEC --yes` again while runs are queued or running.

It holds when: every run ends `succeeded`, recorded by one execution (one attempt seen `succeeded`, at most
one task logged as having succeeded it) and never left again (`finished_once`); the report and
every run's per-image files equal the baseline's bit for bit, timings and worker names aside
(`report_equal`); no run shows `running` while no live worker holds its lease for longer than the
reaper period, lease TTL + reaper interval, counting only time both servers were up (`status_truthful`);
the run and aggregate queues and the unacknowledged set are empty at the end (`queue_empty`); every fault
was injected while runs were still active (`schedule_complete`); and the study ended within the time
bound (`finished_in_time`). Exit status 0 when it holds, 1 when not.

Prints JSON lines (also written to --out): one per fault (`row: fault`: t in seconds since the chaos
study was submitted, kind, what it hit, recovery_s: until every run it hit trained again or ended), then
`row: summary` (runs, baseline and chaos wall times, faults by kind, epochs and steps retrained, longest
recovery, each check with its evidence, holds). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import redis  # noqa: E402
import yaml  # noqa: E402

from colormamba.storage import ObjectNotFound, RunLocation, report_prefix  # noqa: E402
from services.runs import read_status  # noqa: E402
from tests.support.servers import (  # noqa: E402
    RedisServer,
    SeaweedS3,
    Worker,
    queued_tasks,
    stop_workers,
    unacked_task_ids,
)
from tests.support.stack import Stack, make_stack, s3_from_env_with  # noqa: E402
from tests.support.submit import submit  # noqa: E402

STUDY = "chaos"
FINAL = ("succeeded", "failed")
TRAINING_PHASES = ("train", "validate", "epoch_end", "evaluate")
POLL_S = 0.5  # the observer's period
INF = float("inf")  # a fault's recovery when a run it hit never trained again
# how a run task ended, as Celery logs it: "Task services.tasks.run[id] succeeded in 1.2s: {'state': 'X', ..."
# (the run's state, or "skipped", "handed back"...) or "... raised expected: RunFailed(...)"
RUN_TASK_ENDED = re.compile(r"Task services\.tasks\.run\[[^\]]*\] (?:succeeded in [^:]*: \{'state': '([^']*)'"
                            r"|(raised \w+))")


def run_task_ends(log: str) -> list[str]:
    """How each run task in a worker's log ended: the state it returned, or `raised expected|unexpected`."""
    return [state or raised for state, raised in RUN_TASK_ENDED.findall(log)]


# fields that differ between two correct executions of the same study: when, how long and where it ran
# (provenance_differences: compared through each run's provenance fields; dirty_runs: the runs whose
# working tree had uncommitted changes, which a commit made between the two studies changes)
VOLATILE = frozenset({"generated_at", "train_seconds", "seconds", "worker", "git_commit", "git_dirty",
                      "provenance_differences", "dirty_runs"})
RUN_FILES = ("metrics.json", "per_image.csv", "trivial_per_image.csv")  # and samples/*: compared as bytes


@dataclass(frozen=True)
class Profile:
    """A soak's size: the study, the coordination budgets, and how many faults of each kind (outage
    durations are ranges in seconds, drawn by the seed)."""

    name: str
    runs: int
    epochs: int
    n_train: int
    lease_ttl: float
    reap_s: float
    s3_retry_s: float
    visibility_s: int
    kills: tuple[str, ...]
    redis_outages: tuple[tuple[float, float], ...]
    s3_outages: tuple[tuple[float, float], ...]
    cache_full: int = 1
    aggregator_restarts: int = 1
    duplicates: int = 2
    gap_s: tuple[float, float] = (1.0, 4.0)
    restart_delay_s: tuple[float, float] = (2.0, 8.0)
    timeout_s: float = 1500.0

    @property
    def reaper_period(self) -> float:
        return self.lease_ttl + self.reap_s


# Redis: a lease renewed every TTL/3 survives an outage shorter than 2/3 TTL (24 s of 36); S3: operations
# retry for 40 s (SeaweedFS takes about 5 s more to serve again after the planned outage). Each gets one
# outage under its budget and one over it.
FULL = Profile("full", runs=12, epochs=4, n_train=8, lease_ttl=36, reap_s=3, s3_retry_s=40, visibility_s=60,
               kills=("mid_epoch", "mid_upload", "mid_epoch", "mid_upload"),
               redis_outages=((20, 22), (40, 60)), s3_outages=((20, 24), (50, 60)))  # fmt: skip
# SHORT's runs train 8 epochs: with 4, a quiet machine ended every run before the last kills were due
SHORT = Profile("short", runs=4, epochs=8, n_train=8, lease_ttl=6, reap_s=2, s3_retry_s=12, visibility_s=30,
                kills=("mid_epoch", "mid_upload"), redis_outages=((2, 3), (10, 12)),
                s3_outages=((2, 3), (16, 18)), duplicates=1, gap_s=(1, 2), restart_delay_s=(1, 3),
                timeout_s=600)  # fmt: skip


@dataclass
class Fault:
    kind: str
    params: dict[str, Any]
    t: float | None = None  # seconds since submission, when injected
    t_end: float | None = None  # when the fault ended (the kill; the server back)
    hit: dict[str, Any] = field(default_factory=dict)  # what it hit: worker, run, phase seen...
    affected: list[str] = field(default_factory=list)  # runs it interrupted
    affected_attempts: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None
    recovery_s: float | None = None


def schedule(profile: Profile, seed: int) -> list[Fault]:
    """The faults of a soak in a seeded order, with their drawn durations."""
    rng = random.Random(seed)
    faults = [Fault("kill", {"phase": p}) for p in profile.kills]
    for kind, ranges in (("redis_stop", profile.redis_outages), ("s3_stop", profile.s3_outages)):
        for lo, hi in ranges:
            faults.append(Fault(kind, {"seconds": round(rng.uniform(lo, hi), 1)}))
    for _ in range(profile.cache_full):
        faults.append(Fault("cache_full", {"hold_s": round(rng.uniform(6, 12), 1)}))
    faults += [Fault("aggregator_restart", {}) for _ in range(profile.aggregator_restarts)]
    faults += [Fault("duplicate_submit", {}) for _ in range(profile.duplicates)]
    rng.shuffle(faults)
    # the full cache first: a worker joining late may find no run left in the queue to take
    faults.sort(key=lambda f: f.kind != "cache_full")
    for f in faults:
        f.params["gap_s"] = round(rng.uniform(*profile.gap_s), 1)
        if f.kind in ("kill", "aggregator_restart"):
            f.params["restart_delay_s"] = round(rng.uniform(*profile.restart_delay_s), 1)
    return faults


def study_spec(profile: Profile, runs: int) -> dict[str, Any]:
    """`runs` runs: two loss configurations x runs/2 seeds of the tiny preset on generated 16x16 scenes, 4
    steps an epoch (one generator update each: a step of the tiny preset costs about 0.6 s of one core)."""
    return {
        "study": STUDY,
        "description": "chaos soak: tiny preset, generated 16x16 scenes",
        "dataset": {"synthetic": {"n_train": profile.n_train, "n_val": 4, "n_test": 4, "size": 16,
                                  "seed": 0}},
        "model": "tiny",
        "seeds": list(range(runs // 2)),
        "baseline": "original",
        "recipe": {"epochs": profile.epochs, "batch_size": 2, "lr": 1e-3, "lr_step_epochs": 2,
                   "generator_steps_per_batch": 1, "augment": {"enabled": False}},
        "evaluation": {"protocol": "colormamba", "select_split": "val", "report_split": "test",
                       "checkpoint": "best", "num_samples": 2},
        "configurations": {"original": {"loss": "original"}, "histogram": {"loss": "histogram"}},
    }  # fmt: skip


def say(message: str) -> None:
    print(f"[chaos_soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# a stack of workers that can be killed and started again under the same name


class Crew:
    """The stack's workers by name, under a restart policy like compose's `restart: unless-stopped`: a
    worker that exits on its own (its start-up checks fail while a server is down, say) is started again
    after RESTART_BACKOFF_S; a killed one only when the schedule restarts it. A restart keeps the name and
    appends to the same log."""

    RESTART_BACKOFF_S = 10.0

    def __init__(self, stack: Stack, profile: Profile) -> None:
        self.stack, self.profile = stack, profile
        self.workers: dict[str, Worker] = {}
        self.extra_env: dict[str, dict[str, str]] = {}
        self.wanted: set[str] = set()
        self.exits: list[dict[str, Any]] = []  # workers that exited on their own: name, status, when
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        threading.Thread(target=self._supervise, name="restart policy", daemon=True).start()

    def start(self, name: str, queues: str = "gpu", env: dict[str, str] | None = None) -> Worker:
        with self.lock:
            if env is not None:
                self.extra_env[name] = env
            env = {**self.stack.env, **self.extra_env.get(name, {})}
            w = Worker(name, queues, env, self.stack.tmp / f"{name}.log")
            self.workers[name] = w.start()
            self.wanted.add(name)
            return w

    def restart(self, name: str) -> Worker:
        return self.start(name, self.workers[name].queues)

    def kill(self, name: str) -> None:
        with self.lock:
            self.wanted.discard(name)
            self.workers[name].kill()

    def _supervise(self) -> None:
        while not self.stopping.wait(self.RESTART_BACKOFF_S):
            with self.lock:
                for name in sorted(self.wanted):
                    proc = self.workers[name].proc
                    if proc is not None and proc.poll() is not None and not self.stopping.is_set():
                        self.exits.append({"worker": name, "exit": proc.returncode, "t": time.strftime("%T")})
                        self.restart(name)

    def stop_all(self) -> None:
        self.stopping.set()
        with self.lock:
            stop_workers(list(self.workers.values()))

    def logs(self) -> str:
        return "\n".join(w.log.read_text(errors="replace") for w in self.workers.values() if w.log.exists())


def configure(stack: Stack, profile: Profile, root: Path) -> None:
    """The profile's budgets; one TORCH_HOME for both studies (LPIPS's missing-weights note names it)."""
    stack.env |= {
        "TORCH_HOME": str(root / "torch_home"),
        "COLORMAMBA_LEASE_TTL": str(profile.lease_ttl),
        "COLORMAMBA_REAP_INTERVAL": str(profile.reap_s),
        "COLORMAMBA_STATUS_INTERVAL": "0.5",
        "COLORMAMBA_S3_RETRY_SECONDS": str(profile.s3_retry_s),
        "COLORMAMBA_VISIBILITY_TIMEOUT": str(profile.visibility_s),
    }


def shut_down_redis(server: RedisServer) -> None:
    """Stop Redis, saving its keys first (as the stack's appendonly Redis keeps them over a restart)."""
    with contextlib.suppress(redis.RedisError):  # the server hangs up as it goes
        redis.Redis.from_url(server.url, socket_timeout=5).shutdown(save=True)
    assert server.proc is not None
    server.proc.wait(20)


# ---------------------------------------------------------------------------------------------------
# the observer


def pid_alive(pid: int) -> bool:
    """A process that runs (not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def worker_of(status: dict[str, Any]) -> tuple[str, int | None]:
    """(worker name as its lease token names it, pool process id) of a status's `worker` field."""
    text = str(status.get("worker") or "")
    m = re.match(r"(.*) \(pid (\d+)\)$", text)
    return (m.group(1), int(m.group(2))) if m else (text, None)


class Observer(threading.Thread):
    """Reads every run's status.json and lease every POLL_S seconds; keeps each run's trace of changes and
    measures how long a run shows `running` with no live worker holding its lease (time counted only while
    both servers are up: during an outage nobody can act, and nothing can be read)."""

    def __init__(self, stack: Stack, runs: list[str], t0: float, limit_s: float) -> None:
        super().__init__(name="observer", daemon=True)
        self.runs, self.t0, self.limit_s = runs, t0, limit_s
        self.store = s3_from_env_with({**stack.env, "COLORMAMBA_S3_RETRY_SECONDS": "1"})
        self.redis = redis.Redis.from_url(stack.env["COLORMAMBA_REDIS_URL"], socket_timeout=1,
                                          socket_connect_timeout=1)  # fmt: skip
        self.latest: dict[str, dict[str, Any]] = {}
        self.trace: dict[str, list[dict[str, Any]]] = {r: [] for r in runs}
        self.unheld_s: dict[str, float] = {}
        self.violations: list[dict[str, Any]] = []
        self._reported: set[str] = set()  # runs whose current episode without a holder is recorded
        self.regressions: list[dict[str, Any]] = []
        self.down: set[str] = set()  # servers the driver has stopped
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def run(self) -> None:
        last = time.monotonic()
        while not self.stop.wait(POLL_S):
            step = time.monotonic() - last
            last = time.monotonic()
            try:
                self.poll(step)
            except Exception as exc:  # an observer that dies would make every check vacuous
                say(f"observer: {type(exc).__name__}: {exc}")

    def poll(self, step: float) -> None:
        if "s3" in self.down:
            return  # nothing can be shown; and no time counts
        statuses: dict[str, dict[str, Any] | None] = {}
        for run in self.runs:
            try:
                statuses[run] = read_status(self.store, STUDY, run)
            except Exception:
                return  # the store is unreachable: nothing is shown
        try:
            keys = [f"colormamba:lease:{STUDY}/{r}" for r in self.runs]
            leases = dict(zip(self.runs, self.redis.mget(keys), strict=True))
        except redis.RedisError:
            leases = None
        counting = not self.down and leases is not None
        with self.lock:
            for run, status in statuses.items():
                if status is not None:
                    self.record(run, status)
                    self.check_held(run, status, leases, step if counting else 0.0)

    def record(self, run: str, status: dict[str, Any]) -> None:
        before = self.latest.get(run)
        self.latest[run] = status
        if before is not None and before.get("state") in FINAL and status.get("state") != before.get("state"):
            self.regressions.append({"run": run, "t": self.now(), "from": before.get("state"),
                                     "to": status.get("state"), "worker": status.get("worker")})  # fmt: skip
        if before is None or before.get("updated_at") != status.get("updated_at") or before != status:
            self.trace[run].append({"t": self.now(), **{k: status.get(k) for k in (
                "state", "attempt", "phase", "epoch", "step", "steps", "worker", "checkpoint_saved_epoch",
                "resumed_from_epoch")}})  # fmt: skip

    def check_held(self, run: str, status: dict[str, Any], leases: dict[str, bytes | None] | None,
                   step: float) -> None:  # fmt: skip
        if status.get("state") != "running":
            self.unheld_s.pop(run, None)
            self._reported.discard(run)
            return
        name, pid = worker_of(status)
        held = pid is not None and pid_alive(pid)
        lease = None
        if held and leases is not None:
            lease = leases[run].decode() if leases[run] is not None else None
            held = lease is not None and lease.rsplit(":", 1)[0] == name
        if held:
            self.unheld_s.pop(run, None)
            self._reported.discard(run)
            return
        self.unheld_s[run] = self.unheld_s.get(run, 0.0) + step
        if self.unheld_s[run] > self.limit_s and run not in self._reported:
            self._reported.add(run)
            self.violations.append({
                "run": run, "t": self.now(), "shown": status.get("worker"), "phase": status.get("phase"),
                "pid_alive": pid is not None and pid_alive(pid), "lease": lease,
                "unheld_s": round(self.unheld_s[run], 1)})  # fmt: skip

    def running(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {r: s for r, s in self.latest.items() if s.get("state") == "running"}


# ---------------------------------------------------------------------------------------------------
# the faults


class Chaos:
    """Injects the faults of a schedule into a running chaos study."""

    def __init__(self, profile: Profile, crew: Crew, redis_server: RedisServer, s3: SeaweedS3,
                 observer: Observer, spec_path: Path) -> None:  # fmt: skip
        self.profile, self.crew, self.redis_server, self.s3 = profile, crew, redis_server, s3
        self.observer, self.spec_path = observer, spec_path
        self.store = observer.store
        self.mounts: list[Path] = []

    def active(self) -> bool:
        states = [s.get("state") for s in self.observer.latest.values()]
        return len(states) < len(self.observer.runs) or any(s not in FINAL for s in states)

    def inject(self, fault: Fault) -> None:
        time.sleep(fault.params["gap_s"])
        if not self.active():
            fault.skipped = "every run had ended"
            return
        fault.t = self.observer.now()
        getattr(self, fault.kind)(fault)
        if fault.t_end is None:
            fault.t_end = self.observer.now()
        say(f"fault {fault.kind} at {fault.t:.1f} s: {fault.hit or fault.params} {fault.skipped or ''}")

    def _affect(self, fault: Fault, runs: dict[str, dict[str, Any]]) -> None:
        fault.affected = sorted(runs)
        fault.affected_attempts = {r: int(s.get("attempt") or 0) for r, s in runs.items()}

    def _candidate(self, phase: str, timeout: float = 90) -> tuple[str, dict[str, Any]] | None:
        """A running run in `phase` (mid_epoch: training a step inside an epoch after the first
        checkpoint; mid_upload: an epoch ended and its checkpoint not yet reported stored, or writing its
        results), polled every 0.1 s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.observer.running():
                try:
                    s = read_status(self.store, STUDY, run)
                except Exception:
                    continue
                name, pid = worker_of(s or {})
                if not s or s.get("state") != "running" or not name.startswith(("gpu1@", "gpu2@")) or not (
                        pid and pid_alive(pid)):  # fmt: skip
                    continue  # another state, the cache-full worker's, or a dead worker's last word
                epoch, saved = int(s.get("epoch") or 0), int(s.get("checkpoint_saved_epoch") or 0)
                if phase == "mid_epoch" and s.get("phase") == "train" and saved >= 1 and 0 < int(
                        s.get("step") or 0) < int(s.get("steps") or 0):  # fmt: skip
                    return run, s
                if phase == "mid_upload" and (s.get("phase") == "evaluate" or (
                        s.get("phase") in ("epoch_end", "validate") and saved < epoch)):  # fmt: skip
                    return run, s
            time.sleep(0.1)
            if not self.active():
                return None
        return None

    def kill(self, fault: Fault) -> None:
        found = self._candidate(fault.params["phase"])
        if found is None:
            running = self.observer.running()
            if not running:
                fault.skipped = "no run was running"
                return
            run = next(iter(running))
            found = run, running[run]
            fault.hit["fallback"] = f"no run seen {fault.params['phase']} within 90 s"
        run, seen = found
        name = worker_of(seen)[0].split("@")[0]
        on_it = {r: s for r, s in self.observer.running().items() if worker_of(s)[0].split("@")[0] == name}
        self._affect(fault, {**on_it, run: seen})
        self.crew.kill(name)
        fault.t = self.observer.now()
        fault.hit |= {"worker": name, "run": run, **{k: seen.get(k) for k in (
            "phase", "epoch", "step", "steps", "checkpoint_saved_epoch", "attempt")}}  # fmt: skip
        time.sleep(fault.params["restart_delay_s"])
        self.crew.restart(name)
        fault.t_end = fault.t

    def _outage(self, fault: Fault, which: str, stop, start) -> None:
        self._affect(fault, self.observer.running())
        self.observer.down.add(which)
        began = time.monotonic()
        stop()
        time.sleep(fault.params["seconds"])
        try:
            start()
        finally:
            self.observer.down.discard(which)
        fault.hit = {"down_s": round(time.monotonic() - began, 1), "planned_s": fault.params["seconds"]}

    def redis_stop(self, fault: Fault) -> None:
        self._outage(fault, "redis", lambda: shut_down_redis(self.redis_server), self.redis_server.start)
        fault.hit["budget_s"] = round(self.profile.lease_ttl * 2 / 3, 1)

    def s3_stop(self, fault: Fault) -> None:
        self._outage(fault, "s3", self.s3.stop, lambda: self.s3.start(timeout=120))
        fault.hit["budget_s"] = self.profile.s3_retry_s

    def cache_full(self, fault: Fault) -> None:
        cache = self.crew.stack.tmp / "gpu3-cache"
        cache.mkdir(exist_ok=True)
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(cache)],
                               capture_output=True, text=True)  # fmt: skip
        if mount.returncode != 0:
            fault.skipped = f"mount refused: {mount.stderr.strip()}"
            print(f"chaos_soak: cache_full skipped: {fault.skipped}", file=sys.stderr, flush=True)
            return
        self.mounts.append(cache)
        filler = cache / "filler"
        with filler.open("wb") as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        gpu3 = self.crew.start("gpu3", env={"COLORMAMBA_DATA_CACHE": str(cache)})
        # until it has dealt with a run (a worker starts in tens of seconds on busy cores), then hold_s more
        deadline, hold_until = time.monotonic() + 180, None
        taken: dict[str, dict[str, Any]] = {}
        while time.monotonic() < (hold_until or deadline) and self.active():
            taken |= {r: s for r, s in self.observer.running().items() if worker_of(s)[0].startswith("gpu3@")}
            ended = run_task_ends(gpu3.log.read_text(errors="replace")) if gpu3.log.exists() else []
            if ended and hold_until is None:
                hold_until = time.monotonic() + fault.params["hold_s"]
            time.sleep(0.2)
        filler.unlink()
        self._affect(fault, taken)
        results = run_task_ends(gpu3.log.read_text(errors="replace"))
        fault.hit = {"worker": "gpu3", "runs_seen_on_it": sorted(taken), "its_run_tasks": results[:6],
                     "freed_after_s": round(self.observer.now() - fault.t, 1)}  # fmt: skip
        if not results:
            fault.skipped = "the full-cache worker took no run"

    def aggregator_restart(self, fault: Fault) -> None:
        agg = self.crew.workers["agg"]
        ready_before = agg.log.read_text(errors="replace").count(" ready.")
        self.crew.kill("agg")
        time.sleep(fault.params["restart_delay_s"])
        self.crew.restart("agg")
        fault.t_end = self.observer.now()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if agg.log.read_text(errors="replace").count(" ready.") > ready_before:
                fault.recovery_s = round(self.observer.now() - fault.t_end, 1)
                break
            time.sleep(0.2)
        fault.hit = {"worker": "agg"}

    def duplicate_submit(self, fault: Fault) -> None:
        out = submit(str(self.spec_path), "--yes", env=self.crew.stack.env)
        queued = re.search(r"queued (\d+) run\(s\)(?:, (\d+) running already)?", out.stdout)
        fault.hit = {"rc": out.returncode, "queued": int(queued.group(1)) if queued else None,
                     "running_already": int(queued.group(2) or 0) if queued else None}  # fmt: skip
        if out.returncode != 0:
            fault.hit["stderr"] = out.stderr.strip()[-300:]

    def unmount(self) -> None:
        for m in self.mounts:
            subprocess.run(["umount", "-l", str(m)], capture_output=True)


# ---------------------------------------------------------------------------------------------------
# recovery, work lost, and the comparison with the baseline


def recovery(fault: Fault, trace: dict[str, list[dict[str, Any]]]) -> float | None:
    """Seconds from the fault's end until every run it interrupted trained again (after a kill: in a new
    attempt) or ended (0 for a run that had ended by then: its last write landed during an outage, say);
    None when it interrupted none, inf when one never did."""
    if fault.recovery_s is not None or fault.t_end is None or not fault.affected:
        return fault.recovery_s
    worst = 0.0
    for run in fault.affected:
        since = fault.t if fault.kind == "cache_full" else fault.t_end
        before = [e for e in trace[run] if e["t"] <= since]
        back = since if before and before[-1]["state"] in FINAL else None
        for e in trace[run]:
            if back is not None:
                break
            if e["t"] <= since:
                continue
            again = e["state"] == "running" and e["phase"] in TRAINING_PHASES
            if fault.kind == "kill":
                again = again and int(e["attempt"] or 0) > fault.affected_attempts.get(run, 0)
            if fault.kind == "cache_full":
                again = again and not str(e["worker"]).startswith("gpu3@")
            if again or e["state"] in FINAL:
                back = e["t"]
                break
        if back is None:
            return INF
        worst = max(worst, back - since)
    return round(worst, 1)


def work_lost(logs: str, trace: dict[str, list[dict[str, Any]]], epochs: int) -> dict[str, int]:
    """Epochs trained more than once (the workers' epoch lines over all attempts, less the study's
    epochs) and steps: those epochs' steps plus the steps an interrupted attempt was last seen at in an
    epoch it did not finish (sampled every POLL_S: a lower bound)."""
    epochs_again = steps_again = 0
    for run, events in trace.items():
        lines = logs.count(f"{STUDY}/{run} epoch ")
        steps = next((int(e["steps"]) for e in events if e.get("steps")), 0)
        extra = max(0, lines - epochs)
        epochs_again += extra
        steps_again += extra * steps
        by_attempt: dict[int, dict[str, Any]] = {}
        for e in events:
            if e["state"] == "running" and e["attempt"]:
                by_attempt[int(e["attempt"])] = e
        for attempt, e in by_attempt.items():
            if attempt != max(by_attempt) and e["phase"] == "train" and e["step"]:
                steps_again += int(e["step"])
    return {"epochs_retrained": epochs_again, "steps_retrained": steps_again}


def without_volatile(value: Any) -> Any:
    """`value` with every VOLATILE field dropped, at any depth."""
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def fingerprint(stack: Stack, runs: list[str]) -> dict[str, Any]:
    """What must not depend on faults: report.json and the report's CSVs without timings, worker names
    and the commit, and each run's metrics.json, per-image CSVs and sample images (bytes)."""
    store = stack.store
    out: dict[str, Any] = {}
    out["report.json"] = without_volatile(json.loads(store.get_bytes(f"{report_prefix(STUDY)}/report.json")))
    for name in ("per_image.csv", "report.csv", "differences.csv"):
        text = store.get_bytes(f"{report_prefix(STUDY)}/{name}").decode()
        out[name] = without_volatile(list(csv.DictReader(io.StringIO(text))))
    for run in runs:
        where = RunLocation(STUDY, run)
        for key in sorted(store.list(where.artifact_prefix + "/")):
            name = key[len(where.artifact_prefix) + 1:]
            if name in RUN_FILES or name.startswith("samples/"):
                out[f"{run}/{name}"] = store.get_bytes(key)
    return out


def differences(a: Any, b: Any, path: str = "", limit: int = 8) -> list[str]:
    """Where two fingerprints (or parts of them) differ, as paths with both values (at most `limit`)."""
    if type(a) is not type(b):
        return [f"{path}: {str(a)[:80]!r} vs {str(b)[:80]!r}"]
    if isinstance(a, bytes) and a != b:
        try:  # a JSON file: the differing fields
            return differences(json.loads(a), json.loads(b), path, limit)
        except ValueError:  # text (the first differing line) or an image
            pairs = zip(a.splitlines(), b.splitlines(), strict=False)
            i, (x, y) = next(((i, p) for i, p in enumerate(pairs) if p[0] != p[1]), (-1, (b"", b"")))
            return [f"{path} line {i + 1}: {x[:100]!r} vs {y[:100]!r}" if i >= 0 else f"{path}: bytes differ"]
    if isinstance(a, dict):
        found: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{k}" if path else str(k)
            one_sided = (k in a) != (k in b)
            found += [f"{sub}: missing in one"] if one_sided else differences(a[k], b[k], sub, limit)
            if len(found) >= limit:
                break
        return found[:limit]
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items vs {len(b)}"]
        found = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found += differences(x, y, f"{path}[{i}]", limit)
            if len(found) >= limit:
                break
        return found[:limit]
    return [] if a == b else [f"{path}: {str(a)[:80]!r} vs {str(b)[:80]!r}"]


# ---------------------------------------------------------------------------------------------------
# the soak


def report_done(store, n_runs: int) -> dict[str, Any] | None:
    """report.json once it lists every run in a final state."""
    try:
        data = json.loads(store.get_bytes(f"{report_prefix(STUDY)}/report.json"))
    except (ObjectNotFound, KeyError):
        return None
    runs = data.get("runs", [])
    return data if len(runs) == n_runs and all(r["state"] in FINAL for r in runs) else None


def wait_done(store, n_runs: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            if report_done(store, n_runs):
                return True
        except Exception:  # the store is briefly unreachable
            pass
        time.sleep(1)
    return False


def queues_left(url: str) -> dict[str, Any]:
    """Messages still waiting in the run and aggregate queues (every priority list of each) and taken
    but unacknowledged."""
    client = redis.Redis.from_url(url)
    left: dict[str, Any] = {}
    for queue in ("gpu", "aggregate"):
        names = [k.decode() for k in client.scan_iter(f"{queue}*") if client.type(k) == b"list"]
        tasks = [t for name in names for t in queued_tasks(url, name)]
        if tasks:
            left[queue] = tasks
    unacked = unacked_task_ids(url)
    if unacked:
        left["unacked"] = unacked
    return left


def drain(url: str, profile: Profile) -> dict[str, Any]:
    """What is left in the queues once they settle: waits for a message held by a killed worker to come
    back (the visibility timeout) and be consumed, and for as long as the queues keep shrinking (a busy
    aggregator working through its backlog), at most 5 minutes."""
    hard = time.monotonic() + 300
    until = time.monotonic() + profile.visibility_s + 20
    left, size = queues_left(url), None
    while left and time.monotonic() < min(until, hard):
        now = sum(len(v) for v in left.values())
        if size is not None and now < size:
            until = max(until, time.monotonic() + 30)
        size = now
        time.sleep(1)
        left = queues_left(url)
    return left


def start_stack(tmp: Path, redis_server: RedisServer, s3: SeaweedS3, profile: Profile) -> tuple[Stack, Crew]:
    stack = make_stack(tmp, redis_server, s3)
    configure(stack, profile, tmp.parent)
    crew = Crew(stack, profile)
    for name, queues in (("gpu1", "gpu"), ("gpu2", "gpu"), ("agg", "aggregate")):
        crew.start(name, queues)
    return stack, crew


def submit_study(stack: Stack, spec_path: Path) -> None:
    out = submit(str(spec_path), "--yes", env=stack.env)
    if out.returncode != 0:
        raise RuntimeError(f"submit failed ({out.returncode}): {out.stderr[-2000:]}")


def run_baseline(tmp: Path, redis_server: RedisServer, s3: SeaweedS3, profile: Profile, spec_path: Path,
                 runs: list[str]) -> tuple[dict[str, Any], float]:  # fmt: skip
    stack, crew = start_stack(tmp, redis_server, s3, profile)
    try:
        started = time.monotonic()
        submit_study(stack, spec_path)
        if not wait_done(stack.store, len(runs), started + profile.timeout_s):
            raise RuntimeError(f"the undisturbed study did not end in {profile.timeout_s:.0f} s ({tmp})")
        wall = time.monotonic() - started
        return fingerprint(stack, runs), wall
    finally:
        crew.stop_all()


def succeeded_tasks(logs: str, run: str) -> int:
    """How many executions of the run's task ended it `succeeded` (Celery's "Task ... succeeded" lines
    with the run task's result)."""
    return len(re.findall(rf"succeeded in [^:]*: \{{'state': 'succeeded', 'study': '{STUDY}', 'run': '{run}'",
                          logs))  # fmt: skip


def finishers(trace: list[dict[str, Any]]) -> list[int]:
    """The attempts seen recording the run `succeeded` (each execution has an attempt number of its own):
    two means it was executed to the end twice."""
    return sorted({int(e["attempt"] or 0) for e in trace if e["state"] == "succeeded"})


def checks(obs: Observer, crew: Crew, faults: list[Fault], done: bool, base: dict[str, Any],
           got: dict[str, Any] | None, left: dict[str, Any], profile: Profile) -> dict[str, Any]:  # fmt: skip
    logs = crew.logs()
    finals = {r: (obs.latest.get(r) or {}).get("state") for r in obs.runs}
    not_once = {r: {"state": finals[r], "succeeded_tasks": succeeded_tasks(logs, r),
                    "attempts_seen_succeeded": finishers(obs.trace[r]),
                    "reason": (obs.latest.get(r) or {}).get("reason")}
                for r in obs.runs if finals[r] != "succeeded" or succeeded_tasks(logs, r) > 1
                or len(finishers(obs.trace[r])) != 1}
    diff = ["no report"] if got is None else differences(base, got)
    skipped = [{"kind": f.kind, "why": f.skipped} for f in faults
               if f.skipped and not f.skipped.startswith("mount refused")]  # fmt: skip
    return {
        "finished_once": {"ok": not not_once and not obs.regressions, "runs": not_once,
                          "left_a_final_state": obs.regressions},
        "report_equal": {"ok": not diff, "differences": diff},
        "status_truthful": {"ok": not obs.violations, "limit_s": obs.limit_s, "violations": obs.violations},
        "queue_empty": {"ok": not left, "left": left},
        "schedule_complete": {"ok": not skipped, "skipped": skipped},
        "finished_in_time": {"ok": done, "timeout_s": profile.timeout_s},
    }  # fmt: skip


def soak(profile: Profile, seed: int, runs_n: int, tmp: Path) -> list[dict[str, Any]]:
    """The baseline, then the chaos study; returns the output lines."""
    redis_server = RedisServer(tmp / "redis").start()
    s3 = SeaweedS3(tmp / "weed").start()
    spec_path = tmp / "chaos.yaml"
    spec_path.write_text(yaml.safe_dump(study_spec(profile, runs_n), sort_keys=False))
    from services.spec import load_spec

    runs = [r.run_id for r in load_spec(spec_path).runs]
    chaos_crew = chaos = None
    try:
        say(f"baseline: {len(runs)} runs undisturbed")
        base, base_wall = run_baseline(tmp / "baseline", redis_server, s3, profile, spec_path, runs)
        say(f"baseline done in {base_wall:.0f} s; chaos study, seed {seed}")
        stack, chaos_crew = start_stack(tmp / "chaos", redis_server, s3, profile)
        t0 = time.monotonic()
        obs = Observer(stack, runs, t0, profile.reaper_period + 1.0)
        obs.start()
        submit_study(stack, spec_path)
        faults = schedule(profile, seed)
        chaos = Chaos(profile, chaos_crew, redis_server, s3, obs, spec_path)
        for fault in faults:
            chaos.inject(fault)
        done = wait_done(obs.store, len(runs), t0 + profile.timeout_s)
        wall = time.monotonic() - t0
        say(f"chaos study {'ended' if done else 'timed out'} after {wall:.0f} s; draining the queues")
        url = stack.env["COLORMAMBA_REDIS_URL"]
        left = drain(url, profile)
        time.sleep(2 * POLL_S)
        obs.stop.set()
        obs.join(5)
        got = fingerprint(stack, runs) if done else None
        lines = summarize(profile, seed, runs, faults, obs, chaos_crew, done, base, got, left, wall,
                          base_wall)
        if not lines[-1]["holds"]:
            say(f"does not hold; logs kept in {tmp}")
        return lines
    finally:
        if chaos_crew is not None:
            chaos_crew.stop_all()
        if chaos is not None:
            chaos.unmount()
        s3.stop()
        redis_server.stop()


def summarize(profile: Profile, seed: int, runs: list[str], faults: list[Fault], obs: Observer, crew: Crew,
              done: bool, base: dict[str, Any], got: dict[str, Any] | None, left: dict[str, Any], wall: float,
              base_wall: float) -> list[dict[str, Any]]:  # fmt: skip
    lines: list[dict[str, Any]] = []
    by_kind: dict[str, int] = {}
    for f in faults:
        f.recovery_s = recovery(f, obs.trace)
        if not f.skipped:
            by_kind[f.kind] = by_kind.get(f.kind, 0) + 1
        lines.append({"bench": "chaos_soak", "row": "fault", "seed": seed, "t": f.t, "kind": f.kind,
                      "params": f.params, "hit": f.hit, "affected": f.affected,
                      "recovery_s": None if f.recovery_s == INF else f.recovery_s,
                      "recovered": f.recovery_s != INF, "skipped": f.skipped})  # fmt: skip
    timed = [f for f in faults if f.recovery_s is not None]
    longest = max(timed, key=lambda f: f.recovery_s, default=None)
    result = checks(obs, crew, faults, done, base, got, left, profile)
    failed = [name for name, c in result.items() if not c["ok"]]
    lines.append({
        "bench": "chaos_soak", "row": "summary", "seed": seed, "profile": profile.name, "runs": len(runs),
        "baseline_wall_s": round(base_wall, 1), "chaos_wall_s": round(wall, 1),
        "lease_ttl_s": profile.lease_ttl, "reap_interval_s": profile.reap_s, "s3_retry_s": profile.s3_retry_s,
        "faults": by_kind, **work_lost(crew.logs(), obs.trace, profile.epochs),
        "longest_recovery_s": None if longest is None or longest.recovery_s == INF else longest.recovery_s,
        "longest_recovery_fault": None if longest is None else longest.kind,
        "unrecovered_faults": [f.kind for f in faults if f.recovery_s == INF],
        "checks": result, "failed_checks": failed, "holds": not failed, "cpus": os.cpu_count(),
    })  # fmt: skip
    return lines


def _terminated(*_: Any) -> None:
    """The first SIGTERM ends the soak through its `finally` blocks; more while they stop the workers and
    servers are ignored (they would cut the clean-up short)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(143)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=1, help="the fault schedule's seed")
    p.add_argument("--runs", type=int, default=None, help="runs of the study (even; default 12, --short 4)")
    p.add_argument("--short", action="store_true", help="CI's variant: 4 runs, fewer and shorter faults")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON lines to this file")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs) even when it holds")
    args = p.parse_args()
    # a SIGTERM (a test's timeout, `kill`) ends the soak through its `finally`: workers and servers stop
    signal.signal(signal.SIGTERM, _terminated)
    profile = SHORT if args.short else FULL
    runs_n = args.runs or profile.runs
    if runs_n < 2 or runs_n % 2:
        p.error(f"--runs must be an even number >= 2 (two configurations x seeds), got {runs_n}")
    tmp = Path(tempfile.mkdtemp(prefix="chaos-soak-"))
    started = time.monotonic()
    lines = soak(profile, args.seed, runs_n, tmp)
    lines[-1]["total_wall_s"] = round(time.monotonic() - started, 1)
    text = "".join(json.dumps(line, default=str) + "\n" for line in lines)
    print(text, end="", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    holds = lines[-1]["holds"]
    if holds and not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if holds else 1


if __name__ == "__main__":
    sys.exit(main())
