"""Kill-the-writer tests: a real writer process is killed with SIGKILL in the middle of a write.

For every atomic writer (bars CSV/Parquet, factor Parquet, factor cache entries, JSON
reports, output/run folders) the test checks that a reader never sees a partial result (the
destination holds the previous complete version, and a folder load skips the temporary file),
and that the temporary file the killed writer left is removed by the next write to the same
folder, so temporary files do not accumulate.

Two ways to reach "mid-write": writers with a hook (a progress callback, a generator of
tables, a folder being filled) print ``MID`` there and sleep, and are killed then; writers
without one are rewritten in a loop and killed as soon as a temporary file is seen.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qilin.atomic import (
    atomic_directory,
    atomic_path,
    clean_stale_temps,
    default_dir_mode,
    is_temp_name,
    temp_name,
    write_json_atomic,
)
from qilin.data.loader import load_bars, save_bars
from qilin.data.synthetic import synthetic_bars

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60.0
N_BARS = len(synthetic_bars(n_symbols=8, n_days=150, seed=3))  # what the child writes

CHILD = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path
    import numpy as np
    kind, folder, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

    def mid(*_):
        print("MID", flush=True)
        time.sleep(120)

    def bars(version):
        from qilin.data.synthetic import synthetic_bars
        df = synthetic_bars(n_symbols=8, n_days=150, seed=3)
        df["version"] = version
        return df

    def write(version, hook):
        if kind in ("bars_csv", "bars_parquet"):
            from qilin.data.loader import save_bars
            name = "bars.csv" if kind == "bars_csv" else "bars.parquet"
            save_bars(bars(version), folder / name, progress=hook)
        elif kind == "factor_parquet":
            import pyarrow as pa
            from qilin.factors.calculator import _atomic_parquet
            def tables():
                for part in range(2):
                    yield pa.table({"part": [part] * 1000, "version": [version] * 1000})
                    if hook:
                        hook()
            _atomic_parquet(folder / "factors.parquet", tables())
        elif kind == "folder":
            from qilin.atomic import atomic_directory
            with atomic_directory(folder / "run", overwrite=True) as tmp:
                (tmp / "a.json").write_text(json.dumps({"version": version}))
                if hook:
                    hook()
                (tmp / "b.json").write_text(json.dumps({"version": version}))
        elif kind == "cache":
            from qilin.factors.cache import FactorCache
            FactorCache(folder).put("k" * 64, np.full(3_000_000, float(version)))
        elif kind == "json":
            from qilin.atomic import write_json_atomic
            write_json_atomic(folder / "report.json",
                              {"version": version, "pad": [version] * 400_000})
        else:
            raise SystemExit(f"unknown kind {kind}")

    write(1, None)
    print("DONE1", flush=True)
    if mode == "hook":
        write(2, mid)
    else:
        while True:
            write(2, None)
''')


_pending: dict[int, bytes] = {}


def _start(kind: str, folder: Path, mode: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CHILD, kind, str(folder), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _wait_line(proc: subprocess.Popen[bytes], want: str) -> None:
    """Read the writer's stdout (unbuffered, bounded in time) until the line ``want``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    buf = _pending.setdefault(proc.pid, b"")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while True:
            if b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.decode().strip() == want:
                    _pending[proc.pid] = buf
                    return
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(timeout=left):
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    finally:
        sel.close()
    proc.kill()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    raise AssertionError(f"writer never printed {want!r}: {err[-2000:]}")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=TIMEOUT_S)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_temp_name(p.name))


def _version(kind: str, folder: Path) -> set[float]:
    """Versions a reader sees at the destination (a complete read or an exception)."""
    if kind == "bars_csv" or kind == "bars_parquet":
        df = load_bars(folder)  # the whole folder: temporary files must be skipped
        assert len(df) == N_BARS, f"reader saw {len(df)} rows, expected {N_BARS}"
        return set(df["version"].unique().tolist())
    if kind == "factor_parquet":
        df = pd.read_parquet(folder / "factors.parquet")
        assert len(df) == 2000
        return set(df["version"].unique().tolist())
    if kind == "folder":
        import json
        names = sorted(p.name for p in (folder / "run").iterdir())
        assert names == ["a.json", "b.json"], names
        return {json.loads((folder / "run" / n).read_text())["version"] for n in names}
    if kind == "cache":
        from qilin.factors.cache import FactorCache
        arr = FactorCache(folder).get("k" * 64)
        assert arr is not None and arr.shape == (3_000_000,)
        return set(np.unique(arr).tolist())
    import json
    doc = json.loads((folder / "report.json").read_text())
    assert len(doc["pad"]) == 400_000
    return {doc["version"]}


def _rewrite_in_parent(kind: str, folder: Path) -> None:
    """One more write of the same kind in this process (the "next run")."""
    if kind in ("bars_csv", "bars_parquet"):
        df = synthetic_bars(n_symbols=8, n_days=150, seed=3)
        df["version"] = 3
        save_bars(df, folder / ("bars.csv" if kind == "bars_csv" else "bars.parquet"))
    elif kind == "factor_parquet":
        import pyarrow as pa

        from qilin.factors.calculator import _atomic_parquet
        _atomic_parquet(folder / "factors.parquet",
                        [pa.table({"part": [p] * 1000, "version": [3] * 1000}) for p in (0, 1)])
    elif kind == "folder":
        with atomic_directory(folder / "run", overwrite=True) as tmp:
            for n in ("a.json", "b.json"):
                (tmp / n).write_text('{"version": 3}')
    elif kind == "cache":
        from qilin.factors.cache import FactorCache
        FactorCache(folder).put("k" * 64, np.full(3_000_000, 3.0))
    else:
        write_json_atomic(folder / "report.json", {"version": 3, "pad": [3] * 400_000})


