"""The harness as users run it: from a folder of their own, with another copy of the project possibly installed,
pressing Ctrl-C whenever they like. Each test starts ``run_bench.py`` in a subprocess from a folder outside the
checkout and checks the exit status, the one line it prints and that an earlier result is byte for byte as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import build_parser, resolve_paths

ROOT = Path(__file__).resolve().parent.parent
RUN_BENCH = ROOT / "run_bench.py"
EARLIER = ROOT / "results" / "ci-all-strategies" / "full__f2_b16_s0.json"  # no smoke run has its id
SMOKE = ["--preset", "smoke", "--strategies", "frozen"]
RESULT = "frozen__f2_b16_s0.json"
PROJECT = ("bench", "data", "experiments", "models", "strategies", "run_bench.py", "pyproject.toml")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def environment(**extra: str) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", **extra}


def run_cli(args: list, *, cwd: Path, env: dict | None = None, script: Path = RUN_BENCH
            ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env or environment(),
                          capture_output=True, text=True, errors="replace", timeout=900)


def only_line(done: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single line an input or environment error prints (exit 2 unless said otherwise)."""
    assert done.returncode == code, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr[-3000:]
    return done.stderr.strip()


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """The caller's folder, outside the checkout; ``runs/`` there holds an earlier result nothing may touch."""
    (tmp_path / "elsewhere" / "runs").mkdir(parents=True)
    shutil.copy(EARLIER, tmp_path / "elsewhere" / "runs" / EARLIER.name)
    return tmp_path / "elsewhere"


def assert_kept(out: Path) -> None:
    assert (out / EARLIER.name).read_bytes() == EARLIER.read_bytes()


# ---------------------------------------------------------------------------------------------------------------------
# paths: resolved against the caller's folder (or the file that names them); duplicates collapse


@pytest.fixture(scope="module")
def sweep_elsewhere(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One sweep started from a folder of its own, everything given relative to it: a preset that extends another
    by a path relative to itself, weights, the output folder, the data cache (an environment variable); every axis
    value given twice."""
    folder = tmp_path_factory.mktemp("caller")
    (folder / "presets").mkdir()
    shutil.copy(ROOT / "experiments" / "presets" / "smoke.json", folder / "presets" / "base.json")
    (folder / "presets" / "mine.json").write_text(json.dumps({"extends": "base.json", "train": {"lr": 0.002}}))
    _micro_weights(folder / "micro.safetensors")
    (folder / "runs").mkdir()
    shutil.copy(EARLIER, folder / "runs" / EARLIER.name)
    args = ["--preset", "presets/mine.json", "--strategies", "frozen,frozen", "--seeds", "0,0",
            "--pretrained", "micro.safetensors", "--out", "runs"]
    return folder, run_cli(args, cwd=folder, env=environment(PAR_BENCH_CACHE_DIR="cache"))


def _micro_weights(path: Path) -> None:
    from safetensors.torch import save_file

    from models.backbone import create_clip

    state = create_clip("par-vit-micro", None).state_dict()
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))


def test_a_sweep_from_another_folder_reads_and_writes_where_the_caller_said(sweep_elsewhere):
    folder, done = sweep_elsewhere
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((folder / "runs" / RESULT).read_text())
    assert record["run"]["status"] == "ok"
    assert record["run"]["config"]["model"]["pretrained"] == str(folder / "micro.safetensors")
    assert record["run"]["config"]["train"]["lr"] == 0.002  # presets/mine.json, over presets/base.json
    assert any((folder / "cache").rglob("*")), "PAR_BENCH_CACHE_DIR=cache is the caller's folder"
    assert_kept(folder / "runs")


def test_a_seed_or_strategy_given_twice_is_one_run(sweep_elsewhere):
    folder, done = sweep_elsewhere
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (folder / "runs").glob("*.json")) == sorted([RESULT, EARLIER.name])
    assert "[1/1] frozen__f2_b16_s0" in done.stdout and "/2]" not in done.stdout


def test_every_path_of_the_command_line_is_made_absolute_once(tmp_path, monkeypatch):
    """The same rule for the options the end-to-end sweep does not exercise (a real dataset's root, the gate's
    baseline, the Slurm settings) and for environment variables naming folders; words are left as they are."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pt").write_bytes(b"")
    args = build_parser().parse_args(["--out", "o", "--data-root", "d", "--check", "c.json", "--slurm-config",
                                      "s.json", "--pretrained", "w.pt"])
    env = {"PAR_BENCH_CACHE_DIR": "off", "TORCH_HOME": "th", "HF_HOME": "~/hf"}
    resolve_paths(args, environ=env)
    assert (args.out, args.check, args.slurm_config) == (tmp_path / "o", tmp_path / "c.json", tmp_path / "s.json")
    assert (args.data_root, args.pretrained) == (str(tmp_path / "d"), str(tmp_path / "w.pt"))
    assert env == {"PAR_BENCH_CACHE_DIR": "off", "TORCH_HOME": str(tmp_path / "th"),
                   "HF_HOME": str(Path.home() / "hf")}
    tag = build_parser().parse_args(["--pretrained", "openai"])
    resolve_paths(tag, environ={})
    assert tag.pretrained == "openai" and tag.out == tmp_path / "runs" / "default"


