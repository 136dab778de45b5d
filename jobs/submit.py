#!/usr/bin/env python3
"""The job suite's command line: submit a study, watch it, cancel it, fetch its report, manage datasets.

    python jobs/submit.py SPEC.yaml [--yes] [--rerun failed|all]     queue the study's runs
    python jobs/submit.py --local SPEC.yaml [--runs-per-gpu K]       the whole study here, no Redis/MinIO
    python jobs/submit.py status STUDY [--watch [--timeout S]] [--full-ids | --json]   per-run progress
    python jobs/submit.py cancel STUDY | STUDY/RUN                   stop queued and running runs
    python jobs/submit.py report STUDY -o DIR [--rebuild]            download the comparison report
    python jobs/submit.py list                                       studies and their run states
    python jobs/submit.py dataset upload PATH --name NAME | dataset list
    python jobs/submit.py checkpoint download STUDY/RUN [--best|--last] -o PATH   a run's checkpoint

Exit codes (for scripts): 0 done; 1 unexpected error; 2 invalid input (spec, dataset, arguments);
3 Redis or the store unreachable; 4 not found (study, run, report); 5 not confirmed (more runs than
--max-runs without --yes); 6 `--local` finished but some runs failed or were cancelled; 7 `status --watch
--timeout` gave up while runs were still queued or running.

Environment (services/settings.py lists every variable with its default): COLORMAMBA_REDIS_URL,
COLORMAMBA_S3_ENDPOINT, COLORMAMBA_S3_ACCESS_KEY, COLORMAMBA_S3_SECRET_KEY, COLORMAMBA_S3_BUCKET, or
COLORMAMBA_STORE (a folder or s3://bucket); `--local` uses the folder `artifacts/` unless --store says
otherwise, and trains COLORMAMBA_RUNS_PER_GPU runs at once (default 1) unless --runs-per-gpu says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the job suite lives beside the package

# Only light modules here: `--help`, `status` and `list` must not pay for torch
# (tests/jobs/test_cli_fast.py); each command imports what it needs.
from colormamba.env import redact_text
from colormamba.storage import StorageError, report_prefix
from colormamba.suggest import closest
from services.runs import DONE, FINAL, RERUN_CHOICES, State, read_status

OK, ERROR, INVALID, UNREACHABLE, NOT_FOUND, NOT_CONFIRMED, RUNS_FAILED, WATCH_TIMEOUT = range(8)
SUBCOMMANDS = ("submit", "status", "cancel", "report", "list", "dataset", "checkpoint")
DEFAULT_MAX_RUNS = 20
CLI_S3_RETRY_S = 5.0  # a person at the command line hears "the store is down" within seconds
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def format_table(rows: list[dict[str, object]]) -> str:
    """A fixed-width text table of the rows' values, in the first row's key order."""
    columns = list(rows[0])
    cells = [[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


class Exit(Exception):
    """Leave with a message and an exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    # the global options are accepted before or after the subcommand (`submit.py SPEC --local` reads well)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--local", action="store_true", default=argparse.SUPPRESS,
                        help="no Redis, no MinIO: run here, artifacts in the folder artifacts/")  # fmt: skip
    common.add_argument("--store", default=argparse.SUPPRESS,
                        help="a folder or s3://bucket[/prefix] (default: from the environment)")  # fmt: skip
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    p = argparse.ArgumentParser(prog="jobs/submit.py", description=__doc__, parents=[common],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="command")

    s = sub.add_parser("submit", parents=[common], help="queue (or with --local run) a study spec")
    s.add_argument("spec", type=Path)
    s.add_argument("--yes", "-y", action="store_true", help="do not ask before queuing many runs")
    s.add_argument("--max-runs", type=int, default=DEFAULT_MAX_RUNS, help="ask before queuing more runs")
    s.add_argument("--rerun", choices=RERUN_CHOICES, default="none",
                   help="run finished runs again: 'failed' ones or 'all' (from scratch)")  # fmt: skip
    s.add_argument("--dry-run", action="store_true", help="validate and list the runs, queue nothing")
    s.add_argument("--runs-per-gpu", type=int, default=None, metavar="K",
                   help="with --local: train K runs at once, each in its own process "
                        "(default: COLORMAMBA_RUNS_PER_GPU, else 1)")  # fmt: skip

    st = sub.add_parser("status", parents=[common], help="progress of a study's runs")
    st.add_argument("study")
    st.add_argument("--watch", action="store_true", help="refresh until every run has ended")
    st.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes of --watch")
    st.add_argument("--timeout", type=float, default=None,
                    help="with --watch: give up after this many seconds (exit code 7)")  # fmt: skip
    st.add_argument("--full-ids", action="store_true", help="show whole run ids (default: CONFIG-seedN)")
    st.add_argument("--json", action="store_true", help="print every run's status record as JSON")

    c = sub.add_parser(
        "cancel", parents=[common], help="cancel a study's queued and running runs, or one run (STUDY/RUN)"
    )
    c.add_argument("target")

    r = sub.add_parser("report", parents=[common], help="download a study's report")
    r.add_argument("study")
    r.add_argument("-o", "--out", type=Path, required=True)
    r.add_argument("--rebuild", action="store_true", help="rebuild it from the runs first")

    sub.add_parser("list", parents=[common], help="studies in the store")

    d = sub.add_parser("dataset", parents=[common], help="datasets in the store")
    dsub = d.add_subparsers(dest="dataset_command", required=True)
    up = dsub.add_parser(
        "upload",
        parents=[common],
        help="check a dataset folder and upload it with a manifest",
    )
    up.add_argument("path", type=Path)
    up.add_argument("--name", required=True)
    up.add_argument(
        "--replace", action="store_true", help="replace a dataset of that name with other content"
    )
    dsub.add_parser("list", parents=[common])

    ck = sub.add_parser("checkpoint", parents=[common], help="a run's checkpoints in the store")
    dl = ck.add_subparsers(dest="checkpoint_command", required=True).add_parser(
        "download", parents=[common], help="download a run's best.pt (default) or last.pt"
    )
    dl.add_argument("target", metavar="STUDY/RUN")
    which = dl.add_mutually_exclusive_group()
    which.add_argument("--best", dest="which", action="store_const", const="best", default="best")
    which.add_argument("--last", dest="which", action="store_const", const="last")
    dl.add_argument("-o", "--out", type=Path, required=True, help="the file (a folder: FOLDER/RUN-best.pt)")
    return p


