"""Nothing the harness finds is destroyed: result files it cannot use are kept aside, a report writes only over its
own files and is replaced whole or not at all, cached data is checked before it is used, and OpenAI's archives are
read without TorchScript.

The commands run as a user runs them: in a process of their own, started in a folder outside the checkout. Where a
failing disk or a signal at a given moment is needed, a few lines of Python run first in that process to bring it
about; the project's code is never changed for a test.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import records
from bench.reporting import publish, report
from data.render_cache import CHECKSUM_MARK, TrackletCache
from models import openai_archive
from models.backbone import BackboneError, read_checkpoint

ROOT = Path(__file__).resolve().parent.parent
EARLIER = ROOT / "results" / "ci-all-strategies" / "frozen__f2_b16_s0.json"  # a committed record
RECORD_V1 = ROOT / "tests" / "fixtures" / "record-schema-v1.json"  # a record as schema 1 wrote it
LATER = ROOT / "results" / "ci-all-strategies" / "full__f2_b16_s0.json"


def run_in_subprocess(args: list[str], *, cwd: Path, prelude: str = "", popen: bool = False):
    """``python -m <module> ...`` or ``python <checkout>/run_bench.py ...`` in ``cwd``; ``prelude`` (Python) runs
    first in that process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    target, rest = args[0], args[1:]
    if prelude:
        start = (f"runpy.run_path({str(ROOT / target)!r}, run_name='__main__')" if target.endswith(".py") else
                 f"runpy.run_module({target!r}, run_name='__main__', alter_sys=True)")
        command = [sys.executable, "-c", f"{prelude}\nimport runpy, sys\nsys.argv = {[target, *rest]!r}\n{start}"]
    else:
        command = [sys.executable, str(ROOT / target), *rest] if target.endswith(".py") else \
            [sys.executable, "-m", target, *rest]
    options = dict(cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C as in a terminal
    if popen:
        return subprocess.Popen(command, **options)
    return subprocess.run(command, timeout=900, **options)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones and sub-folders included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def result_folder(path: Path, *sources: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for source in sources:
        shutil.copy(source, path / source.name)
    return path


@pytest.fixture(scope="module")
def first_report(tmp_path_factory) -> Path:
    """A folder ``work`` outside the checkout with ``runs/`` (one record) and its report in ``report/``."""
    work = tmp_path_factory.mktemp("work")
    result_folder(work / "runs", EARLIER)
    done = run_in_subprocess(["bench.reporting.report", "runs", "--out", "report"], cwd=work)
    assert done.returncode == 0, done.stderr
    return work


@pytest.fixture
def work(first_report, tmp_path) -> Path:
    """A private copy of ``first_report``'s folder."""
    return Path(shutil.copytree(first_report, tmp_path / "work", symlinks=True))


# ---------------------------------------------------------------------------------------------------------------------
# resume: result files that cannot be used are kept aside

def bad_results(out: Path) -> dict[str, tuple[str, bytes]]:
    """One file per kind of result a resume cannot reuse, at the names of the smoke sweep's four seeds."""
    v2 = {"schema_version": 2, "run": {"id": "frozen__f2_b16_s2", "status": "ok",
                                       "config": {"train": {"seed": "two"}}}}
    v1 = json.loads(RECORD_V1.read_text())
    v1["run"]["id"] = "frozen__f2_b16_s3"
    cases = {"frozen__f2_b16_s0": ("unreadable", b'{"schema_version": 2, "run": '),
             "frozen__f2_b16_s1": ("schema-v9", json.dumps({"schema_version": 9, "run": {}}).encode()),
             "frozen__f2_b16_s2": ("invalid", json.dumps(v2).encode()),
             "frozen__f2_b16_s3": ("schema-v1", json.dumps(v1).encode())}
    out.mkdir(parents=True)
    for stem, (_, content) in cases.items():
        (out / f"{stem}.json").write_bytes(content)
    return cases


def test_resume_keeps_unusable_results_aside_byte_for_byte_and_redoes_the_runs(tmp_path):
    out = tmp_path / "runs"
    cases = bad_results(out)
    (out / "notes.txt").write_text("my notes")
    done = run_in_subprocess(["run_bench.py", "--preset", "smoke", "--strategies", "frozen", "--seeds", "0,1,2,3",
                              "--out", str(out)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == len(cases), done.stderr
    for stem, (why, content) in cases.items():
        kept = out / "set-aside" / f"{stem}.{why}.json"
        assert kept.read_bytes() == content, why
        assert any(line.startswith(f"warning: {out / stem}.json: ") and str(kept) in line for line in warnings), why
        redone = records.read_result(out / f"{stem}.json")
        assert (redone["schema_version"], redone["run"]["status"]) == (records.SCHEMA_VERSION, records.OK)
    assert (out / "notes.txt").read_text() == "my notes"


def test_a_set_aside_file_never_replaces_an_earlier_one(tmp_path, capsys):
    first, second = b"{", b"{ "
    for content in (first, second):
        (tmp_path / "x.json").write_bytes(content)
        assert records.own_record(tmp_path / "x.json") is None
    assert (tmp_path / "set-aside" / "x.unreadable.json").read_bytes() == first
    assert (tmp_path / "set-aside" / "x.unreadable.2.json").read_bytes() == second
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_writing_a_result_sets_aside_what_is_in_its_place_even_without_resume(tmp_path):
    final = tmp_path / "x.json"
    final.write_bytes(b"not json")
    record = json.loads(EARLIER.read_text()) | {"schema_version": records.SCHEMA_VERSION}
    records.settle(record, final)
    assert (tmp_path / "set-aside" / "x.unreadable.json").read_bytes() == b"not json"
    assert records.read_result(final)["run"]["id"] == record["run"]["id"]


BAD_VALUES = {  # dotted field -> a value the schema does not allow there
    "run.status": "done", "run.git_dirty": "yes", "run.config.train.seed": "zero", "run.config.data.frames": 2.5,
    "profile.peak_mem_bytes": "lots", "metrics.test.paper_f1": "high", "metrics.test.per_column.hat.f1": [1],
    "run.config": [], "environment.gpu": 3,
}


@pytest.mark.parametrize("field", BAD_VALUES, ids=list(BAD_VALUES))
def test_a_record_whose_values_are_not_the_schemas_is_named_with_its_field(field, tmp_path):
    record = json.loads(EARLIER.read_text())
    *parents, leaf = field.split(".")
    holder = record
    for key in parents:
        holder = holder.setdefault(key, {})
    holder[leaf] = BAD_VALUES[field]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record))
    with pytest.raises(records.ResultFileError, match=f"^{path}: {field} is ") as raised:
        records.read_result(path)
    assert raised.value.kind == "invalid" and "correct the value or move the file" in str(raised.value)


def test_the_report_skips_a_record_with_bad_values_in_one_line(tmp_path):
    runs = result_folder(tmp_path / "runs", EARLIER)
    bad = json.loads(LATER.read_text())
    bad["profile"]["peak_mem_bytes"] = "lots"
    (runs / LATER.name).write_text(json.dumps(bad))
    done = run_in_subprocess(["bench.reporting.report", "runs"], cwd=tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert f"warning: skipped runs/{LATER.name}: profile.peak_mem_bytes is 'lots', expected an integer" in done.stdout


def test_a_record_nobody_may_read_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    runs = result_folder(tmp_path / "runs", EARLIER)
    read_text = Path.read_text

    def denied(self, *args, **kwargs):
        if self == runs / EARLIER.name:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    assert report.main([str(runs)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line == (f"error: {runs / EARLIER.name}: cannot be read (Permission denied); give yourself read permission "
                    "or move it out of the folder")
    assert not (runs / "report").exists() or not any((runs / "report").iterdir())


# ---------------------------------------------------------------------------------------------------------------------
# reports: only over their own files, and whole

def test_the_report_refuses_to_write_over_a_users_readme_and_index(tmp_path):
    result_folder(tmp_path / "runs", EARLIER)
    mine = tmp_path / "site"
    mine.mkdir()
    (mine / "README.md").write_text("# my own page\n")
    (mine / "index.html").write_text("<html>mine</html>\n")
    before = snapshot(mine)
    done = run_in_subprocess(["bench.reporting.report", "runs", "--out", "site"], cwd=tmp_path)
    assert done.returncode == 2
    assert one_line(done.stderr).startswith("error: site/README.md: not written by the report")
    assert "move it away or choose another --out" in done.stderr
    assert snapshot(mine) == before and sorted(p.name for p in mine.iterdir()) == ["README.md", "index.html"]


def test_a_report_replaces_its_own_files_and_keeps_everyone_elses(work):
    report_dir = work / "report"
    (report_dir / "notes.txt").write_text("my notes")
    (report_dir / "compare.md").write_text("written by the compare tool")
    others = {name: (report_dir / name).read_bytes() for name in ("notes.txt", "compare.md")}
    shutil.copy(LATER, work / "runs" / LATER.name)
    done = run_in_subprocess(["bench.reporting.report", "runs", "--out", "report"], cwd=work)
    assert done.returncode == 0, done.stderr
    assert {name: (report_dir / name).read_bytes() for name in others} == others
    assert "full__f2_b16_s0" in (report_dir / "summary.csv").read_text()
    assert "[notes.txt](notes.txt)" in (report_dir / "README.md").read_text()
    manifest = json.loads((report_dir / publish.MANIFEST).read_text())["files"]
    assert "notes.txt" not in manifest and all(publish.sha256(report_dir / n) == d for n, d in manifest.items())


def test_a_report_file_the_user_changed_is_not_written_over(work):
    edited = work / "report" / "summary.md"
    edited.write_text(edited.read_text() + "\nmy remark\n")
    before = snapshot(work)
    done = run_in_subprocess(["bench.reporting.report", "runs", "--out", "report"], cwd=work)
    assert done.returncode == 2
    assert one_line(done.stderr) == ("error: report/summary.md: changed since the report wrote it; the report does not "
                                     "write over it: move it away or choose another --out")
    assert snapshot(work) == before


def test_a_report_from_before_the_manifest_is_recognised_as_the_reports_own(tmp_path):
    """A committed sweep's report without its manifest (as written before the manifest existed) is regenerated in
    place, recognised by its front page; the compare tool's files and a user's file in it are kept."""
    runs = Path(shutil.copytree(ROOT / "results" / "default", tmp_path / "default"))
    report_dir = runs / "report"
    (report_dir / publish.MANIFEST).unlink(missing_ok=True)  # as every report was before the manifest existed
    (report_dir / "notes.txt").write_text("my notes")
    kept = {name: (report_dir / name).read_bytes() for name in ("compare.md", "compare.csv", "notes.txt")}
    written = report.write_reports(runs)
    assert {name: (report_dir / name).read_bytes() for name in kept} == kept
    assert {p.name for p in written} == set(json.loads((report_dir / publish.MANIFEST).read_text())["files"])


def test_an_interrupt_while_the_report_is_written_leaves_the_previous_report_whole(work):
    before = snapshot(work)
    ready = work.parent / "ready"
    prelude = ("import os, time, pathlib\nimport bench.reporting.index as index\nwrite = index.write_index\n"
               "def slow(out, **content):\n"
               f"    pathlib.Path({str(ready)!r}).write_text('writing')\n    time.sleep(300)\n"
               "    return write(out, **content)\n"
               "index.write_index = slow\n")
    shutil.copy(LATER, work / "runs" / LATER.name)
    before[f"runs/{LATER.name}"] = LATER.read_bytes()
    process = run_in_subprocess(["bench.reporting.report", "runs", "--out", "report"], cwd=work, prelude=prelude,
                                popen=True)
    deadline = time.monotonic() + 300
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and one_line(stderr).startswith("interrupted: "), stderr
    assert snapshot(work) == before  # the old report as it was, no staging folder left


def test_an_interrupt_while_the_report_is_swapped_in_waits_for_the_whole_new_report(work):
    prelude = ("import os, signal\nimport bench.reporting.publish as publish\nmove = publish._move\n"
               "def move_then_interrupt(source, target, done):\n    move(source, target, done)\n"
               "    if len(done) == 1:\n        os.kill(os.getpid(), signal.SIGINT)\n"
               "publish._move = move_then_interrupt\n")
    shutil.copy(LATER, work / "runs" / LATER.name)
    done = run_in_subprocess(["bench.reporting.report", "runs", "--out", "report"], cwd=work, prelude=prelude)
    assert done.returncode == 130 and one_line(done.stderr).startswith("interrupted: "), done.stderr
    report_dir = work / "report"
    manifest = json.loads((report_dir / publish.MANIFEST).read_text())["files"]
    assert sorted(manifest) == sorted(p.name for p in report_dir.iterdir() if p.name != publish.MANIFEST)
    assert all(publish.sha256(report_dir / name) == digest for name, digest in manifest.items())
    assert "full__f2_b16_s0" in (report_dir / "summary.csv").read_text()


def test_a_full_disk_while_the_report_is_written_is_one_line_naming_the_report_file(work):
    before = snapshot(work)
    prelude = ("import errno, os\nimport bench.records as records\nwrite = records.write_atomic\n"
               "def full(path, *args, **kwargs):\n"
               "    if path.name == 'summary.md':\n"
               "        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))\n"
               "    return write(path, *args, **kwargs)\n"
               "records.write_atomic = full\n"
               "import bench.reporting.tables as tables\ntables.write_atomic = full\n")
    done = run_in_subprocess(["bench.reporting.report", "runs", "--out", "report"], cwd=work, prelude=prelude)
    assert done.returncode == 2
    assert one_line(done.stderr) == ("error: report/summary.md: No space left on device (free space there or choose "
                                     "another folder)")
    assert snapshot(work) == before


# ---------------------------------------------------------------------------------------------------------------------
# the rendered-data cache checks what it reads

def frames_of(i: int) -> np.ndarray:
    return np.full((2, 4, 4, 3), i, np.uint8)


def filled_cache(folder: Path, monkeypatch, calls: list[int] | None = None) -> TrackletCache:
    monkeypatch.setenv("PAR_BENCH_CACHE_DIR", str(folder))
    calls = [] if calls is None else calls
    cache = TrackletCache(count=3, shape=(2, 4, 4, 3), key={"test": 1},
                          render=lambda i: calls.append(i) or frames_of(i))
    for i in range(3):
        cache.get(i)
    return cache


@pytest.mark.parametrize("damage", ["one byte changed", "no checksum", "empty", "a folder", "garbage"])
def test_cached_data_that_does_not_match_is_rendered_again_with_one_line(damage, tmp_path, monkeypatch, capsys):
    path = filled_cache(tmp_path, monkeypatch).path
    content = path.read_bytes()
    if damage == "one byte changed":
        position = content.index(CHECKSUM_MARK) - 1
        path.write_bytes(content[:position] + bytes([content[position] ^ 1]) + content[position + 1:])
    elif damage == "no checksum":
        path.write_bytes(content[:content.index(CHECKSUM_MARK)])  # a plain .npy, as written before the checksum
    elif damage == "a folder":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(b"" if damage == "empty" else b"\x93NUMPY garbage")
    calls: list[int] = []
    again = filled_cache(tmp_path, monkeypatch, calls)
    assert calls == [0, 1, 2] and all((again.get(i) == frames_of(i)).all() for i in range(3))
    warning = one_line(capsys.readouterr().err)
    assert warning.startswith(f"warning: rendered-data cache {path}: ") and "rendering the split again" in warning
    if damage != "a folder":
        calls.clear()
        filled_cache(tmp_path, monkeypatch, calls)
        assert calls == [] and capsys.readouterr().err == ""  # rewritten whole, then reused silently


# ---------------------------------------------------------------------------------------------------------------------
# OpenAI archives without TorchScript

@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    from bench.tools.dryrun import write_openai_checkpoint
    from models.backbone import create_clip

    torch.manual_seed(0)
    source = create_clip("par-vit-micro", None, activation="quick_gelu")
    return write_openai_checkpoint(source, tmp_path_factory.mktemp("openai") / "ViT-micro.pt", image_size=32)


def test_the_archive_reads_without_torchscript_exactly_as_torchscript_reads_it(archive, monkeypatch):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = dict(torch.jit.load(str(archive), map_location="cpu").state_dict())

    def no_torchscript(*args, **kwargs):
        raise AssertionError("torch.jit.load used")

    monkeypatch.setattr(torch.jit, "load", no_torchscript)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = read_checkpoint(archive).state_dict
    assert list(state) == list(expected)
    for key, tensor in expected.items():
        assert (state[key].dtype, state[key].shape, state[key].stride()) == (tensor.dtype, tensor.shape,
                                                                            tensor.stride()), key
        assert torch.equal(state[key], tensor), key


def test_an_archive_that_names_other_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    payload = (b"\x80\x02cos\nsystem\nq\x00X" + len(f"touch {marker}").to_bytes(4, "little") +
               f"touch {marker}".encode() + b"q\x01\x85q\x02Rq\x03.")
    path = tmp_path / "ViT-evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ViT-evil/data.pkl", payload)
        archive.writestr("ViT-evil/constants.pkl", b"\x80\x02).")
    with pytest.raises(openai_archive.ArchiveError, match="os.system"):
        openai_archive.read_state_dict(path)
    with pytest.raises(BackboneError, match=f"^--pretrained {path}: not a readable checkpoint"):
        read_checkpoint(path)
    assert not marker.exists()
