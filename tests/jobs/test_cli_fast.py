"""The command line a researcher meets first: a quiet Ctrl-C out of `--watch`, commands that do not train
importing no torch, and a succeeded run's metrics in `status` (the table itself: tests/services/
test_status_view.py)."""

from __future__ import annotations

import signal
import subprocess
import sys

from services.status_view import short_run_id
from tests.support.polling import wait_until
from tests.support.records import record_status
from tests.support.servers import REPO
from tests.support.submit import renders, submit, watch


def test_watch_ctrl_c_exits_0_with_the_report_hint(study, tmp_path):
    store, _ = study
    out = tmp_path / "watch.txt"
    proc = watch(store, out, "--interval", "0.2")
    try:
        wait_until("the first render", lambda: renders(out), 30, 0.05, out.read_text)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(10)
        _, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, err
    assert "Traceback" not in err and "interrupted" not in err
    assert "submit.py report demo -o DIR" in out.read_text().splitlines()[-1]


def test_commands_that_do_not_train_import_no_torch(study):
    store, _ = study
    code = (
        "import sys; sys.argv = ['submit.py', 'status', 'demo', '--store', sys.argv[1]];"
        "import jobs.submit as s; rc = s.main(sys.argv[1:]);"
        "s.main(['list', '--store', sys.argv[1]]);"
        "assert rc == 0, rc; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(store.root)], capture_output=True, text=True,
                         cwd=REPO, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout
    help_ = subprocess.run([sys.executable, "-X", "importtime", "jobs/submit.py", "--help"],
                           capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip
    assert help_.returncode == 0 and "status STUDY" in help_.stdout
    assert " torch\n" not in help_.stderr and "| torch" not in help_.stderr


def test_status_of_a_succeeded_run_shows_its_metrics(study):
    store, spec = study
    run = spec.runs[0].run_id
    record_status(store, "demo", run, {"state": "succeeded", "epochs": 2, "epochs_done": 2,
                                       "report_split": "test", "metrics": {"psnr": 24.5}})  # fmt: skip
    out = submit("status", "demo", env={"COLORMAMBA_STORE": str(store.root)})
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith(short_run_id(run) + " "))
    assert " 2/2 " in row and "step" not in row, row
    assert f"{short_run_id(run)}: PSNR 24.50 dB on test" in out.stdout, out.stdout