def _argv_with_default_command(argv: list[str]) -> list[str]:
    """`submit.py SPEC` means `submit.py submit SPEC`: the first non-option argument picks the command. A
    bare word that is neither a command nor a spec file (`lsit`) is a typo, answered with the closest
    command, never read as a spec path."""
    for i, arg in enumerate(argv):
        if i > 0 and argv[i - 1] == "--store":
            continue
        if arg in SUBCOMMANDS:
            return argv
        if arg.startswith("-"):
            continue
        if not _looks_like_spec(arg):
            close = closest(arg, SUBCOMMANDS)
            hint = f"did you mean {close!r}? " if close else ""
            raise Exit(INVALID, f"unknown command {arg!r}; {hint}commands: {', '.join(SUBCOMMANDS)} "
                       f"(or a spec file: {'/'.join(SPEC_SUFFIXES)})")  # fmt: skip
        return [*argv[:i], "submit", *argv[i:]]
    return argv


def _looks_like_spec(arg: str) -> bool:
    """A path to a spec: an existing file, or a name with a spec suffix or a folder in it (the spec
    loader then says what is wrong with it)."""
    return Path(arg).is_file() or arg.lower().endswith(SPEC_SUFFIXES) or os.sep in arg or "/" in arg


def _store(args: argparse.Namespace, create_bucket: bool = False):
    """The store, with the command line's short S3 retry budget; only writers may create the bucket."""
    from colormamba.storage_s3 import open_store
    from services.studies import store_url

    try:
        return open_store(args.store or store_url(local=args.local), create_bucket=create_bucket,
                          retry_seconds=CLI_S3_RETRY_S)  # fmt: skip
    except (ValueError, StorageError) as exc:  # configuration: the server is first asked later
        raise Exit(INVALID, str(exc)) from None


def _redis_url() -> str:
    from services.settings import settings

    return settings().redis_url


def _coordinator():
    from services.coord import BrokerUnreachable, Coordinator, connect

    try:
        return Coordinator(connect(_redis_url()))
    except BrokerUnreachable as exc:
        raise Exit(UNREACHABLE, str(exc)) from None