def _after_kill(kind: str, folder: Path, left: list[str]) -> None:
    assert _version(kind, folder) <= {1, 2}  # a complete earlier version, never a mix
    _rewrite_in_parent(kind, folder)
    assert _temps(folder) == [], f"temporary files accumulate: {_temps(folder)} (were {left})"
    assert _version(kind, folder) == {3}


@pytest.mark.parametrize("kind", ["bars_csv", "bars_parquet", "factor_parquet", "folder"])
def test_writer_killed_mid_write_leaves_previous_version(tmp_path: Path, kind: str) -> None:
    proc = _start(kind, tmp_path, "hook")
    try:
        _wait_line(proc, "DONE1")
        _wait_line(proc, "MID")
        left = _temps(tmp_path)
        assert left, "the writer should be mid-write with a temporary file present"
        assert _version(kind, tmp_path) == {1}  # readers see the previous version only
    finally:
        _kill(proc)
    left = _temps(tmp_path)
    assert len(left) == 1 and not left[0].endswith((".csv", ".parquet", ".json", ".npy"))
    assert _version(kind, tmp_path) == {1}
    _after_kill(kind, tmp_path, left)


@pytest.mark.parametrize("kind", ["bars_csv", "cache", "json"])
def test_writer_killed_at_random_readers_never_see_partial(tmp_path: Path, kind: str) -> None:
    left: list[str] = []
    for _attempt in range(8):
        proc = _start(kind, tmp_path, "loop")
        try:
            _wait_line(proc, "DONE1")
            deadline = time.monotonic() + TIMEOUT_S
            reads = 0
            while time.monotonic() < deadline and not _temps(tmp_path):
                if reads < 3:  # readers racing the writer see whole versions only
                    assert _version(kind, tmp_path) <= {1, 2}
                    reads += 1
        finally:
            _kill(proc)
        left = _temps(tmp_path)
        if left:
            break
    assert left, "never caught the writer mid-write in 8 attempts"
    _after_kill(kind, tmp_path, left)


def test_temp_names_never_look_like_data() -> None:
    for name in ("bars.csv", "bars.csv.gz", "x.parquet", "a.pq", "r.json", "k.npy"):
        t = temp_name(name)
        assert t.startswith(".") and is_temp_name(t)
        assert not t.endswith((".csv", ".gz", ".parquet", ".pq", ".json", ".npy", ".tmp"))


def test_folder_load_skips_hidden_and_temp_files(tmp_path: Path) -> None:
    """The reported defect: a crashed save_bars left ``.bars.csv.XXXX.csv`` that loaded."""
    bars = synthetic_bars(n_symbols=3, n_days=10, seed=1)
    save_bars(bars, tmp_path / "bars.csv")
    bars.to_csv(tmp_path / ".bars.csv.abcd.csv", index=False)  # old-style leftover
    (tmp_path / ".hidden").mkdir()
    bars.to_csv(tmp_path / ".hidden" / "more.csv", index=False)
    assert len(load_bars(tmp_path)) == len(bars)
    assert len(load_bars(str(tmp_path / "*.csv"))) == len(bars)


def test_live_writers_temp_is_not_cleaned(tmp_path: Path) -> None:
    mine = tmp_path / temp_name("a.csv")
    mine.write_text("in progress")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = tmp_path / temp_name("b.csv").replace(f"-{os.getpid()}-", f"-{sleeper.pid}-")
        theirs.write_text("in progress")
        assert clean_stale_temps(tmp_path, force=True) == []
        assert mine.exists() and theirs.exists()
    finally:
        sleeper.kill()
        sleeper.wait(timeout=TIMEOUT_S)
    assert clean_stale_temps(tmp_path, force=True) == [theirs]


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        assert default_dir_mode() == 0o755
        with atomic_directory(tmp_path / "run") as tmp:
            (tmp / "x.txt").write_text("x")
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644


def test_monitor_alerts_writer_killed_mid_replay(tmp_path: Path) -> None:
    """``qilin monitor replay`` streams alerts to a temporary file: killed, nothing is lost."""
    bars = tmp_path / "bars.parquet"
    save_bars(synthetic_bars(n_symbols=20, n_days=120, seed=5), bars)
    out = tmp_path / "alerts" / "alerts.jsonl"
    out.parent.mkdir()
    out.write_text('{"previous": true}\n')
    cmd = [sys.executable, "-m", "qilin.cli", "monitor", "replay", "--data", str(bars),
           "--alerts", str(out), "--metrics-port", "-1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([*cmd, "--speed", "20"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and not _temps(out.parent) and proc.poll() is None:
            time.sleep(0.05)
        assert _temps(out.parent), "the replay should be writing a temporary file"
        assert out.read_text() == '{"previous": true}\n'  # readers see the old file only
    finally:
        _kill(proc)
    left = _temps(out.parent)
    assert len(left) == 1 and out.read_text() == '{"previous": true}\n'
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert _temps(out.parent) == [], f"temporary files accumulate: {_temps(out.parent)}"
    assert "previous" not in out.read_text()
