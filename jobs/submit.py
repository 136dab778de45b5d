#!/usr/bin/env python3
"""The job suite's command line: submit a study, watch it, cancel it, fetch its report, manage datasets.

    python jobs/submit.py SPEC.yaml [--yes] [--rerun failed|all [--fresh]] [--dataset D] [--dry-run]   queue
    python jobs/submit.py --local SPEC.yaml [--runs-per-gpu K]       the whole study here, no Redis/MinIO
    python jobs/submit.py plan SPEC.yaml [--noise-from PILOT] [--target-effect X]   detectable effect, seeds
    python jobs/submit.py status STUDY [--watch [--timeout S]] [--full-ids | --json]   per-run progress
    python jobs/submit.py cancel STUDY | STUDY/RUN                   stop queued and running runs
    python jobs/submit.py report STUDY -o DIR [--rebuild]            download the comparison report
    python jobs/submit.py list                                       studies and their run states
    python jobs/submit.py dataset upload PATH --name NAME [--drop-leaks | --allow-leaks] | dataset list
    python jobs/submit.py dataset check PATH [--json]               pairs, skipped files, leaks (folder only)
    python jobs/submit.py checkpoint download STUDY/RUN [--best|--last] -o PATH   a run's checkpoint

Exit codes (for scripts): 0 done; 1 unexpected error; 2 invalid input (spec, dataset, arguments; a grid
of more than services.spec.MAX_STUDY_RUNS runs, whatever the flags; a local file or stdout that cannot be
written: "cannot write PATH: ..."); 3 Redis or the store unreachable (`status --watch` waits out a store
outage of up to 5 minutes); 4 not found (study, run, report); 5 not confirmed (a study of more runs
than --max-runs, counted before its grid is expanded, with a --dry-run too, or --fresh, without --yes);
6 `--local` finished but some runs failed or were cancelled; 7 `status --watch --timeout` gave up while
runs were still queued or running.

Environment (services/settings.py lists every variable with its default): COLORMAMBA_REDIS_URL,
COLORMAMBA_S3_ENDPOINT, COLORMAMBA_S3_ACCESS_KEY, COLORMAMBA_S3_SECRET_KEY, COLORMAMBA_S3_BUCKET, or
COLORMAMBA_STORE (a folder or s3://bucket); `--local` uses the folder `artifacts/` unless --store says
otherwise, and trains COLORMAMBA_RUNS_PER_GPU runs at once (default 1) unless --runs-per-gpu says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the job suite lives beside the package

# Only light modules here: `--help`, `status` and `list` must not pay for torch
# (tests/jobs/test_cli_fast.py); each command imports what it needs.
from colormamba.env import redact_text
from colormamba.storage import LocalWriteError, ObjectNotFound, StorageError, report_prefix
from colormamba.suggest import closest
from services.runs import DONE, RERUN_CHOICES

OK, ERROR, INVALID, UNREACHABLE, NOT_FOUND, NOT_CONFIRMED, RUNS_FAILED, WATCH_TIMEOUT = range(8)
SUBCOMMANDS = ("submit", "plan", "status", "cancel", "report", "list", "dataset", "checkpoint")
DEFAULT_MAX_RUNS = 20
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
    s.add_argument("--max-runs", type=int, default=DEFAULT_MAX_RUNS,
                   help="ask before queuing (with --dry-run: listing) a study of more runs, counted before "
                        "its grid is expanded, finished runs included")  # fmt: skip
    s.add_argument("--rerun", choices=RERUN_CHOICES, default="none",
                   help="run finished runs again: 'failed' ones or 'all', resumed from their last "
                        "checkpoint")  # fmt: skip
    s.add_argument("--fresh", action="store_true",
                   help="with --rerun: delete those runs' checkpoints and train them from scratch (asks "
                        "first; --yes confirms)")  # fmt: skip
    s.add_argument("--dry-run", action="store_true",
                   help="check the spec and its dataset (every split read, counts shown), list the runs, "
                        "queue nothing")  # fmt: skip
    s.add_argument("--dataset", default=None, metavar="DATASET",
                   help="use this dataset instead of the spec's: a folder with --local, else an uploaded "
                        "dataset's name")  # fmt: skip
    s.add_argument("--runs-per-gpu", type=int, default=None, metavar="K",
                   help="with --local: train K runs at once, each in its own process "
                        "(default: COLORMAMBA_RUNS_PER_GPU, else 1)")  # fmt: skip

    pl = sub.add_parser("plan", parents=[common],
                        help="before running: the smallest effect the spec's seeds detect, seeds a target "
                             "effect needs, runs and time")  # fmt: skip
    pl.add_argument("spec", type=Path)
    pl.add_argument("--noise-from", metavar="PILOT", default=None,
                    help="a finished study (>= 2 seeds) whose report measured the noise and the time per "
                         "epoch")  # fmt: skip
    pl.add_argument("--seed-noise", type=float, default=None, metavar="X",
                    help="without a pilot: one run's spread between seeds in the metric's unit (default 0.3)")
    pl.add_argument("--images", type=int, default=None, metavar="N",
                    help="without a pilot: images of the reporting split (default 20)")
    pl.add_argument("--target-effect", type=float, action="append", default=[], metavar="X",
                    help="how many seeds find this true difference with 80%% power (repeatable)")

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
    leaks = up.add_mutually_exclusive_group()
    leaks.add_argument("--drop-leaks", dest="leaks", action="store_const", const="drop", default="refuse",
                       help="drop the later split's copy of a pair found in two splits (test copies "
                            "of train, val copies of train, val copies of test), as the manifest records")
    leaks.add_argument("--allow-leaks", dest="leaks", action="store_const", const="allow",
                       help="keep pairs found in two splits; every report on the dataset says so")
    dsub.add_parser("list", parents=[common])
    chk = dsub.add_parser("check", parents=[common],
                          help="check a dataset folder (pairs, skipped files, pairs shared between splits); "
                               "reads the folder only")  # fmt: skip
    chk.add_argument("path", type=Path)
    chk.add_argument("--json", action="store_true", help="print the findings as one JSON document")

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


def _store(args: argparse.Namespace, create_bucket: bool = False) -> Any:
    from services.studies import open_user_store

    return open_user_store(args.store, local=args.local, create_bucket=create_bucket)


# ---------------------------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    if args.runs_per_gpu is not None and not args.local:
        raise Exit(INVALID, "--runs-per-gpu is for --local; GPU workers read COLORMAMBA_RUNS_PER_GPU")
    if args.fresh and args.rerun == "none":
        raise Exit(INVALID, "--fresh is for --rerun failed|all: it deletes the checkpoints of those runs")
    from services.datasets import dataset_line
    from services.spec import load_spec
    from services.studies import new_run_reasons, prepare_dataset, select_runs

    runs_at_once = _runs_at_once(args) if args.local else 1
    study = load_spec(args.spec, dataset=args.dataset, check_count=_max_runs(args))
    store = _store(args, create_bucket=True)
    queueing = not (args.local or args.dry_run)
    if queueing:
        from services.submission import user_coordinator

        coord = user_coordinator()  # Redis first: an unreachable broker must leave nothing behind
    try:
        dataset = prepare_dataset(store, study, allow_local_path=args.local, materialize=not args.dry_run)
    except ValueError as exc:
        raise ValueError(f"{exc}\nnothing was queued") from None
    study = study.bind_dataset(dataset)
    print(dataset_line(dataset))
    reasons = new_run_reasons(store, study)
    start, keep = select_runs(store, study, args.rerun)
    print(f"study {study.name}: {len(study.runs)} run(s); {len(start)} to run, {len(keep)} already finished")
    for run in study.runs:
        if args.dry_run or run.run_id in reasons:
            why = f" (new: {reasons[run.run_id]})" if run.run_id in reasons else ""
            print(f"  {run.run_id}{why}")
    if args.dry_run:
        from services.planning import Noise, plan_lines

        print("\n".join(plan_lines(study, Noise.assumed())[1:]))  # the first line repeats the run count
        print(f"plan with a measured noise: python jobs/submit.py plan {args.spec} --noise-from PILOT")
        return OK
    if args.fresh and not args.yes:
        from services.submission import confirm_fresh_start

        confirm_fresh_start(store, study, start, input if sys.stdin.isatty() else None)
    if args.local:
        return _submit_local(args, store, study, runs_at_once)
    from services.submission import queue_study

    done = queue_study(store, coord, study, start, args.rerun, fresh=args.fresh)
    print(f"queued {done.queued} run(s)" + (f", {done.running} running already" if done.running else "")
          + (f", {done.already} queued already (nothing sent for them)" if done.already else ""))
    print(f"watch: python jobs/submit.py status {study.name} --watch")
    print(f"report: python jobs/submit.py report {study.name} -o ./report")
    return OK


def _max_runs(args: argparse.Namespace) -> Any:
    """--max-runs as the spec's check of its run count, made before its grid is expanded (so before the
    dataset, the store or Redis): more runs than that need --yes, or a yes at a terminal. The count is
    the study's, finished runs included (which runs are finished is known only once the grid is). A dry
    run asks nobody: it lists no more runs than --max-runs. `--local` runs what it is given. Above
    services.spec.MAX_STUDY_RUNS the spec is refused whatever the flags (exit 2)."""
    if args.local or args.yes:
        return None
    from services.submission import confirm_queueing

    ask = input if sys.stdin.isatty() and not args.dry_run else None
    return lambda count: confirm_queueing(count, args.max_runs, ask)


def _submit_local(args: argparse.Namespace, store: Any, study: Any, runs_at_once: int) -> int:
    from services.local import local_run_study

    def on_status(status: dict[str, Any]) -> None:  # the epochs' lines come from the runs (epoch_log)
        if status.get("state") in DONE:
            print(f"  {status['run']}: {_ended(status)}", flush=True)

    try:
        finals = local_run_study(store, study, args.rerun, on_status=on_status, runs_at_once=runs_at_once,
                                 fresh=args.fresh)  # fmt: skip
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


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from services.planning import ASSUMED_IMAGES, ASSUMED_SEED_NOISE, Noise, noise_from_report, plan_lines
    from services.spec import load_spec
    from services.studies import NotFound, find_study

    study = load_spec(args.spec)
    if args.noise_from is None:
        for name, value in (("--seed-noise", args.seed_noise), ("--images", args.images)):
            if value is not None and value <= 0:
                raise Exit(INVALID, f"{name} must be positive, got {value}")
        noise = Noise.assumed(args.seed_noise or ASSUMED_SEED_NOISE, args.images or ASSUMED_IMAGES)
    else:
        if args.seed_noise is not None or args.images is not None:
            raise Exit(INVALID, "--noise-from measures the noise and the images: leave out --seed-noise and "
                       "--images")  # fmt: skip
        store = _store(args)
        find_study(store, args.noise_from)  # NotFound names the studies there
        try:
            report = json.loads(store.get_bytes(f"{report_prefix(args.noise_from)}/report.json"))
        except ObjectNotFound:
            why = f"study {args.noise_from!r} has no report yet: plan from a finished pilot"
            raise NotFound(why) from None
        noise = noise_from_report(report)
    if any(t <= 0 for t in args.target_effect):
        raise Exit(INVALID, f"--target-effect must be positive, got {args.target_effect}")
    print("\n".join(plan_lines(study, noise, tuple(args.target_effect))))
    return OK


def _runs_at_once(args: argparse.Namespace) -> int:
    """--runs-per-gpu, else COLORMAMBA_RUNS_PER_GPU (what GPU workers read), else 1."""
    from services.settings import settings

    if args.runs_per_gpu is None:
        return settings().runs_per_gpu
    if args.runs_per_gpu < 1:
        raise Exit(INVALID, f"--runs-per-gpu must be >= 1, got {args.runs_per_gpu}")
    return args.runs_per_gpu


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


WATCH_OUTAGE_LIMIT_S = 300.0  # `status --watch` rides out a store outage this long (README), then exits 3


def cmd_status(args: argparse.Namespace) -> int:
    """The study's runs, once or (`--watch`) until every run has ended. A watch rides out a store outage
    (a line says since when, the table stays) for WATCH_OUTAGE_LIMIT_S; only a first read that fails,
    a longer outage or `--timeout` ends it."""
    import json

    from services.status_view import StoreOutage, heading, status_table, summary
    from services.status_view import console as make_console
    from services.studies import find_study, study_statuses

    if args.interval <= 0 or (args.timeout is not None and args.timeout < 0):
        raise Exit(INVALID, "--interval must be positive and --timeout not negative")
    store = _store(args)
    study = find_study(store, args.study)
    console = make_console()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    hint = f"report: python jobs/submit.py report {study.name} -o DIR"
    statuses: list[dict[str, Any]] | None = None  # the last read (kept on screen through an outage)
    outage: StoreOutage | None = None
    try:
        while True:
            try:
                statuses, outage = study_statuses(store, study), None
            except StorageError as exc:
                if not args.watch:
                    raise
                outage = _outage_seen(outage, exc)
            if args.json and statuses is not None:
                print(json.dumps(statuses, indent=1, default=str), flush=True)
                return OK
            if args.watch and console.is_terminal:
                console.clear()
            if statuses is not None and (outage is None or console.is_terminal):  # a file: the line alone
                console.print(
                    heading(study.name, statuses), status_table(statuses, full_ids=args.full_ids), sep="\n"
                )  # one write: a reader never sees a heading without its table
            if outage is not None:
                console.print(outage.line(), soft_wrap=True, markup=False)
            sys.stdout.flush()
            if outage is None and statuses is not None and (
                not args.watch or all(s["state"] in DONE for s in statuses)
            ):
                if args.watch:
                    print(hint, flush=True)
                return OK
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:  # the table above is the state at the deadline
                state = f" ({summary(statuses)})" if statuses is not None else ""
                still = f"; {outage.line().removesuffix('; retrying')}" if outage is not None else ""
                raise Exit(WATCH_TIMEOUT, f"--timeout {args.timeout:g} s reached; not every run has ended"
                           f"{state}{still}")  # fmt: skip
            time.sleep(args.interval if left is None else min(args.interval, left))
    except KeyboardInterrupt:  # the way out of --watch: the runs go on
        print(f"\nstopped watching; the runs go on. {hint}", flush=True)
        return OK


def _outage_seen(outage: Any, exc: StorageError) -> Any:
    """The watch's outage (a StoreOutage) after another failed read; Exit(UNREACHABLE) once it has lasted
    WATCH_OUTAGE_LIMIT_S."""
    from services.status_view import StoreOutage

    outage = outage or StoreOutage.begin()
    outage.reason = getattr(exc, "reason", None) or str(exc)
    if outage.seconds >= WATCH_OUTAGE_LIMIT_S:
        raise Exit(UNREACHABLE, f"the store has been unreachable for {outage.seconds:.0f} s, longer than the "
                   f"{WATCH_OUTAGE_LIMIT_S:.0f} s a watch waits: {exc}")  # fmt: skip
    return outage


def cmd_cancel(args: argparse.Namespace) -> int:
    from services.studies import find_study
    from services.submission import cancel_runs, cancel_targets, user_coordinator

    study_name, _, run = args.target.partition("/")
    store = _store(args)
    runs = cancel_targets(find_study(store, study_name), run)
    for done in cancel_runs(store, user_coordinator(), study_name, runs):
        if done.was is None:
            print(f"{done.run}: cancel requested; it stops within a few training steps, or images if it "
                  "is evaluating, and ends cancelled with its checkpoints kept")  # fmt: skip
        else:
            print(f"{done.run}: cancelled (was {done.was})")
    return OK


def cmd_report(args: argparse.Namespace) -> int:
    from services.studies import find_study
    from services.submission import download_study_report, rebuild_report

    if args.out.exists() and not args.out.is_dir():
        raise Exit(INVALID, f"-o {args.out}: a file is there; the report is a folder of files, give a folder")
    store = _store(args)
    find_study(store, args.study)
    if args.rebuild:
        rebuild_report(store, args.study, local=args.local)
    names = download_study_report(store, args.study, args.out)
    _print_report(store, args.study)
    print(f"{len(names)} file(s) in {args.out.resolve()}; open {args.out.resolve() / 'report.html'}")
    return OK


def cmd_list(args: argparse.Namespace) -> int:
    from services.studies import study_overview

    rows = study_overview(_store(args))
    print(format_table(rows) if rows else "no studies")
    return OK


def cmd_dataset(args: argparse.Namespace) -> int:
    if args.dataset_command == "check":
        return _dataset_check(args)
    from services.datasets import dataset_line, list_datasets, upload_dataset
    from services.studies import dataset_info

    store = _store(args, create_bucket=args.dataset_command == "upload")
    if args.dataset_command == "upload":
        manifest = upload_dataset(store, args.path, args.name, replace=args.replace, leaks=args.leaks)
        info = dataset_info(args.name, args.name, manifest["hash"], manifest)
        print(f"{dataset_line(info)}; {len(manifest['files'])} files, manifest {manifest['hash'][:12]}")
        if manifest.get("files_of", args.name) != args.name:
            print(f"same content as dataset {manifest['files_of']}: its files are shared, none uploaded")
        return OK
    rows = [{"name": d["name"], "layout": d["layout"], **d["splits"], "hash": d["hash"][:12],
             "files of": d["files_of"]} for d in list_datasets(store)]  # fmt: skip
    print(format_table(rows) if rows else "no datasets")
    return OK


def _dataset_check(args: argparse.Namespace) -> int:
    """`dataset check PATH [--json]`: the folder only (no store, no broker, no settings)."""
    import json

    from services.datasets import check_dataset, leak_record, leakage_line

    check = check_dataset(args.path)
    if args.json:
        print(json.dumps(check.to_json(), indent=1))
        return OK
    splits = ", ".join(f"{split} {len(pairs)}" for split, pairs in check.pairs.items())
    print(f"{args.path}: {check.layout} layout; pairs: {splits}; checked in {check.seconds:.1f} s")
    for s in check.skipped:
        print(f"  skipped ({s['split']}): {s['path']}: {s['why']}")
    print(f"splits: {leakage_line(leak_record(check))}")
    for d in check.duplicates:
        (a, b), (pa, pb) = d.splits, d.pairs
        print(f"  {d.kind:5s} {d.score:.3f}  {a} {pa}  =  {b} {pb}")
    return OK


def cmd_checkpoint(args: argparse.Namespace) -> int:
    """`checkpoint download`: the run's checkpoint (checksum-verified by the store), written atomically."""
    from services.submission import download_checkpoint

    study, _, run = args.target.partition("/")
    if not run:
        raise Exit(INVALID, f"expected STUDY/RUN, got {args.target!r}")
    done = download_checkpoint(_store(args), study, run, args.which, args.out)
    print(f"{done.key} -> {done.path} ({done.size / 1e6:.1f} MB)")
    print(f"use: python -m colormamba predict --checkpoint {done.path} NIR_IMAGES -o OUT_DIR")
    return OK


