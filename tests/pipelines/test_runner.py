"""``qilin run`` on tiny notebooks: failure and resume, reuse, concurrency, parameter checks,
dead kernels, timeouts, Ctrl-C and run metrics — real processes and real Jupyter kernels."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline_helpers import REPO, manifest, qilin_run, tree_env, write_notebook

PRODUCE = ("value: int = 3\nout_dir: str = ''",
           "import json, time\nfrom pathlib import Path\nt0 = time.time()\n"
           "Path(out_dir, 'value.json').write_text(json.dumps({'value': value}))\n"
           "Path(out_dir, 'results.json').write_text(json.dumps({'value': value, 't0': t0, "
           "'t1': time.time()}))")
CONSUME = ("src: str = ''\nfactor: float = 2.0\nout_dir: str = ''",
           "import json\nfrom pathlib import Path\nv = json.loads(Path(src).read_text())['value']",
           "raise ValueError(f'fault in consume: v={v}')",
           "Path(out_dir, 'results.json').write_text(json.dumps({'product': v * factor}))")


def _pipeline(tmp: Path, steps: str, extra: str = "") -> Path:
    path = tmp / "pipe.yaml"
    path.write_text(f"name: tiny\nkernel: qilin\ncluster: none\n{extra}steps:\n{steps}")
    return path


def _tiny(tmp: Path) -> Path:
    write_notebook(tmp / "produce.ipynb", *PRODUCE)
    write_notebook(tmp / "consume.ipynb", *CONSUME)
    write_notebook(tmp / "report.ipynb", "src: str = ''\nout_dir: str = ''",
                   "from pathlib import Path\nassert Path(src).exists()")
    return _pipeline(tmp, "  produce: {notebook: produce.ipynb}\n"
                     "  consume: {notebook: consume.ipynb, inputs: {src: produce/value.json}}\n"
                     "  report: {notebook: report.ipynb, inputs: {src: consume/results.json}}\n")


def test_failure_resume_and_reuse(tmp_path: Path) -> None:
    pipe, runs = _tiny(tmp_path), tmp_path / "runs"
    res = qilin_run(str(pipe), "--runs-dir", str(runs), "--run-id", "r1", "-p", "value=4")
    assert res.returncode == 1, res.stdout + res.stderr
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("qilin run:")]
    assert len(line) == 1 and "Traceback" not in res.stderr
    assert "step consume failed in consume.ipynb cell 3" in line[0]
    assert "ValueError: fault in consume: v=4" in line[0]
    m = manifest(runs / "r1")
    assert m["status"] == "failed"
    assert [m["steps"][s]["status"] for s in ("produce", "consume", "report")] == \
        ["ok", "failed", "skipped"]
    executed = json.loads((runs / "r1" / "consume" / "consume.ipynb").read_text())
    assert any(o.get("output_type") == "error" for c in executed["cells"]
               for o in c.get("outputs", []))
    assert (runs / "r1" / "index.html").is_file()
    assert not list((runs / "r1").glob(".*.tmp"))
    produce_started = m["steps"]["produce"]["started"]

    # the fault is removed: --resume reruns the failed and skipped steps only
    write_notebook(tmp_path / "consume.ipynb", CONSUME[0], CONSUME[1], CONSUME[3])
    res = qilin_run(str(pipe), "--runs-dir", str(runs), "--resume", "r1")
    assert res.returncode == 0, res.stdout + res.stderr
    m = manifest(runs / "r1")
    assert m["status"] == "ok" and m["overrides"] == {"value": "4"}
    assert m["steps"]["produce"]["status"] == "cached"
    assert m["steps"]["produce"]["reused_from"] == "r1"
    assert m["steps"]["consume"]["status"] == "ok"
    assert m["results"]["consume"]["product"] == 8.0
    assert m["steps"]["produce"]["started"] != produce_started  # reuse is recorded ...
    assert json.loads((runs / "r1" / "produce" / "results.json").read_text())["value"] == 4

    # an unchanged second run reuses every step; a changed parameter reruns what it touches
    res = qilin_run(str(pipe), "--runs-dir", str(runs), "--run-id", "r2", "-p", "value=4")
    assert res.returncode == 0, res.stderr
    assert {e["status"] for e in manifest(runs / "r2")["steps"].values()} == {"cached"}
    res = qilin_run(str(pipe), "--runs-dir", str(runs), "--run-id", "r3", "-p", "value=4",
                    "-p", "consume.factor=3")
    steps = manifest(runs / "r3")["steps"]
    assert [steps[s]["status"] for s in ("produce", "consume", "report")] == \
        ["cached", "ok", "ok"]
    assert manifest(runs / "r3")["results"]["consume"]["product"] == 12.0


def test_independent_steps_run_concurrently(tmp_path: Path) -> None:
    for name in ("left", "right"):
        write_notebook(tmp_path / f"{name}.ipynb", "out_dir: str = ''",
                       "import json, time\nfrom pathlib import Path\nt0 = time.time()\n"
                       "time.sleep(3)\nPath(out_dir, 'results.json').write_text("
                       "json.dumps({'t0': t0, 't1': time.time()}))")
    pipe = _pipeline(tmp_path, "  left: {notebook: left.ipynb}\n"
                               "  right: {notebook: right.ipynb}\n")
    res = qilin_run(str(pipe), "--runs-dir", str(tmp_path / "runs"), "--run-id", "c")
    assert res.returncode == 0, res.stderr
    r = manifest(tmp_path / "runs" / "c")["results"]
    # each step's sleep started before the other's ended: they ran at the same time
    assert r["left"]["t0"] < r["right"]["t1"] and r["right"]["t0"] < r["left"]["t1"]


def test_bad_parameters_are_refused_before_anything_runs(tmp_path: Path) -> None:
    pipe, runs = _tiny(tmp_path), tmp_path / "runs"
    for args, expected in (
        (["-p", "value=four"], "step produce (produce.ipynb): parameter value expects int, "
                               "got str 'four'"),
        (["-p", "valeu=4"], "unknown parameter 'valeu'"),
        (["-p", "consume.fctor=1"], "step consume (consume.ipynb): unknown parameter 'fctor'"),
        (["-p", "out_dir=/tmp"], "parameter out_dir is set by qilin run"),
    ):
        res = qilin_run(str(pipe), "--runs-dir", str(runs), *args, timeout=60)
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip().splitlines() == [f"qilin: error: {res.stderr.split(': ', 2)[2]}"
                                                   .strip()]
        assert expected in res.stderr, res.stderr
        assert not runs.exists()
    bad_yaml = _pipeline(tmp_path, "  a: {notebook: produce.ipynb, inputs: {value: b/x}}\n")
    res = qilin_run(str(bad_yaml), timeout=60)
    assert res.returncode == 2 and "input value reads from unknown step 'b'" in res.stderr


def test_dead_kernel_and_timeout_fail_their_steps(tmp_path: Path) -> None:
    write_notebook(tmp_path / "die.ipynb", "out_dir: str = ''",
                   "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    write_notebook(tmp_path / "slow.ipynb", "out_dir: str = ''", "import time\ntime.sleep(120)")
    pipe = _pipeline(tmp_path, "  die: {notebook: die.ipynb}\n"
                               "  slow: {notebook: slow.ipynb, timeout_s: 8}\n")
    t0 = time.monotonic()
    res = qilin_run(str(pipe), "--runs-dir", str(tmp_path / "runs"), "--run-id", "d",
                    timeout=120)
    assert time.monotonic() - t0 < 90
    assert res.returncode == 1
    steps = manifest(tmp_path / "runs" / "d")["steps"]
    assert steps["die"]["status"] == "failed" and "Dead" in steps["die"]["error"]["ename"]
    assert steps["slow"]["status"] == "failed"
    assert steps["slow"]["error"]["ename"] == "StepTimeout"
    assert "step die failed in die.ipynb" in res.stderr


def test_ctrl_c_leaves_a_consistent_manifest(tmp_path: Path) -> None:
    write_notebook(tmp_path / "slow.ipynb", "out_dir: str = ''", "import time\ntime.sleep(120)")
    write_notebook(tmp_path / "after.ipynb", "out_dir: str = ''", "pass")
    pipe = _pipeline(tmp_path, "  slow: {notebook: slow.ipynb}\n"
                               "  after: {notebook: after.ipynb, after: [slow]}\n")
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "qilin.cli", "run", str(pipe), "--runs-dir",
                             str(runs), "--run-id", "i"], cwd=REPO, env=tree_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            mpath = runs / "i" / "manifest.json"
            if mpath.exists() and json.loads(mpath.read_text())["steps"]["slow"]["status"] \
                    == "running":
                break
            time.sleep(0.2)
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    m = manifest(runs / "i")
    assert m["status"] == "interrupted" and m["finished"]
    assert m["steps"]["slow"]["status"] == "interrupted"
    assert m["steps"]["after"]["status"] == "skipped"
    assert not list((runs / "i").glob(".*.tmp"))


def test_run_metrics_textfile(tmp_path: Path) -> None:
    write_notebook(tmp_path / "produce.ipynb", *PRODUCE)
    pipe = _pipeline(tmp_path, "  produce: {notebook: produce.ipynb}\n")
    prom = tmp_path / "textfile" / "qilin_tiny.prom"
    res = qilin_run(str(pipe), "--runs-dir", str(tmp_path / "runs"), "--metrics-textfile",
                    str(prom))
    assert res.returncode == 0, res.stderr
    text = prom.read_text()
    assert 'qilin_pipeline_run_success{pipeline="tiny"} 1.0' in text
    assert 'qilin_pipeline_step_success{pipeline="tiny",step="produce"} 1.0' in text
    stamp = next(ln for ln in text.splitlines()
                 if ln.startswith("qilin_pipeline_last_run_timestamp_seconds{"))
    assert abs(float(stamp.split()[-1]) - time.time()) < 300
    # --force reruns an unchanged step; the report's path is printed
    res = qilin_run(str(pipe), "--runs-dir", str(tmp_path / "runs"), "--run-id", "f", "--force")
    assert res.returncode == 0 and manifest(tmp_path / "runs" / "f")["steps"]["produce"][
        "status"] == "ok"
    assert f"report: {tmp_path / 'runs' / 'f' / 'index.html'}" in res.stdout