# ---------------------------------------------------------------------------------------------------------------------
# code: workers run the checkout whose run_bench.py was started, never an installed copy

PROBE = '''
"""A strategy that writes where every module of the project it sees was imported from."""
import json
import os
import sys
from dataclasses import dataclass

from strategies.registry import StrategyOptions, register


@dataclass(frozen=True)
class ProbeConfig(StrategyOptions):
    """No parameters."""


def apply(model, cfg):
    files = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())
             if name.split(".")[0] in ("bench", "strategies", "models", "data", "run_bench")}
    with open(f"{os.environ['PROBE_OUT']}.{os.getpid()}", "w") as handle:
        json.dump(files, handle)
    return model


register("probe", config=ProbeConfig, apply=apply, description="where the project's modules came from")
'''


@pytest.fixture(scope="module")
def two_copies(tmp_path_factory) -> tuple[Path, Path, str]:
    """Copies A and B of the project, each its own git repository; B differs (it has the probe strategy). A plays
    the installed copy (first on ``PYTHONPATH``). Returns A, B and B's commit."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    base = tmp_path_factory.mktemp("copies")
    copies = [base / "A", base / "B"]
    for copy in copies:
        for name in PROJECT:
            source, target = ROOT / name, copy / name
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "weights"))
            else:
                shutil.copy2(source, target)
    (copies[1] / "strategies" / "probe.py").write_text(PROBE)
    return copies[0], copies[1], [_commit(copy) for copy in copies][1]


def _commit(folder: Path) -> str:
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "-c", "commit.gpgsign=false"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", folder.name]):
        subprocess.run([*git, *command], cwd=folder, check=True, capture_output=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, check=True, capture_output=True,
                          text=True).stdout.strip()


LAUNCHERS = {"forked worker": [], "torchrun": ["--nproc-per-node", "2"],
             "submitit": ["--launcher", "slurm", "--slurm-config", "slurm.json"]}


@pytest.mark.parametrize("launcher", LAUNCHERS, ids=list(LAUNCHERS))
def test_workers_run_the_invoked_checkout_not_an_installed_copy(launcher, two_copies, elsewhere):
    if launcher == "submitit":
        pytest.importorskip("submitit")
    (elsewhere / "slurm.json").write_text(json.dumps({"cluster": "local"}))
    copy_a, copy_b, commit_b = two_copies
    env = environment(PYTHONPATH=str(copy_a), PROBE_OUT=str(elsewhere / "probe"))
    done = run_cli(["--preset", "smoke", "--strategies", "probe", *LAUNCHERS[launcher], "--out", "runs"],
                   cwd=elsewhere, env=env, script=copy_b / "run_bench.py")
    assert done.returncode == 0, done.stderr[-3000:]
    probes = [json.loads(path.read_text()) for path in elsewhere.glob("probe.*")]
    assert probes and all("bench.training.run" in files for files in probes)  # the training loop ran here
    foreign = {name: path for files in probes for name, path in files.items()
               if not (path or "").startswith(f"{copy_b}{os.sep}")}
    assert foreign == {}
    run = json.loads((elsewhere / "runs" / "probe__f2_b16_s0.json").read_text())["run"]
    assert (run["git_commit"], run["git_dirty"]) == (commit_b, False)
    assert_kept(elsewhere / "runs")


# ---------------------------------------------------------------------------------------------------------------------
# input errors: one line, exit 2, before any work


def test_a_batch_larger_than_the_training_split_is_refused(elsewhere):
    line = only_line(run_cli([*SMOKE, "--batch-size", "16,100", "--out", "runs"], cwd=elsewhere))
    assert line == "error: --batch-size 100: larger than the train split (64 clips, data.num_train); choose at most 64"
    assert sorted(p.name for p in (elsewhere / "runs").iterdir()) == [EARLIER.name]


PLUGIN = '''
from dataclasses import dataclass

from strategies.registry import StrategyOptions, register


@dataclass(frozen=True)
class ClashConfig(StrategyOptions):
    """No parameters."""


def apply(model, cfg):
    return model


register({name!r}, config=ClashConfig, apply=apply, description="a plugin named like a built-in")
'''
CLASHES = {"family": ("frozen", "has the name of the strategy of the built-in module strategies.frozen; rename the "
                                "one of plugin 'clash'"),
           "variant": ("lora_mlp", f"has the name of the built-in variant {ROOT}/experiments/strategies/lora_mlp.json;"
                                   " rename the plugin's strategy")}


@pytest.mark.parametrize("kind", CLASHES, ids=list(CLASHES))
def test_a_plugin_named_like_a_built_in_strategy_is_one_line(kind, elsewhere):
    name, expected = CLASHES[kind]
    (elsewhere / "clash.py").write_text(PLUGIN.format(name=name))
    env = environment(PAR_BENCH_PLUGINS="clash", PYTHONPATH=".")  # a plugin folder given relative to the caller
    line = only_line(run_cli([*SMOKE, "--out", "runs"], cwd=elsewhere, env=env))
    assert f"strategy {name!r} of plugin 'clash' ({elsewhere / 'clash.py'})" in line and expected in line, line
    assert sorted(p.name for p in (elsewhere / "runs").iterdir()) == [EARLIER.name]


# ---------------------------------------------------------------------------------------------------------------------
# environment errors: one line naming the file and what to do, exit 2, earlier results intact


def test_an_out_folder_whose_name_is_not_utf8_is_refused(elsewhere):
    line = only_line(run_cli([*SMOKE, "--out", b"runs\xff"], cwd=elsewhere))
    assert line == (f"error: --out {elsewhere}/runs\\xff: the name is not valid UTF-8, which the records and the "
                    "report must hold; rename it or choose another path")
    assert not os.path.exists(os.fsencode(elsewhere) + b"/runs\xff")


FULL_DISK = '''
"""Loaded by every Python process of the test: the disk is full for files named FULL_DISK_FOR, as the kernel says
when the data of a file is flushed."""
import errno
import os

_fsync = os.fsync


def fsync(fd):
    if os.environ.get("FULL_DISK_FOR", "\\0") in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _fsync(fd)


os.fsync = fsync
'''


@linux_only
def test_a_full_disk_while_a_result_is_written_is_one_line(elsewhere):
    (elsewhere / "full_disk").mkdir()
    (elsewhere / "full_disk" / "sitecustomize.py").write_text(FULL_DISK)
    env = environment(PYTHONPATH=str(elsewhere / "full_disk"), FULL_DISK_FOR=RESULT)
    done = run_cli([*SMOKE, "--out", "runs"], cwd=elsewhere, env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {elsewhere / 'runs' / RESULT}: No space left on device (free space there or choose "
                      "another folder)"] == done.stderr.strip().splitlines()[-1:]
    assert sorted(p.name for p in (elsewhere / "runs").glob("*.json")) == [EARLIER.name]
    assert not [p for p in (elsewhere / "runs").rglob("*") if p.name.endswith((".tmp", RESULT))]
    assert_kept(elsewhere / "runs")


# ---------------------------------------------------------------------------------------------------------------------
# Ctrl-C at any moment: one line, 130, nothing half-written


def _start(args: list, cwd: Path) -> subprocess.Popen:
    """The command line in a session of its own, SIGINT at its default (a background test run ignores it)."""
    return subprocess.Popen([sys.executable, str(RUN_BENCH), *args], cwd=cwd, env=environment(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _interrupted(sweep: subprocess.Popen, out: Path) -> None:
    os.killpg(sweep.pid, signal.SIGINT)  # what a terminal sends to its foreground process group
    stdout, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted: "), stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.json")) == [EARLIER.name]
    assert_kept(out)


@pytest.mark.parametrize("after_s", [0.2, 0.6, 1.5, 4.0])
def test_ctrl_c_during_start_up_is_one_line_and_130(after_s, elsewhere):
    """From the interpreter's first imports on (torch, pandas: seconds) through the checks before any run."""
    sweep = _start([*SMOKE, "--epochs", "100000", "--out", "runs"], elsewhere)
    time.sleep(after_s)
    _interrupted(sweep, elsewhere / "runs")


