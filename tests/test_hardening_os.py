"""Hardening, class 6: OS faults (read-only or full filesystem) are one line + exit 2 in every command, outputs
are written as sets, and leftovers of killed processes are cleaned (docs/errors.md)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cli_common import run_soi
from soi import _io
from soi.errors import os_error_message

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "src" / "soi" / "studies" / "multitask.yaml"


cli = run_soi


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{_io.TMP_PREFIX}*")]


# --------------------------------------------------------------------------------------- stale .tmp-* cleanup
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_leftovers_removed_live_ones_kept(tmp_path: Path) -> None:
    host = _io._HOST
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "dead_file": f".tmp-a.json.h{host}-p{dead}.x1",
            "dead_dir": f".tmp-analysis.h{host}-p{dead}.x2",
            "live_file": f".tmp-b.json.h{host}-p{live.pid}.x3",
            "own_file": f".tmp-c.json.h{host}-p{os.getpid()}.x4",
            "other_host": f".tmp-d.json.h00000000-p{dead}.x5",
            "old_unmarked": ".tmp-e.json.abc",
            "new_unmarked": ".tmp-f.json.def",
            "not_tmp": "keep.json",
        }
        for key, name in names.items():
            p = tmp_path / name
            if key == "dead_dir":
                p.mkdir()
                (p / "per_example.parquet").write_bytes(b"half")
            else:
                p.write_text("x")
        old = time.time() - _io.STALE_SECONDS - 60
        os.utime(tmp_path / names["old_unmarked"], (old, old))
        _io.write_json(tmp_path / "out.json", {"a": 1})  # the first write into the folder cleans it
        left = {p.name for p in tmp_path.iterdir()}
        assert names["dead_file"] not in left and names["dead_dir"] not in left
        assert names["old_unmarked"] not in left
        for key in ("live_file", "own_file", "other_host", "new_unmarked", "not_tmp"):
            assert names[key] in left, key
        assert json.loads((tmp_path / "out.json").read_text()) == {"a": 1}
    finally:
        live.kill()
        live.wait()


def test_is_stale_by_age_for_other_hosts(tmp_path: Path) -> None:
    p = tmp_path / ".tmp-x.h00000000-p1.y"
    p.write_text("x")
    assert not _io.is_stale(p)
    assert _io.is_stale(p, now=time.time() + _io.STALE_SECONDS + 1)
    assert not _io.is_stale(tmp_path / "plain.txt")


# ----------------------------------------------------------------------------------------- OSError messages
def test_write_errors_name_the_target_not_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(OSError) as info, _io.atomic_path(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / ".tmp-out.json.zz"))
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    assert os_error_message(info.value) == f"{target}: No space left on device"
    assert not leftovers(tmp_path)


def test_pyarrow_style_errors_get_their_errno(tmp_path: Path) -> None:
    target = tmp_path / "t.parquet"
    with pytest.raises(OSError) as info, _io.atomic_path(target):
        raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert os_error_message(info.value) == f"{target}: No space left on device"


def test_os_error_message_without_file() -> None:
    assert os_error_message(OSError("something\nbroke")) == "something"
    assert os_error_message(OSError(errno.EACCES, "Permission denied")) == "Permission denied"


# -------------------------------------------------------------------------------------- outputs written as sets
def test_atomic_dir_concurrent_writers_leave_one_complete_set(tmp_path: Path) -> None:
    target = tmp_path / "set"
    errors: list[BaseException] = []

    def writer(token: int) -> None:
        try:
            for k in range(15):
                with _io.atomic_dir(target) as tmp:
                    for name in ("a.txt", "b.txt", "c.txt"):
                        (tmp / name).write_text(f"{token}-{k}")
        except BaseException as exc:  # collected and asserted on in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    contents = {p.read_text() for p in target.iterdir()}
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "b.txt", "c.txt"] and len(contents) == 1
    assert not leftovers(tmp_path)


def test_atomic_dir_failure_keeps_the_old_set(tmp_path: Path) -> None:
    target = tmp_path / "set"
    with _io.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), _io.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("new")
        raise RuntimeError("boom")
    assert (target / "a.txt").read_text() == "old" and not leftovers(tmp_path)


def _analysis_consistent(run: Path) -> bool | None:
    """None without analysis/, else whether per_example.parquet and summary.json describe one analysis."""
    adir = run / "analysis"
    if not adir.exists():
        return None
    summary = json.loads((adir / "summary.json").read_text())
    table = pq.read_table(adir / "per_example.parquet")
    counts = Counter(table["soi"].to_pylist())
    want = {k: v for k, v in summary["groups"]["all"]["all"]["counts"].items() if v}
    return dict(counts) == want


def _analyze(run: Path, late: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "soi.cli.main", "analyze", str(run), "--late-fraction", str(late)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_concurrent_analyze_and_kill9_never_mix_files(sim_run: Path) -> None:
    """Two concurrent ``soi analyze`` with different late fractions, and kill -9 mid-way: per_example.parquet and
    summary.json always describe the same analysis; the next run removes the killed one's leftovers."""
    from soi.analysis import analyze_run

    a = analyze_run(sim_run, late_fraction=0.25, write=False).summary["groups"]["all"]["all"]["counts"]
    b = analyze_run(sim_run, late_fraction=0.75, write=False).summary["groups"]["all"]["all"]["counts"]
    assert a != b  # the two analyses are distinguishable
    for _ in range(2):
        procs = [_analyze(sim_run, 0.25), _analyze(sim_run, 0.75)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        assert _analysis_consistent(sim_run) is True
    for delay in (0.4, 0.8):
        p = _analyze(sim_run, 0.25)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert _analysis_consistent(sim_run) in (True, None)
    p = _analyze(sim_run, 0.75)
    assert p.wait(timeout=120) == 0
    assert _analysis_consistent(sim_run) is True
    assert not leftovers(sim_run)  # killed runs' .tmp-* folders were removed by the last one


def test_report_writes_page_and_figures_as_a_set(sim_run: Path, tmp_path: Path, monkeypatch) -> None:
    from soi.report import html

    out = tmp_path / "rep" / "report.html"
    html.build_report(sim_run, out, figures=True)
    before = tree_digest(out.parent)
    assert "report.html" in before and any(k.startswith("figures/") for k in before)

    def broken(_data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(html, "render_html", broken)
    with pytest.raises(OSError):
        html.build_report(sim_run, out, figures=True)
    assert tree_digest(out.parent) == before  # the old page and the old figures, untouched
    assert not leftovers(out.parent)
    fresh = tmp_path / "fresh" / "report.html"
    with pytest.raises(OSError):
        html.build_report(sim_run, fresh, figures=True)
    assert not (fresh.parent / "figures").exists() and not fresh.exists()


# ------------------------------------------------------------------- every command on a read-only / full disk
def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    probe = Path("/tmp") / f"soi-mount-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True)
        if ok.returncode:
            return f"mount -t tmpfs failed: {ok.stderr.decode(errors='replace').strip()}"
        subprocess.run(["umount", str(probe)], check=True)
        return None
    finally:
        probe.rmdir()


_NO_MOUNT = _can_mount()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, sim_run_template: Path) -> dict[str, Path]:
    """A run, a second run for compare, a cartography folder and an imported run with logits (on a normal disk)."""
    from soi.formats.cartography import import_cartography

    root = tmp_path_factory.mktemp("os-inputs")
    other = shutil.copytree(sim_run_template, root / "other")
    cart = root / "cart" / "training_dynamics"
    cart.mkdir(parents=True)
    for e in range(3):
        rows = [json.dumps({"guid": i, f"logits_epoch_{e}": [(i * (e + 1)) % 5 / 5, 0.3], "gold": i % 2})
                for i in range(30)]
        (cart / f"dynamics_epoch_{e}.jsonl").write_text("\n".join(rows) + "\n")
    imported = import_cartography(root / "cart", root / "imported")
    return {"run": sim_run_template, "other": other, "cart": root / "cart", "imported": imported}


def _commands(m: Path, inp: dict[str, Path]) -> dict[str, list[str | Path]]:
    return {
        "analyze": ["analyze", m / "run"],
        "compare": ["compare", m / "run", inp["other"], "--out", m / "cmp"],
        "select": ["select", m / "run", "--out", m / "sel", "--sample", "5"],
        "report": ["report", m / "run", "--quiet"],
        "import cartography": ["import", "cartography", inp["cart"], m / "imp"],
        "export cartography": ["export", "cartography", m / "imported", m / "cart-out"],
        "demo": ["demo", "--study", "synthetic", "--out", m / "demo", "--n", "100", "--quiet"],
        "run": ["run", STUDY, "--out", m / "study", "--quiet"],
    }


@pytest.fixture(params=["read-only", "full"])
def faulty_fs(request, tmp_path: Path, inputs: dict[str, Path]):
    if _NO_MOUNT:
        pytest.skip(_NO_MOUNT)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        shutil.copytree(inputs["run"], mnt / "run")
        shutil.copytree(inputs["imported"], mnt / "imported")
        if request.param == "read-only":
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
            reason = "Read-only file system"
        else:
            fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
            try:  # fill the filesystem to the last byte
                for size in (65536, 4096, 512, 1):
                    try:
                        while True:
                            os.write(fd, b"\0" * size)
                    except OSError:
                        continue
            finally:
                os.close(fd)
            reason = "No space left on device"
        yield mnt, reason
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_every_command_on_a_faulty_filesystem(faulty_fs, inputs, capsys, monkeypatch) -> None:
    mnt, reason = faulty_fs
    monkeypatch.setenv("SOI_DATA_DIR", os.environ.get("SOI_DATA_DIR", str(REPO.parent / "shared" / "data")))
    data_before = {name: tree_digest(mnt / name) for name in ("run", "imported")}
    for name, args in _commands(mnt, inputs).items():
        code, err = cli(capsys, *args)
        assert code == 2, (name, err)
        assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, (name, err)
        assert reason in err, (name, err)
        assert str(mnt) in err, (name, err)  # names the path it could not write
    assert {name: tree_digest(mnt / name) for name in ("run", "imported")} == data_before  # data stays safe
    assert not leftovers(mnt)
    assert not (mnt / "run" / "figures").exists() or (mnt / "run" / "report.html").exists()
    assert not (mnt / "cart-out" / "td_metrics.jsonl").exists()