COMMANDS = {"submit": cmd_submit, "plan": cmd_plan, "status": cmd_status, "cancel": cmd_cancel,
            "report": cmd_report, "list": cmd_list, "dataset": cmd_dataset,
            "checkpoint": cmd_checkpoint}  # fmt: skip


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
    real_stdout = sys.stdout
    sys.stdout = _NamedStdout(real_stdout)
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, not at exit: a full disk behind `> file` is this command's error
        return code
    except BrokenPipeError:  # `status | head`: the reader has what it wanted
        _discard_output(real_stdout)
        return OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ERROR
    except Exception as exc:
        code, message = _explain(exc)
        print(f"error: {message}", file=sys.stderr)
        return code
    finally:
        sys.stdout = real_stdout


class _NamedStdout:
    """sys.stdout while a command runs: a write or flush that fails (a full disk behind `> file`) raises
    LocalWriteError naming stdout, answered with exit 2, where a bare OSError would read as "cannot
    reach the store". What could not be written is then discarded, so that the interpreter's own flush
    at exit does not fail again with a traceback."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def _guarded(self, op: Any, *args: Any) -> Any:
        try:
            return op(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            _discard_output(self._stream)
            raise LocalWriteError("stdout", exc) from exc

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...: the stream's own
        return getattr(self._stream, name)


def _discard_output(stream: Any) -> None:
    """Send what is left for `stream` (stdout) to /dev/null: its reader is gone or its disk is full."""
    with contextlib.suppress(OSError, ValueError):  # a captured stdout (tests) has no descriptor to swap
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


def _explain(exc: Exception) -> tuple[int, str]:
    """The exit code and the one message of an error that reached the top (passwords redacted)."""
    from services.coord import BrokerUnreachable
    from services.studies import NotFound
    from services.submission import FreshNotConfirmed, NotConfirmed, RebuildFailed

    if isinstance(exc, Exit):
        return exc.code, redact_text(str(exc))
    if isinstance(exc, LocalWriteError):  # our own output: `-o` on a full disk, stdout to a full disk
        return INVALID, str(exc)
    if isinstance(exc, NotFound):
        return NOT_FOUND, redact_text(str(exc))
    if isinstance(exc, FreshNotConfirmed):
        return NOT_CONFIRMED, f"{exc}; nothing was deleted or queued"
    if isinstance(exc, NotConfirmed):
        if exc.asked:
            return NOT_CONFIRMED, "nothing queued"
        return NOT_CONFIRMED, (f"{exc.count} runs is more than --max-runs {exc.limit}; pass --yes (or "
                               f"--max-runs {exc.count}); nothing was listed or queued")
    if isinstance(exc, BrokerUnreachable | StorageError):
        return UNREACHABLE, redact_text(str(exc))
    if isinstance(exc, RebuildFailed):
        return ERROR, redact_text(str(exc))
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
