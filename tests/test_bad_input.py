"""Bad input ends in one line naming the file or field, the value and what was expected, exit code 2, before any
work, and nothing earlier is lost. Each case is small: validation happens before a run starts, so almost none
trains. The config checks are also asserted generically, field by field, so a field added later is covered."""
from __future__ import annotations

import csv
import dataclasses
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import run_bench
from bench import boundary
from bench.config import (
    EXPERIMENTS_DIR,
    ConfigError,
    DataConfig,
    ModelConfig,
    PresetConfig,
    ProfileConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from bench.measure.metrics import SCALAR_METRICS, evaluate
from bench.records import ResultFileError, is_finished, read_result, write_atomic
from bench.reporting import report
from bench.runner.experiments import load_preset, run_config
from bench.runner.lifeline import FolderInUseError, FolderLock
from bench.training.run import TrainingFailed, check_epoch
from data.manifest import DatasetError, read_manifest
from data.prepare import main as prepare_main
from data.schema import get_schema
from tests.real_fixtures import make_mars_fixture

ROOT = Path(__file__).resolve().parent.parent
EARLIER = ROOT / "results" / "ci-all-strategies" / "frozen__f2_b16_s0.json"
SMOKE = ["--strategies", "frozen"]
SECTIONS = (DataConfig, ModelConfig, TrainConfig, ProfileConfig, StrategyConfig)


@pytest.fixture
def out(tmp_path) -> Path:
    """An output folder that already holds a finished result, which no bad input may touch."""
    folder = tmp_path / "runs"
    folder.mkdir()
    shutil.copy(EARLIER, folder / EARLIER.name)
    return folder


def assert_untouched(folder: Path) -> None:
    """The earlier result is byte for byte as it was, and nothing else was left behind (an empty ``.attempts``
    folder and the sweep's ``.lock`` aside)."""
    assert (folder / EARLIER.name).read_bytes() == EARLIER.read_bytes()
    left = [p.name for p in folder.iterdir() if p.name != ".lock" and not (p.name == ".attempts" and
                                                                          not any(p.iterdir()))]
    assert sorted(left) == [EARLIER.name]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("error: "), err
    return err


def preset_file(tmp_path: Path, change: dict | list) -> str:
    """The smoke preset with ``change`` merged in (a list replaces the whole file), as a preset path."""
    smoke = json.loads((EXPERIMENTS_DIR / "presets" / "smoke.json").read_text())
    if isinstance(change, dict):
        for section, values in change.items():
            smoke[section] = {**smoke.get(section, {}), **values} if isinstance(values, dict) else values
    path = tmp_path / "bad_preset.json"
    path.write_text(json.dumps(change if isinstance(change, list) else smoke))
    return str(path)


# ---------------------------------------------------------------------------------------------------------------------
# config values: one line naming the field, the value and what was expected; exit 2; nothing run

PRESET_CASES = {
    "max_steps_per_epoch 0": ({"train": {"max_steps_per_epoch": 0}}, "train.max_steps_per_epoch: expected >= 1, got 0"),
    "fusion_heads 0": ({"model": {"fusion_heads": 0}}, "model.fusion_heads: expected >= 1, got 0"),
    "select_metric": ({"train": {"select_metric": "nonsense"}}, "train.select_metric: expected one of 'paper_f1', "),
    "weight_decay < 0": ({"train": {"weight_decay": -1}}, "train.weight_decay: expected >= 0, got -1.0"),
    "num_workers < 0": ({"data": {"num_workers": -1}}, "data.num_workers: expected >= 0, got -1"),
    "warmup_epochs < 0": ({"train": {"warmup_epochs": -0.5}}, "train.warmup_epochs: expected >= 0, got -0.5"),
    "lr NaN": ({"train": {"lr": float("nan")}}, "train.lr: expected a finite number, got nan"),
    "threshold 1": ({"train": {"threshold": 1}}, "train.threshold: expected < 1, got 1.0"),
    "backbone typo": ({"model": {"backbone": "ViT-B-61"}}, "model.backbone: unknown open_clip architecture 'ViT-B-61'"),
    "unknown family": ({"strategy_defaults": {"nosuch": {"width": 3}}},
                       "strategy_defaults: unknown strategy family 'nosuch'; registered: adapter,"),
    "family param typo": ({"strategy_defaults": {"side": {"widht": 3}}},
                          "strategy_defaults: side: strategy 'side': unknown parameter(s) ['widht']"),
    "family param out of range": ({"strategy_defaults": {"lora": {"r": 0}}},
                                  "strategy_defaults: lora: strategy 'lora': r: expected >= 1, got 0"),
    "family param wrong type": ({"strategy_defaults": {"prompt": {"init": 3}}},
                                "strategy_defaults: prompt: strategy 'prompt': init: expected a string, got 3"),
    "preset is a list": ([1, 2], "expected a JSON object {...} at the top level, got list"),
}


@pytest.mark.parametrize("case", PRESET_CASES, ids=list(PRESET_CASES))
def test_bad_preset_value_is_one_line_naming_the_field(case, tmp_path, out, capsys):
    change, expected = PRESET_CASES[case]
    path = preset_file(tmp_path, change)
    assert run_bench.main(["--preset", path, *SMOKE, "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {path}: ") and expected in line, line
    assert_untouched(out)


FLAG_CASES = {
    "--seed -1": (["--seed", "-1"], "train.seed: expected >= 0, got -1"),
    "--epochs 0": (["--epochs", "0"], "train.epochs: expected >= 1, got 0"),
    "--frames 0": (["--frames", "0"], "data.frames: expected >= 1, got 0"),
    "--data-root with synthetic": (["--data-root", "/nonexistent"],
                                   "data.data_root: '/nonexistent' given, but data.dataset 'synthetic' reads no files"),
    "--data-root missing": (["--dataset", "mars", "--data-root", "/nonexistent"],
                            "data.data_root: '/nonexistent' is not an existing folder"),
    "--device cuda:7": (["--device", "cuda:7"], "train.device: 'cuda:7' asked for, but this machine has"),
    "--device tpu": (["--device", "tpu"], "train.device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
    "--preset missing file": (["--preset", "nowhere.json"], "--preset 'nowhere.json': no such file"),
}


@pytest.mark.parametrize("case", FLAG_CASES, ids=list(FLAG_CASES))
def test_bad_flag_value_is_one_line_naming_the_field(case, out, capsys):
    flags, expected = FLAG_CASES[case]
    args = ["--preset", "smoke", *SMOKE, *flags, "--out", str(out)]
    assert run_bench.main(args) == 2
    line = one_error_line(capsys)
    assert expected in line, line
    assert_untouched(out)


def _fields(cls) -> list[tuple[dataclasses.Field, typing.Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(hints[f.name])]


def _numeric(annotation) -> bool:
    return any(arg in (int, float) for arg in (typing.get_args(annotation) or (annotation,)))


def test_every_config_field_declares_help_and_numbers_declare_a_range():
    """Complete by construction: a field without a help text, or a number without a declared range, fails here."""
    for cls in (*SECTIONS, PresetConfig):
        for f, annotation in _fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name}: no help text"
            if _numeric(annotation):
                assert {"min", "max", "above", "below", "choices"} & set(f.metadata), \
                    f"{cls.__name__}.{f.name}: a number without a declared range"


def _sections():
    return [(cls.SECTION, f, annotation) for cls in SECTIONS for f, annotation in _fields(cls)]


@pytest.mark.parametrize("section,f,annotation", _sections(), ids=[f"{s}.{f.name}" for s, f, _ in _sections()])
def test_every_field_rejects_a_wrong_type_and_an_out_of_range_value_by_name(section, f, annotation):
    """Generic over the fields: a value of the wrong type, and one just past each declared bound, fail with the
    field's dotted path; the message says what was expected."""
    with pytest.raises(ConfigError, match=rf"^{section}\.{f.name}: expected "):
        RunConfig.from_dict({section: {f.name: [["wrong type"]]}})
    step = 1 if int in (typing.get_args(annotation) or (annotation,)) else 0.5
    for rule, bad in (("min", lambda b: b - step), ("above", lambda b: b), ("max", lambda b: b + step),
                      ("below", lambda b: b)):
        if rule in f.metadata:
            with pytest.raises(ConfigError, match=rf"^{section}\.{f.name}: expected [<>]=? "):
                RunConfig.from_dict({section: {f.name: bad(f.metadata[rule])}})


def test_select_metric_choices_are_the_keys_metrics_evaluate_returns():
    """``SCALAR_METRICS`` names every float ``evaluate`` returns on the embedded default's schema, no more; each
    one is a valid checkpoint-selection choice, and a name it lacks is refused."""
    schema = get_schema("synthetic")
    labels = np.zeros((3, schema.num_columns))
    labels[0] = 1
    result = evaluate(np.full((3, schema.num_columns), 0.4), labels, schema)
    assert sorted(k for k, v in result.items() if isinstance(v, float)) == sorted(SCALAR_METRICS)
    assert "num_samples" not in SCALAR_METRICS  # an int count, not a metric to select by
    for name in SCALAR_METRICS:
        assert RunConfig.from_dict({"train": {"select_metric": name}}).train.select_metric == name
    with pytest.raises(ConfigError, match="train.select_metric"):
        RunConfig.from_dict({"train": {"select_metric": "macro_f2"}})


def test_strategy_params_go_through_the_same_validator(tmp_path):
    base = load_preset("smoke")
    base["strategy_defaults"] = {"lora": {"targets": "mlp"}}  # a string where a list is declared
    with pytest.raises(ValueError, match="strategy 'lora'"):
        run_config(base, "lora", seed=0, frames=2, batch_size=4)
    base["strategy_defaults"] = {"adapter": {"layers": [0, "1"]}}
    with pytest.raises(ValueError, match="layers"):
        run_config(base, "adapter", seed=0, frames=2, batch_size=4)


def test_every_shipped_preset_still_loads():
    for name in ("default", "smoke", "ci", "paper", "paper-profile"):
        PresetConfig.from_dict(load_preset(name))


# ---------------------------------------------------------------------------------------------------------------------
# the output folder: a file, read-only, full, in use

def test_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("mine")
    assert run_bench.main(["--preset", "smoke", *SMOKE, "--out", str(target)]) == 2
    assert one_error_line(capsys) == f"error: --out {target}: is a file, expected a folder"
    assert target.read_text() == "mine"


@pytest.mark.parametrize("code,reason", [(errno.EROFS, "Read-only file system"),
                                         (errno.ENOSPC, "No space left on device"),
                                         (errno.EACCES, "Permission denied")], ids=["read-only", "full", "denied"])
def test_out_not_writable_fails_before_any_work(code, reason, out, capsys, monkeypatch):
    def refuse(handle, size):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(boundary, "write_probe", refuse)
    assert run_bench.main(["--preset", "smoke", *SMOKE, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    line = captured.err.strip()
    assert line.startswith(f"error: --out {out}: not writable ({reason}") and "\n" not in line, line
    assert "running" not in captured.out
    assert_untouched(out)


def test_a_second_sweep_into_a_folder_in_use_refuses_naming_the_holder(out, capsys):
    with FolderLock(out):
        assert run_bench.main(["--preset", "smoke", *SMOKE, "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert f"--out {out}: in use by pid {os.getpid()} on " in line and "--wait-lock" in line
    assert_untouched(out)


def test_wait_lock_waits_for_the_holder_and_a_dead_holder_blocks_nobody(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone"}))  # its process ended long ago
    with FolderLock(tmp_path):
        pass
    first = FolderLock(tmp_path).__enter__()
    threading.Timer(0.5, first.__exit__).start()
    start = time.perf_counter()
    with pytest.raises(FolderInUseError):
        FolderLock(tmp_path).__enter__()
    with FolderLock(tmp_path, wait=True):
        assert time.perf_counter() - start >= 0.4
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


# ---------------------------------------------------------------------------------------------------------------------
# plugins, result files, reports

PLUGINS = {
    "syntax error": ("def broken(:\n", "has a syntax error: invalid syntax"),
    "raises at import": ("raise RuntimeError('plugin exploded')\n", "failed at import: RuntimeError: plugin exploded"),
    "missing dependency": ("import no_such_dependency_xyz\n",
                           "failed at import: ModuleNotFoundError: No module named 'no_such_dependency_xyz'"),
}


@pytest.mark.parametrize("case", PLUGINS, ids=list(PLUGINS))
def test_broken_plugin_is_one_line_naming_its_file(case, tmp_path, out, capsys, monkeypatch):
    source, expected = PLUGINS[case]
    name = f"broken_plugin_{abs(hash(case))}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PAR_BENCH_PLUGINS", name)
    assert run_bench.main(["--preset", "smoke", *SMOKE, "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert f"plugin {name!r} ({tmp_path / name}.py" in line and expected in line, line
    assert_untouched(out)


@pytest.mark.parametrize("payload", [[], [1, 2], "text", {"schema_version": 1, "run": []}], ids=str)
def test_a_result_file_that_is_not_a_record_is_named_not_crashed_on(payload, tmp_path, capsys):
    bad = tmp_path / "frozen__f2_b16_s0.json"
    bad.write_text(json.dumps(payload))
    with pytest.raises(ResultFileError, match=f"^{bad}: "):
        read_result(bad)
    assert report.main([str(tmp_path)]) == 2
    assert one_error_line(capsys) == f"error: {tmp_path}: no readable result JSON (*.json) found"
    shutil.copy(EARLIER, tmp_path / "good.json")
    assert report.main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    assert f"warning: skipped {bad}: " in capsys.readouterr().out
    assert not is_finished(bad, RunConfig())  # a sweep redoes that run, saying why, and keeps the file aside
    kept = next((tmp_path / "set-aside").iterdir())
    assert str(bad) in capsys.readouterr().err and kept.read_text() == json.dumps(payload) and not bad.exists()


def test_a_duplicated_result_file_is_not_an_extra_seed(tmp_path, capsys):
    shutil.copy(EARLIER, tmp_path / EARLIER.name)
    shutil.copy(EARLIER, tmp_path / f"{EARLIER.stem} (copy).json")
    scan = report.scan_folder(tmp_path)
    assert len(scan.records) == 1 and len(scan.duplicates) == 1 and "(copy).json" in scan.duplicates[0]
    agg = report.aggregate(report.to_frame(scan.records))
    assert agg["seeds"].tolist() == [1]


def test_report_on_a_full_disk_keeps_the_previous_report_and_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    shutil.copy(EARLIER, tmp_path / EARLIER.name)
    assert report.main([str(tmp_path)]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "report").iterdir()}
    capsys.readouterr()

    def full_disk(self, handle, *args, **kwargs):
        handle.write("run_id,strat")  # part of the file, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    assert report.main([str(tmp_path)]) == 2
    line = one_error_line(capsys)
    written_first = re.match(rf"error: {re.escape(str(tmp_path / 'report'))}/(\w+\.csv): No space left on device", line)
    assert written_first, line  # names the file it was writing (statistics.csv or summary.csv: whichever comes first)
    assert {p.name: p.read_bytes() for p in (tmp_path / "report").iterdir()} == before  # no 0-byte, no .tmp


def test_atomic_write_names_the_file_and_cleans_up(tmp_path):
    target = tmp_path / "table.md"
    target.write_text("old")

    def fail(handle):
        handle.write("new, half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as raised:
        write_atomic(target, fail)
    assert raised.value.filename == str(target) and target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]


# ---------------------------------------------------------------------------------------------------------------------
# datasets

@pytest.fixture(scope="module")
def mars_root(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("bad_mars")
    assert prepare_main(["mars", "--raw", str(make_mars_fixture(work / "download")), "--out", str(work / "mars")]) == 0
    return work / "mars"


def _edit_manifest(root: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "mars"
    shutil.copytree(root, copy)
    with open(copy / "manifest.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    edit(rows)
    with open(copy / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return copy


@pytest.mark.parametrize("value", ["2", "-1", "x"])
def test_manifest_label_that_is_not_0_or_1_names_file_line_and_column(value, mars_root, tmp_path, out, capsys):
    def set_label(rows):
        rows[3][7] = value

    root = _edit_manifest(mars_root, tmp_path, set_label)
    column = read_csv_header(root)[7]
    with pytest.raises(DatasetError, match=f"line 4, column '{column}': label '{value}', expected 0 or 1"):
        read_manifest(root)
    args = ["--preset", "smoke", *SMOKE, "--dataset", "mars", "--data-root", str(root), "--out", str(out)]
    assert run_bench.main(args) == 2  # read before any run starts
    line = one_error_line(capsys)
    assert f"{root / 'manifest.csv'}: line 4, column '{column}'" in line
    assert_untouched(out)


def read_csv_header(root: Path) -> list[str]:
    with open(root / "manifest.csv", newline="") as fh:
        return next(csv.reader(fh))


def test_empty_tracklet_says_so(mars_root, tmp_path):
    victim = {}

    def empty(rows):
        victim["id"], rows[1][4] = rows[1][0], "0"

    root = _edit_manifest(mars_root, tmp_path, empty)
    frames = [r for r in csv.reader((root / "frames.csv").read_text().splitlines()) if r[0] != victim["id"]]
    with open(root / "frames.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(frames)
    with pytest.raises(DatasetError, match=f"track {victim['id']} lists no frames \\(an empty tracklet"):
        read_manifest(root)


def _jpegs(raw: Path) -> list[Path]:
    return sorted((raw / "bbox_train").rglob("*.jpg"))


def test_prepare_skips_unreadable_images_and_says_so(tmp_path, capsys):
    raw = make_mars_fixture(tmp_path / "download")
    jpegs = _jpegs(raw)
    jpegs[0].write_bytes(b"not a jpeg")
    whole_track = [p for p in jpegs if p.parent == jpegs[-1].parent and p.name[:11] == jpegs[-1].name[:11]]
    for path in whole_track:
        path.write_bytes(b"")
    assert prepare_main(["mars", "--raw", str(raw), "--out", str(tmp_path / "root")]) == 0
    printed = capsys.readouterr().out
    assert f"unreadable_frames {1 + len(whole_track)}, tracklets_without_readable_frames 1" in printed
    assert "images checked (open): " in printed and "; unreadable, first: bbox_train/" in printed
    report_json = json.loads((tmp_path / "root" / "prepare_report.json").read_text())
    assert report_json["unreadable_frames"] == 1 + len(whole_track) and report_json["image_check"] == "open"
    first = f"{jpegs[0].relative_to(raw)}: UnidentifiedImageError"
    assert any(example.startswith(first) for example in report_json["unreadable_examples"])
    listed = (tmp_path / "root" / "frames.csv").read_text()
    assert str(jpegs[0].relative_to(raw)) not in listed and whole_track[0].name not in listed
    read_manifest(tmp_path / "root")  # what remains is consistent


def test_check_images_also_catches_a_truncated_jpeg(tmp_path, capsys):
    raw = make_mars_fixture(tmp_path / "download")
    victim = _jpegs(raw)[0]
    noise = np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(victim, quality=95)  # enough entropy-coded data to cut into
    victim.write_bytes(victim.read_bytes()[: int(victim.stat().st_size * 0.6)])
    assert prepare_main(["mars", "--raw", str(raw), "--out", str(tmp_path / "open")]) == 0
    assert json.loads((tmp_path / "open" / "prepare_report.json").read_text())["unreadable_frames"] == 0
    assert prepare_main(["mars", "--raw", str(raw), "--out", str(tmp_path / "decoded"), "--check-images"]) == 0
    decoded = json.loads((tmp_path / "decoded" / "prepare_report.json").read_text())
    assert decoded["unreadable_frames"] == 1 and "truncated" in decoded["unreadable_examples"][0]


# ---------------------------------------------------------------------------------------------------------------------
# training that learns nothing is not "ok"

class _Loader:
    dataset = list(range(8))

    def __len__(self):
        return 0


def test_an_epoch_without_steps_or_with_a_nan_loss_fails_the_run():
    from bench.training.train import TrainOutcome

    with pytest.raises(TrainingFailed, match="epoch 1 took no training step"):
        check_epoch(float("nan"), epoch=0, steps_before=0, outcome=TrainOutcome(), loader=_Loader())
    with pytest.raises(TrainingFailed, match="train loss is nan in epoch 2 .after 6 steps.: training diverged"):
        check_epoch(float("nan"), epoch=1, steps_before=3, outcome=TrainOutcome(steps=6), loader=_Loader())
    check_epoch(0.7, epoch=0, steps_before=0, outcome=TrainOutcome(steps=3), loader=_Loader())


# ---------------------------------------------------------------------------------------------------------------------
# the boundary itself, and every entry point behind it

def test_boundary_unexpected_error_is_one_line_with_where_the_traceback_is(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(boundary.TRACEBACK_DIR_ENV, str(tmp_path))

    @boundary.entry_point("demo")
    def crash(argv=None):
        raise KeyError("boom")

    assert crash() == boundary.EXIT_INTERNAL
    err = capsys.readouterr().err.strip()
    assert err.startswith("internal error: KeyError: 'boom' (full traceback in ") and "\n" not in err
    saved = Path(err.split("full traceback in ")[1].split(";")[0])
    assert saved.parent == tmp_path and "Traceback" in saved.read_text() and "boom" in saved.read_text()


BAD_INPUT_ERRORS = (  # module, class: every error type whose message is the whole story (one line, exit 2)
    ("bench.config", "ConfigError"), ("bench.records", "ResultFileError"), ("bench.records", "ResultAccessError"),
    ("bench.records", "OtherSettingError"), ("bench.measure.predictions", "PredictionsError"),
    ("bench.measure.profile", "ProfileError"), ("bench.measure.profile", "GpuBusyError"),
    ("bench.measure.metrics", "MetricsInputError"), ("bench.runner.lifeline", "FolderInUseError"),
    ("bench.reporting.tables", "ReportError"), ("bench.reporting.gate", "BaselineError"),
    ("bench.tools.pretrain", "PretrainError"), ("strategies.registry", "StrategyError"),
    ("models.backbone", "BackboneError"), ("models.par_model", "FusionInitError"),
    ("data.synthetic", "SyntheticDataError"), ("data.manifest", "DatasetError"))
NOT_BAD_INPUT = (("bench.training.run", "TrainingFailed"), ("bench.training.datasets", "SplitOverlapError"),
                 ("strategies.options", "OptionError"))


@pytest.mark.parametrize(("module", "name"), BAD_INPUT_ERRORS + NOT_BAD_INPUT, ids=lambda v: v)
def test_the_boundary_knows_the_project_errors_by_their_one_base(module, name, capsys, tmp_path, monkeypatch):
    """Every bad-input error is a ``BenchError`` (those below bench by their ``bad_input`` mark, bench/errors.py),
    and only those end in one line and exit 2; the others are bugs (exit 1, traceback saved)."""
    import importlib

    from bench.errors import BenchError

    monkeypatch.setenv(boundary.TRACEBACK_DIR_ENV, str(tmp_path))
    kind = getattr(importlib.import_module(module), name)
    known = (module, name) in BAD_INPUT_ERRORS
    assert issubclass(kind, BenchError) is known
    error = kind.__new__(kind)
    Exception.__init__(error, "the message")
    assert boundary.report_error("demo", error) == (boundary.EXIT_BAD_INPUT if known else boundary.EXIT_INTERNAL)
    assert capsys.readouterr().err.startswith("error: the message" if known else "internal error: ")


def test_boundary_interrupt_and_argparse_exit(capsys):
    @boundary.entry_point("demo")
    def interrupted(argv=None):
        raise KeyboardInterrupt("run x stopped; run the same command again to resume")

    assert interrupted() == 130
    assert capsys.readouterr().err.strip() == "interrupted: run x stopped; run the same command again to resume"

    @boundary.entry_point("demo")
    def usage(argv=None):
        raise SystemExit(2)

    with pytest.raises(SystemExit):
        usage()


def test_a_ctrl_c_a_library_swallowed_is_still_the_commands_end_and_the_next_command_starts_afresh(capsys):
    """In one process (a notebook, this suite): the keypress is remembered by the boundary of the command it hit,
    honoured where the command asks (``raise_if_interrupted``) or whatever error follows, and forgotten by the next."""
    @boundary.entry_point("demo")
    def swallowing(argv=None):
        try:
            signal.raise_signal(signal.SIGINT)
        except:  # noqa: E722  (what some library code does around its imports)
            pass
        boundary.raise_if_interrupted()
        return 0

    @boundary.entry_point("demo")
    def turning_it_into_an_error(argv=None):
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            raise ModuleNotFoundError("Could not import module 'SomeModel'") from None

    @boundary.entry_point("demo")
    def failing(argv=None):
        raise ValueError("a bad value")

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a foreground command
    try:
        assert swallowing() == 130
        assert capsys.readouterr().err == "interrupted: nothing half-written was kept\n"
        assert turning_it_into_an_error() == 130
        assert capsys.readouterr().err == "interrupted: nothing half-written was kept\n"
        assert failing() == 2
        assert capsys.readouterr().err == "error: a bad value\n"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_during_deferred_imports_waits_for_their_end_then_interrupts(capsys):
    """Inside ``ctrl_c_deferred`` (run_bench.py's imports) a keypress lets the block finish and interrupts at its
    end; outside, it interrupts at once."""
    finished = []

    @boundary.entry_point("demo")
    def importing(argv=None):
        with boundary.ctrl_c_deferred():
            signal.raise_signal(signal.SIGINT)
            finished.append("imports")
        finished.append("run")  # never reached
        return 0

    @boundary.entry_point("demo")
    def undeferred(argv=None):
        signal.raise_signal(signal.SIGINT)
        finished.append("undeferred")
        return 0

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a foreground command
    try:
        assert importing() == 130
        assert finished == ["imports"]
        assert capsys.readouterr().err == "interrupted: nothing half-written was kept\n"
        assert undeferred() == 130 and finished == ["imports"]
        with boundary.ctrl_c_deferred():  # without a keypress the block is transparent
            finished.append("quiet")
        assert finished == ["imports", "quiet"]
    finally:
        signal.signal(signal.SIGINT, previous)


class _PressesCtrlCWhenCollected:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)


def test_a_ctrl_c_that_lands_in_a_finalizer_is_delivered_again_not_dropped(capsys):
    """Python prints and drops an exception raised in ``__del__``; the boundary sends the keypress again after it."""
    @boundary.entry_point("demo")
    def collecting(argv=None):
        _PressesCtrlCWhenCollected()  # collected at once: its __del__ runs here
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pass
        return 0

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a foreground command
    try:
        started = time.monotonic()
        assert collecting() == 130
        assert time.monotonic() - started < 4
        assert capsys.readouterr().err == "interrupted: nothing half-written was kept\n"  # no "Exception ignored"
    finally:
        signal.signal(signal.SIGINT, previous)


IN_PROCESS = {
    "run_bench.py": (run_bench.main, ["--preset", "smoke", "--strategies", "frozen", "--out"]),
    "bench.reporting.report": (report.main, [str(EARLIER.parent), "--out"]),
    "bench.reporting.compare": ("bench.reporting.compare", [str(EARLIER.parent), str(EARLIER.parent), "--out"]),
    "bench.tools.reference": ("bench.tools.reference", ["--preset", "smoke", "--out"]),
}
MODULE_MAINS = {  # their boundary sits in the ``__main__`` guard, or the error type is ``__main__``'s: run as users do
    "bench.reporting.report": ["EMPTY", "--out"],
    "data.prepare": ["mars", "--raw", "RAW", "--out"],
    "bench.tools.pretrain": ["--model", "par-vit-micro", "--steps", "1", "--out"],
}


@pytest.mark.parametrize("name", IN_PROCESS, ids=list(IN_PROCESS))
def test_bench_entry_points_turn_an_out_that_is_a_file_into_one_line(name, tmp_path, capsys):
    import importlib

    target = tmp_path / "a_file"
    target.write_text("mine")
    main, args = IN_PROCESS[name]
    main = importlib.import_module(main).main if isinstance(main, str) else main
    assert main([*args, str(target)]) == 2
    assert one_error_line(capsys) == f"error: --out {target}: is a file, expected a folder"
    assert target.read_text() == "mine"


@pytest.mark.parametrize("name", MODULE_MAINS, ids=list(MODULE_MAINS))
def test_module_entry_points_turn_an_out_that_is_a_file_into_one_line(name, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("mine")
    (tmp_path / "empty").mkdir()
    fill = {"RAW": lambda: str(make_mars_fixture(tmp_path / "dl")), "EMPTY": lambda: str(tmp_path / "empty")}
    args = [fill[arg]() if arg in fill else arg for arg in MODULE_MAINS[name]]
    done = subprocess.run([sys.executable, "-m", name, *args, str(target)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert str(tmp_path) in lines[0] and target.read_text() == "mine"  # names the --out file or the folder read


# ---------------------------------------------------------------------------------------------------------------------
# Ctrl-C and SIGKILL of a sweep (real processes: about 20 s each on a 2-core CPU)

def _start_sweep(out: Path) -> subprocess.Popen:
    long_run = ["--epochs", "100000"]  # still training when it is interrupted or killed, however fast the machine
    set_aside = ["--replace-other-settings"]  # the earlier record is of another setting: moved aside, never lost
    command = [sys.executable, "run_bench.py", "--preset", "smoke", *SMOKE, *long_run, *set_aside, "--out", str(out)]
    return subprocess.Popen(command,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            preexec_fn=_ctrl_c_delivered)


def _ctrl_c_delivered() -> None:
    """In the sweep's process, before Python starts: SIGINT back to its default. A shell runs a background job with
    SIGINT ignored and Python keeps an ignored SIGINT ignored, so a test suite started in the background would
    otherwise see a sweep that no Ctrl-C reaches."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_worker(sweep: subprocess.Popen, timeout_s: float = 300.0) -> None:
    """Until a worker of the sweep (it names itself ``bench-worker``) has run for 3 s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(_comm(pid) == "bench-worker" for pid in _session(sweep.pid)):
            time.sleep(3.0)
            return
        time.sleep(0.2)
    raise AssertionError("the sweep never started a worker")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _session(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid and _state(int(entry.name)) != "Z":
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError, FileNotFoundError):
                continue
    return pids


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() + \
            Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return ""


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@linux_only
def _earlier_kept(out: Path) -> bool:
    """The earlier record (of another config than the sweep's run of the same name) is kept byte for byte: in place,
    or moved aside before the run started (bench/records.py never replaces a file it did not write)."""
    kept = [out / EARLIER.name, *(out / "set-aside").glob("*.json")]
    return any(p.is_file() and p.read_bytes() == EARLIER.read_bytes() for p in kept)


def test_ctrl_c_stops_the_worker_discards_its_attempt_and_says_how_to_resume(out):
    sweep = _start_sweep(out)
    _wait_for_worker(sweep)
    os.killpg(sweep.pid, signal.SIGINT)  # what a terminal sends to the foreground process group
    stdout, stderr = sweep.communicate(timeout=60)
    assert sweep.returncode == 130, stderr
    assert "Traceback" not in stderr + stdout
    last = stderr.strip().splitlines()[-1]
    assert last == (f"interrupted: frozen__f2_b16_s0 stopped and its attempt discarded; finished runs are kept in "
                    f"{out}; run the same command again to resume"), stderr[-600:]
    assert not list((out / ".attempts").iterdir())
    assert _earlier_kept(out)
    time.sleep(1.0)
    assert _session(sweep.pid) == []


@linux_only
def test_workers_die_with_their_sweep(out):
    sweep = _start_sweep(out)
    _wait_for_worker(sweep)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.communicate(timeout=120)
    deadline = time.monotonic() + 10
    while _session(sweep.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _session(sweep.pid)
    assert left == [], [_cmdline(pid) for pid in left]
    assert not [p for p in (out / ".attempts").glob("*.json") if not p.name.endswith(".config.json")]
    assert _earlier_kept(out)


# ---------------------------------------------------------------------------------------------------------------------
# checkpoints: loading is models/backbone.py's; these state the contract it is held to

CHECKPOINTS = {"corrupt .safetensors": ("bad.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\xff not a header"),
               "corrupt .bin": ("bad.bin", b"\x80\x02 not a pickle"),
               "empty .pt": ("empty.pt", b"")}


@pytest.mark.parametrize("case", CHECKPOINTS, ids=list(CHECKPOINTS))
def test_checkpoint_error_names_file_and_flag_and_never_suggests_unsafe_unpickling(case, tmp_path, out, capsys):
    name, content = CHECKPOINTS[case]
    weights = tmp_path / name
    weights.write_bytes(content)
    code = run_bench.main(["--preset", "smoke", *SMOKE, "--pretrained", str(weights), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    assert str(weights) in err and "--pretrained" in err and "weights_only=False" not in err, err
    assert_untouched(out)


def test_a_folder_on_a_file_system_without_flock_is_locked_by_exclusive_create(tmp_path, monkeypatch, capsys):
    """Lustre without flock answers ENOLCK: the lock is ``.lock.held``, created exclusively, removed at the end; a
    second sweep refuses naming the holder; a leftover of an ended process on this host is removed."""
    import fcntl
    import socket

    from bench.runner.lifeline import FolderInUseError, FolderLock

    def no_flock(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    held = tmp_path / ".lock.held"
    with FolderLock(tmp_path):
        assert json.loads(held.read_text())["pid"] == os.getpid()
        with pytest.raises(FolderInUseError, match=f"in use by pid {os.getpid()}"):
            FolderLock(tmp_path).__enter__()
    assert not held.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    held.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "user": "x",
                                "started_at": "-", "command": "-"}))
    with FolderLock(tmp_path):
        assert json.loads(held.read_text())["pid"] == os.getpid()
    assert "lock of an ended process on this host, removed" in capsys.readouterr().err