# ---------------------------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    if args.runs_per_gpu is not None and not args.local:
        raise Exit(INVALID, "--runs-per-gpu is for --local; GPU workers read COLORMAMBA_RUNS_PER_GPU")
    from services.spec import load_spec

    runs_at_once = _runs_at_once(args) if args.local else 1
    study = load_spec(args.spec)
    store = _store(args, create_bucket=True)
    from services.studies import select_runs

    start, keep = select_runs(store, study, args.rerun)
    print(f"study {study.name}: {len(study.runs)} run(s); {len(start)} to run, {len(keep)} already finished")
    if args.dry_run:
        for run in study.runs:
            print(f"  {run.run_id}")
        return OK
    if args.local:
        return _submit_local(args, store, study, runs_at_once)
    coord = _coordinator()  # Redis first: an unreachable broker must leave nothing behind
    if len(start) > args.max_runs and not args.yes:
        if not sys.stdin.isatty():
            raise Exit(
                NOT_CONFIRMED, f"{len(start)} runs is more than --max-runs {args.max_runs}; pass --yes"
            )
        answer = input(f"queue {len(start)} runs? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            raise Exit(NOT_CONFIRMED, "nothing queued")
    from services import runs
    from services.coord import run_key
    from services.studies import prepare_dataset, reset_for_rerun, save_study, should_start
    from services.tasks import queue_run

    try:
        prepare_dataset(store, study, allow_local_path=False)
    except ValueError as exc:
        raise Exit(INVALID, f"{exc}\nnothing was queued") from None
    save_study(store, study)
    queued = skipped = 0
    for run in start:
        key = run_key(study.name, run.run_id)
        if coord.holder(key) is not None:  # a worker has it right now; nothing to send
            skipped += 1
            continue
        status = read_status(store, study.name, run.run_id)  # fresh: it may have ended since select_runs
        if not should_start(status, args.rerun):
            continue
        if status is not None and status.get("state") in FINAL:
            reset_for_rerun(store, study.name, run.run_id)
            status = None
        # "queued" is written before the message goes out: once it is sent, only the worker writes the
        # status, so a run that starts and ends at once is never set back to "queued"
        task_id = str(uuid.uuid4())
        runs.mark_queued(store, study.name, run.run_id, status, task_id=task_id, variant=run.variant,
                         seed=run.seed)  # fmt: skip
        coord.mark_queued(key)
        queue_run(study.name, run.run_id, task_id=task_id)
        queued += 1
    print(f"queued {queued} run(s)" + (f", {skipped} running already" if skipped else ""))
    print(f"watch: python jobs/submit.py status {study.name} --watch")
    print(f"report: python jobs/submit.py report {study.name} -o ./report")
    return OK


def _submit_local(args: argparse.Namespace, store: Any, study: Any, runs_at_once: int) -> int:
    from services.local import local_run_study

    def on_status(status: dict[str, Any]) -> None:  # the epochs' lines come from the runs (epoch_log)
        if status.get("state") in DONE:
            print(f"  {status['run']}: {_ended(status)}", flush=True)

    try:
        finals = local_run_study(store, study, args.rerun, on_status=on_status, runs_at_once=runs_at_once)
    except KeyboardInterrupt:
        raise Exit(ERROR, "interrupted; checkpoints are kept, submit again to resume") from None
    _print_report(store, study.name)
    where = (
        store.path(f"{report_prefix(study.name)}/report.html")
        if hasattr(store, "path")
        else report_prefix(study.name)
    )
    print(f"report: {where}")
    bad = [f for f in finals if f.get("state") != "succeeded"]
    return RUNS_FAILED if bad else OK


def _runs_at_once(args: argparse.Namespace) -> int:
    """--runs-per-gpu, else COLORMAMBA_RUNS_PER_GPU (what GPU workers read), else 1."""
    from services.settings import settings

    if args.runs_per_gpu is not None:
        if args.runs_per_gpu < 1:
            raise Exit(INVALID, f"--runs-per-gpu must be >= 1, got {args.runs_per_gpu}")
        return args.runs_per_gpu
    try:
        return settings().runs_per_gpu
    except ValueError as exc:
        raise Exit(INVALID, str(exc)) from None


def _print_report(store: Any, study: str) -> None:
    import json

    from services.report import table_rows
    from services.report.render import all_failed_lines, partial_banner

    data = json.loads(store.get_bytes(f"{report_prefix(study)}/report.json"))
    banner = partial_banner(data)
    if banner:
        print(banner)
    print(format_table(table_rows(data)))
    for line in all_failed_lines(data):
        print(f"failed configuration: {line}")
    for r in data["runs"]:
        if r["state"] == "failed":
            print(f"failed: {r['run']}: {r['reason']}")


def _ended(s: dict[str, Any]) -> str:
    """The line of a `--local` run that ended (its epochs' lines come from services.epoch_log)."""
    from services.status_view import run_row

    row = run_row(s)
    line = f"{row['state']} after epoch {row['epoch']}, best selection PSNR {row['sel PSNR']}"
    return f"{line}; {row['note']}" if row["note"] else line


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from services.status_view import console as make_console
    from services.status_view import heading, status_table
    from services.studies import study_statuses

    if args.interval <= 0 or (args.timeout is not None and args.timeout < 0):
        raise Exit(INVALID, "--interval must be positive and --timeout not negative")
    store = _store(args)
    study = _load_study(store, args.study)
    console = make_console()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    hint = f"report: python jobs/submit.py report {study.name} -o DIR"
    try:
        while True:
            statuses = study_statuses(store, study)
            if args.json:
                print(json.dumps(statuses, indent=1, default=str), flush=True)
                return OK
            if args.watch and console.is_terminal:
                console.clear()
            console.print(
                heading(study.name, statuses), status_table(statuses, full_ids=args.full_ids), sep="\n"
            )  # one write: a reader never sees a heading without its table
            sys.stdout.flush()
            if not args.watch or all(s["state"] in DONE for s in statuses):
                if args.watch:
                    print(hint, flush=True)
                return OK
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:  # the table above is the state at the deadline
                from services.status_view import summary

                raise Exit(WATCH_TIMEOUT, f"--timeout {args.timeout:g} s reached; not every run has ended "
                           f"({summary(statuses)})")  # fmt: skip
            time.sleep(args.interval if left is None else min(args.interval, left))
    except KeyboardInterrupt:  # the way out of --watch: the runs go on
        print(f"\nstopped watching; the runs go on. {hint}", flush=True)
        return OK


def _load_study(store: Any, name: str):
    """The study, or "unknown study" naming the closest known ones (exit 4)."""
    from services.studies import list_studies, load_study

    try:
        return load_study(store, name)
    except ValueError:
        known = list_studies(store)
        listing = f"studies in {store!r}: {', '.join(known)}" if known else f"no studies in {store!r}"
        close = closest(name, known)
        hint = f"did you mean {close!r}? " if close else ""
        raise Exit(NOT_FOUND, f"unknown study {name!r}; {hint}{listing}") from None


def cmd_cancel(args: argparse.Namespace) -> int:
    from services.coord import run_key
    from services.runs import mark_cancelled

    study_name, _, run = args.target.partition("/")
    store = _store(args)
    study = _load_study(store, study_name)
    runs = [r.run_id for r in study.runs]
    if run:
        if run not in runs:
            raise Exit(NOT_FOUND, f"study {study_name} has no run {run!r}; runs: {', '.join(runs)}")
        runs = [run]
    coord = _coordinator()
    for run_id in runs:
        status = read_status(store, study_name, run_id)
        state = status.get("state") if status else None
        if state in DONE or status is None:
            continue
        key = run_key(study_name, run_id)
        coord.request_cancel(key)
        if coord.holder(key) is None and state in (State.QUEUED, State.LOST):  # no worker on it: now
            waiting = "queued" if state == State.QUEUED else "waiting to be taken again"
            mark_cancelled(store, study_name, run_id, status, f"cancelled while {waiting}")
            coord.mark_done(key)
            print(f"{run_id}: cancelled (was {state})")
        else:
            print(f"{run_id}: cancel requested; it stops within a few training steps")
    return OK


def cmd_report(args: argparse.Namespace) -> int:
    from services.report import build_report, download_report

    if args.out.exists() and not args.out.is_dir():
        raise Exit(INVALID, f"-o {args.out}: a file is there; the report is a folder of files, give a folder")
    store = _store(args)
    _load_study(store, args.study)
    if args.rebuild:
        if args.local:
            build_report(store, args.study)
        else:
            _coordinator()
            from services.tasks import aggregate

            try:
                aggregate.apply_async(args=[args.study]).get(timeout=600)
            except Exception as exc:
                raise Exit(ERROR, f"the aggregator did not rebuild the report: {exc}") from None
    try:
        names = download_report(store, args.study, args.out)
    except ValueError as exc:
        raise Exit(NOT_FOUND, str(exc)) from None
    _print_report(store, args.study)
    print(f"{len(names)} file(s) in {args.out.resolve()}; open {args.out.resolve() / 'report.html'}")
    return OK


def cmd_list(args: argparse.Namespace) -> int:
    from services.studies import list_studies, load_study, study_statuses

    store = _store(args)
    rows = []
    for name in list_studies(store):
        study = load_study(store, name)
        counts: dict[str, int] = {}
        for s in study_statuses(store, study):
            counts[s["state"]] = counts.get(s["state"], 0) + 1
        rows.append({"study": name, "runs": len(study.runs), **{k: counts.get(k, 0) for k in State}})
    print(format_table(rows) if rows else "no studies")
    return OK


def cmd_dataset(args: argparse.Namespace) -> int:
    from services.datasets import list_datasets, upload_dataset

    store = _store(args, create_bucket=args.dataset_command == "upload")
    if args.dataset_command == "upload":
        manifest = upload_dataset(store, args.path, args.name, replace=args.replace)
        splits = ", ".join(f"{k} {v} pairs" for k, v in manifest["splits"].items())
        print(f"dataset {args.name}: {manifest['layout']} layout, {splits}, {len(manifest['files'])} files, "
              f"manifest {manifest['hash'][:12]}")  # fmt: skip
        if manifest.get("files_of", args.name) != args.name:
            print(f"same content as dataset {manifest['files_of']}: its files are shared, none uploaded")
        return OK
    rows = [{"name": d["name"], "layout": d["layout"], **d["splits"], "hash": d["hash"][:12],
             "files of": d["files_of"]} for d in list_datasets(store)]  # fmt: skip
    print(format_table(rows) if rows else "no datasets")
    return OK


def cmd_checkpoint(args: argparse.Namespace) -> int:
    """`checkpoint download`: the run's checkpoint (checksum-verified by the store), written atomically."""
    from colormamba.storage import ObjectNotFound, RunLocation

    study, _, run = args.target.partition("/")
    if not run:
        raise Exit(INVALID, f"expected STUDY/RUN, got {args.target!r}")
    location = RunLocation(study, run)
    store = _store(args)
    try:
        data = store.get_bytes(location.checkpoint(args.which))
    except ObjectNotFound:
        other = "last" if args.which == "best" else "best"
        hint = f"; it has a {other}.pt (--{other})" if store.exists(location.checkpoint(other)) else ""
        raise Exit(NOT_FOUND, f"run {study}/{run} has no {args.which}.pt in {store!r}{hint}") from None
    out = args.out / f"{run}-{args.which}.pt" if args.out.is_dir() else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    part.write_bytes(data)
    part.replace(out)
    print(f"{location.checkpoint(args.which)} -> {out} ({len(data) / 1e6:.1f} MB)")
    print(f"use: python -m colormamba predict --checkpoint {out} NIR_IMAGES -o OUT_DIR")
    return OK


COMMANDS = {"submit": cmd_submit, "status": cmd_status, "cancel": cmd_cancel, "report": cmd_report,
            "list": cmd_list, "dataset": cmd_dataset, "checkpoint": cmd_checkpoint}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    try:
        argv = _argv_with_default_command(list(sys.argv[1:] if argv is None else argv))
    except Exit as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    args = _parser().parse_args(argv)
    for name, default in (("local", False), ("store", None), ("verbose", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.command is None:
        _parser().print_help()
        return INVALID
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:  # its retries end in one StorageError line; each retry is a line only with -v
        logging.getLogger("colormamba.storage_s3").setLevel(logging.ERROR)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # `status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ERROR
    except Exception as exc:
        code, message = _explain(exc)
        print(f"error: {message}", file=sys.stderr)
        return code


def _explain(exc: Exception) -> tuple[int, str]:
    """The exit code and the one message of an error that reached the top (passwords redacted)."""
    if isinstance(exc, Exit):
        return exc.code, redact_text(str(exc))
    if isinstance(exc, StorageError):
        return UNREACHABLE, redact_text(str(exc))
    if isinstance(exc, ValueError):  # bad input named by the library: a spec, a dataset, a name
        tail = "\nnothing was queued" if type(exc).__name__ == "SpecError" else ""
        return INVALID, redact_text(str(exc)) + tail
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError) and exc.filename:
        # a local file: an existing file given as a folder, a folder without write permission...
        return INVALID, f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, OSError) or type(exc).__module__.startswith(("kombu", "redis", "amqp")):
        # the broker went away between the ping and a send
        return UNREACHABLE, f"cannot reach the broker or the store: {redact_text(str(exc))}"
    raise exc


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