SWALLOWED = {  # what libraries do to a Ctrl-C that lands in their import: drop it, or report it as another error
    "dropped": "except:  # noqa: E722\n    pass",
    "turned-into-an-import-error": "except KeyboardInterrupt:\n    raise ModuleNotFoundError('no module extra')",
}


@pytest.mark.parametrize("swallowed", SWALLOWED, ids=list(SWALLOWED))
def test_a_ctrl_c_a_library_swallows_still_ends_the_command_before_any_run(swallowed, elsewhere):
    """The keypress lands inside an import (here a strategy plugin's) whose code swallows it: the command must not go
    on to run for hours, nor call it a bug. Ctrl-C is remembered by the boundary and honoured before any run."""
    (elsewhere / "plugins").mkdir()
    (elsewhere / "plugins" / "swallows_ctrl_c.py").write_text(
        f"import os\nimport signal\nimport time\n\ntry:\n    os.kill(os.getpid(), signal.SIGINT)\n"
        f"    time.sleep(2)\n{SWALLOWED[swallowed]}\n")
    env = environment(PYTHONPATH=str(elsewhere / "plugins"), PAR_BENCH_PLUGINS="swallows_ctrl_c")
    sweep = subprocess.Popen([sys.executable, str(RUN_BENCH), *SMOKE, "--epochs", "100000", "--out", "runs"],
                             cwd=elsewhere, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stdout, stderr = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, stderr[-3000:]
    assert "running" not in stdout and "Traceback" not in stdout + stderr, stdout + stderr[-3000:]
    assert stderr.strip().splitlines() == ["interrupted: nothing half-written was kept"]
    assert sorted(p.name for p in (elsewhere / "runs").glob("*.json")) == [EARLIER.name]
    assert_kept(elsewhere / "runs")


@linux_only
def test_ctrl_c_while_the_fork_server_starts_is_one_line_and_130(elsewhere):
    """The fork server preloads torch for seconds before the first worker exists; a Ctrl-C then must not print
    its traceback, and it must leave when the sweep has."""
    sweep = _start([*SMOKE, "--epochs", "100000", "--out", "runs"], elsewhere)
    deadline = time.monotonic() + 300
    while not _fork_servers(sweep.pid):
        assert time.monotonic() < deadline and sweep.poll() is None, "the sweep never started its fork server"
        time.sleep(0.05)
    _interrupted(sweep, elsewhere / "runs")
    deadline = time.monotonic() + 120
    while _fork_servers(sweep.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _fork_servers(sweep.pid)


@linux_only
def test_ctrl_c_stops_every_slot_of_a_pool_at_once(elsewhere):
    """Ctrl-C reaches only the sweep's main thread; the slot threads must stop their workers too, not run on."""
    sweep = _start(["--preset", "smoke", "--strategies", "frozen,bitfit", "--jobs", "2", "--epochs", "100000", "--out",
                    "runs"], elsewhere)
    deadline = time.monotonic() + 300
    while len(_processes(sweep.pid, b"bench-worker")) < 2:
        assert time.monotonic() < deadline and sweep.poll() is None, "the pool never ran two workers"
        time.sleep(0.1)
    _interrupted(sweep, elsewhere / "runs")
    assert _processes(sweep.pid, b"bench-worker") == []


def _fork_servers(session: int) -> list[int]:
    return _processes(session, b"multiprocessing.forkserver")


def _processes(session: int, marker: bytes) -> list[int]:
    """Live processes of ``session`` whose command line or name holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getsid(int(entry.name)) == session and \
                    marker in (entry / "cmdline").read_bytes() + (entry / "comm").read_bytes():
                found.append(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
    return found
