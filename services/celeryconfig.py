"""Celery settings of the job suite, loaded with `app.config_from_object` (one place, read top to bottom).

Runs last hours on one GPU each, so the defaults made for short web tasks are wrong here:
- JSON only: task messages are ids (study, run), never pickles (a broker is no place for code).
- `task_acks_late` + `task_reject_on_worker_lost`: a run's message is acknowledged only when the run
  ends; if the pool process dies (OOM, SIGKILL) the message goes back to the queue at once.
  `task_acks_on_failure`: a task that raised is acknowledged too (a run that failed, services.tasks.
  RunFailed, or one whose store failed, which the reaper queues again): never redelivered by the broker.
- Redis redelivers a message not acknowledged within `visibility_timeout`. A run longer than that is
  delivered again while it still runs: the run lease in Redis (services.coord) makes the second
  delivery a no-op, so the timeout only bounds how late a message lost with a whole dead worker comes
  back. The reaper (services.coord.reap) brings such runs back sooner: lease TTL + reaper interval.
- `worker_prefetch_multiplier=1` and `worker_disable_prefetch` (Redis): a worker reserves no more runs
  than it has free pool processes, so an idle GPU worker never sees its next run reserved by a busy one.
- One worker per GPU, running `COLORMAMBA_RUNS_PER_GPU` runs at once (`worker_concurrency`, default 1).
  A small preset (tiny, small batches) leaves most of an H100/H200 idle: k runs on one GPU share its
  memory and SMs and together get through a sweep sooner (benchmarks/bench_runs_per_gpu.py measures the
  throughput for k = 1, 2, 4). Each run keeps a pool process of its own (its own CUDA context, run lease
  and status.json), so a run that crashes ends only its own process; but the k runs compete for the
  GPU's memory, so raise k only while k runs of the study's preset and batch fit in it (a CUDA OOM fails
  whichever run asks last). The worker's main process (reaper, heartbeat file) stays one per GPU.
- `worker_pool_start_method="spawn"`: a pool process is started fresh (CUDA cannot be initialised in a
  forked child of a process that touched it), and `worker_max_tasks_per_child=1` gives every run a fresh
  process, so GPU memory is returned between runs.
- `task_track_started` and a PROGRESS state carry live progress; results expire after a week.
- Task events on (`worker_send_task_events`, `task_send_sent_event`): Flower (compose's `monitor`
  profile) shows tasks only from them. Measured: 4 Redis PUBLISHes and about 3 KB per task (sent;
  received, started and succeeded batched), stored nowhere, next to the worker-heartbeat event every
  2 s that a worker sends anyway; for runs of minutes to hours that is nothing.
"""

from __future__ import annotations

from services.settings import settings

_settings = settings()  # read once; every value below comes from services.settings
# Every public name here is a Celery setting, shown by `celery inspect conf` and Flower's worker page with
# only broker_url and result_backend masked: the Redis URL (its password) goes into those two alone.
RUN_QUEUE = _settings.run_queue
AGGREGATE_QUEUE = _settings.aggregate_queue
VISIBILITY_TIMEOUT_S = _settings.visibility_timeout_s
RUNS_PER_GPU = _settings.runs_per_gpu

# Task names: the routes below, the tasks' declarations (services.tasks) and senders that do not import the
# tasks (the reaper in services.app) use these.
RUN_TASK = "services.tasks.run"
AGGREGATE_TASK = "services.tasks.aggregate"

# Run messages' priorities. kombu's Redis transport keeps one list per priority step and a worker pops
# the lowest number first, so a run that resumes from its checkpoint (queued again by the reaper, or
# resubmitted after a stop) is taken before every fresh one: its finished epochs are not left waiting
# behind a sweep. A message without a priority counts as 0, so fresh runs carry a number of their own.
RESUMED_PRIORITY = 0
FRESH_PRIORITY = 3

broker_url = _settings.redis_url
result_backend = _settings.redis_url
broker_connection_retry_on_startup = True
broker_connection_timeout = 5
broker_transport_options = {
    "visibility_timeout": VISIBILITY_TIMEOUT_S,
    "socket_connect_timeout": 5,
    "socket_timeout": 30,
    "health_check_interval": 25,
    "priority_steps": [RESUMED_PRIORITY, FRESH_PRIORITY],  # senders and workers read the same steps
}
result_backend_transport_options = {"retry_policy": {"timeout": 10.0}}
redis_socket_connect_timeout = 5
redis_socket_timeout = 30

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
event_serializer = "json"
result_accept_content = ["json"]

task_routes = {
    RUN_TASK: {"queue": RUN_QUEUE},
    AGGREGATE_TASK: {"queue": AGGREGATE_QUEUE},
}
task_default_queue = AGGREGATE_QUEUE  # nothing should land there by default; runs are routed explicitly

task_acks_late = True
task_reject_on_worker_lost = True
task_acks_on_failure = True  # Celery's default, relied on: see above
task_track_started = True
result_expires = 7 * 24 * 3600
task_publish_retry_policy = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}

worker_prefetch_multiplier = 1
worker_disable_prefetch = True
worker_concurrency = RUNS_PER_GPU  # pool processes: runs at once on this worker's GPU
worker_pool_start_method = "spawn"
worker_max_tasks_per_child = 1
worker_proc_alive_timeout = 120  # a spawned pool process imports torch before it says UP: seconds, not 4
worker_cancel_long_running_tasks_on_connection_loss = False  # the run lease decides, not the connection
worker_send_task_events = True  # for Flower; a handful of events per run (see above)
task_send_sent_event = True  # Flower shows a queued run before a worker takes it
