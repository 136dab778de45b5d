"""Every environment variable of the project, its default and meaning, in one place; and the job suite's
settings read from them once per process (`settings()`).

The variables the library reads itself (S3 access, the VGG weights, Triton's interpreter switch) are
declared in colormamba.env (the library does not import the job suite) and listed here with the job
suite's own, so that `VARIABLES` is the complete list: README's
environment table and compose's worker environment are tested against it.

An empty value is the default (compose writes `NAME: ""` for "the default"); a value that does not
parse is refused with the variable's name, so a typo stops a worker at start instead of misbehaving.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from colormamba.env import LIBRARY_VARIABLES, S3_BUCKET, S3_ENDPOINT, EnvVar, redact_url

REDIS_URL = EnvVar("COLORMAMBA_REDIS_URL", "redis://localhost:6379/0",
                   "Redis: the Celery broker and result backend, run leases, cancel flags")  # fmt: skip
STORE = EnvVar("COLORMAMBA_STORE", "", "the store: a folder or `s3://bucket[/prefix]` (unset: "
               "`s3://COLORMAMBA_S3_BUCKET` when COLORMAMBA_S3_ENDPOINT is set)")  # fmt: skip
RUN_QUEUE = EnvVar("COLORMAMBA_RUN_QUEUE", "gpu", "the Celery queue of runs (the GPU workers')")
AGGREGATE_QUEUE = EnvVar("COLORMAMBA_AGGREGATE_QUEUE", "aggregate", "the Celery queue of report rebuilds")
VISIBILITY_TIMEOUT = EnvVar("COLORMAMBA_VISIBILITY_TIMEOUT", "21600", "seconds before Redis redelivers an "
                            "unacknowledged message (the run lease makes that harmless)")  # fmt: skip
RUNS_PER_GPU = EnvVar("COLORMAMBA_RUNS_PER_GPU", "1", "runs one worker trains at once on its GPU "
                      "(its Celery concurrency); `--local`'s default for `--runs-per-gpu`")  # fmt: skip
LEASE_TTL = EnvVar("COLORMAMBA_LEASE_TTL", "30", "seconds a run's lease lives without renewal: a dead "
                   "worker's run shows as `lost` and is queued again within this plus one reaper "
                   "interval")  # fmt: skip
REAP_INTERVAL = EnvVar("COLORMAMBA_REAP_INTERVAL", "10", "seconds between two rounds of the reaper "
                       "(and touches of the heartbeat file)")  # fmt: skip
STATUS_INTERVAL = EnvVar("COLORMAMBA_STATUS_INTERVAL", "5", "seconds between two progress writes of a "
                         "run's status.json")  # fmt: skip
REPORT_INTERVAL = EnvVar("COLORMAMBA_REPORT_INTERVAL", "60", "seconds between two rebuilds of a study's "
                         "report while its runs train (one per study over all workers; a run's end always "
                         "rebuilds it)")  # fmt: skip
HEARTBEAT_FILE = EnvVar("COLORMAMBA_HEARTBEAT_FILE", "", "a file the worker touches after each reaper "
                        "round that reaches Redis (compose's healthcheck reads its age); unset: "
                        "none")  # fmt: skip
DATA_CACHE = EnvVar("COLORMAMBA_DATA_CACHE", "~/.cache/colormamba/datasets",
                    "a worker's dataset cache, one folder per manifest hash")  # fmt: skip

VARIABLES: tuple[EnvVar, ...] = (
    REDIS_URL, STORE, RUN_QUEUE, AGGREGATE_QUEUE, VISIBILITY_TIMEOUT, RUNS_PER_GPU, LEASE_TTL, REAP_INTERVAL,
    STATUS_INTERVAL, REPORT_INTERVAL, HEARTBEAT_FILE, DATA_CACHE, *LIBRARY_VARIABLES,
)  # fmt: skip


def parse_runs_per_gpu(value: str | None) -> int:
    """`COLORMAMBA_RUNS_PER_GPU` as an integer >= 1 (unset or empty: 1); anything else is refused with
    the variable's name, so a typo stops the worker at start instead of leaving a GPU idle or overfull."""
    if value is None or not value.strip():
        return 1
    try:
        runs = int(value.strip())
    except ValueError:
        runs = 0
    if runs < 1:
        raise ValueError(f"{RUNS_PER_GPU.name} must be an integer >= 1, got {value!r}")
    return runs


def _seconds(var: EnvVar, env: Mapping[str, str] | None) -> float:
    """A positive number of seconds, or ValueError naming the variable."""
    value = var.read(env)
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"{var.name} must be a number of seconds > 0, got {value!r}")
    return seconds


@dataclass(frozen=True, repr=False)
class Settings:
    """The job suite's settings (the library's own variables are read where they are used)."""

    redis_url: str
    store: str
    s3_endpoint: str
    s3_bucket: str
    run_queue: str
    aggregate_queue: str
    visibility_timeout_s: int
    runs_per_gpu: int
    lease_ttl_s: float
    reap_interval_s: float
    status_interval_s: float
    report_interval_s: float
    heartbeat_file: str | None
    data_cache: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read from `env` (the process environment when None); ValueError names a variable that does
        not parse."""
        return cls(
            redis_url=REDIS_URL.read(env),
            store=STORE.read(env),
            s3_endpoint=S3_ENDPOINT.read(env),
            s3_bucket=S3_BUCKET.read(env),
            run_queue=RUN_QUEUE.read(env),
            aggregate_queue=AGGREGATE_QUEUE.read(env),
            visibility_timeout_s=int(_seconds(VISIBILITY_TIMEOUT, env)),
            runs_per_gpu=parse_runs_per_gpu(RUNS_PER_GPU.read(env)),
            lease_ttl_s=_seconds(LEASE_TTL, env),
            reap_interval_s=_seconds(REAP_INTERVAL, env),
            status_interval_s=_seconds(STATUS_INTERVAL, env),
            report_interval_s=_seconds(REPORT_INTERVAL, env),
            heartbeat_file=HEARTBEAT_FILE.read(env) or None,
            data_cache=Path(DATA_CACHE.read(env)).expanduser(),
        )

    def __repr__(self) -> str:
        fields = {**self.__dict__, "redis_url": redact_url(self.redis_url), "store": redact_url(self.store)}
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"


@functools.cache
def settings() -> Settings:
    """This process's settings, read from the environment on first use."""
    return Settings.from_env()
