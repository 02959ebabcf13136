"""Runs mirrored to TensorBoard, MLflow and W&B (``run_bench.py --track``, ``python -m bench.reporting.trackers``):
each tool's files read back by that tool's own reader hold the record's values, a tracker's failure never costs the
run, and without the flag nothing is mirrored. A committed record stands in for a training run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cli
from bench.measure import trackers
from bench.reporting import trackers as trackers_command
from bench.runner import worker

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "results" / "default" / "full__f2_b16_s0.json"
TRACKER_FOLDERS = ("tensorboard", "mlruns", "wandb")


@pytest.fixture(autouse=True)
def tools_kept_apart(tmp_path, monkeypatch):
    """The variables the writers set are restored after each test, and W&B's own logs stay in the test's folder;
    no tracker variable leaks in from the caller."""
    for name in ("WANDB_MODE", "WANDB_ERROR_REPORTING", "MLFLOW_DISABLE_TELEMETRY"):
        absent = name not in os.environ
        monkeypatch.setenv(name, os.environ.get(name, ""))  # remembered as it was, restored at the end
        if absent:
            monkeypatch.delenv(name)
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.delenv(trackers.TRACK_ENV, raising=False)
    monkeypatch.delenv(trackers.TRACK_DIR_ENV, raising=False)


@pytest.fixture
def runs(tmp_path) -> Path:
    folder = tmp_path / "runs"
    folder.mkdir()
    shutil.copy(COMMITTED, folder / COMMITTED.name)
    return folder


@pytest.fixture
def record(runs) -> dict:
    return json.loads((runs / COMMITTED.name).read_text())


def test_names_steps_and_hyperparameters_come_from_the_record(record):
    history = record["metrics"]["history"]
    assert [step for step, _ in trackers.history_steps(record)] == [entry["epoch"] for entry in history]
    assert trackers.history_steps(record)[0][1]["history/train_loss"] == history[0]["train_loss"]
    final = trackers.final_figures(record)
    assert final["test/macro_f1"] == record["metrics"]["test"]["macro_f1"]
    assert final["test/per_group/pose/macro_f1"] == record["metrics"]["test"]["per_group"]["pose"]["macro_f1"]
    assert final["profile/peak_mem_bytes"] == record["profile"]["peak_mem_bytes"]
    assert final["best_epoch"] == trackers.final_step(record) == record["metrics"]["best_epoch"]
    assert not any(isinstance(value, bool) for value in final.values())
    params = trackers.hyperparameters(record)
    assert params["train.lr"] == record["run"]["config"]["train"]["lr"]
    assert params["data.data_root"] == "null" and params["strategy.params"] == "{}"


def test_tensorboard_scalars_read_back_equal_to_the_record(record, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    folder = trackers.to_tensorboard(record, tmp_path)
    assert folder == tmp_path / "tensorboard" / record["run"]["id"]
    events = EventAccumulator(str(folder))
    events.Reload()
    loss = events.Scalars("history/train_loss")
    assert [e.step for e in loss] == [h["epoch"] for h in record["metrics"]["history"]]
    assert [e.value for e in loss] == pytest.approx([h["train_loss"] for h in record["metrics"]["history"]], rel=1e-6)
    for name, value in trackers.final_figures(record).items():  # float32 in the event file
        (event,) = events.Scalars(name)
        assert (event.step, event.value) == (record["metrics"]["best_epoch"], pytest.approx(value, rel=1e-6))
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["train.lr"].number_value == record["run"]["config"]["train"]["lr"]
    assert start.hparams["status"].string_value == "ok"


def test_tensorboard_mirror_of_a_run_replaces_its_earlier_one(record, tmp_path):
    trackers.to_tensorboard(record, tmp_path)
    folder = trackers.to_tensorboard(record, tmp_path)
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # MLflow's own use of SQLAlchemy
def test_mlflow_store_read_back_by_mlflows_client(record, tmp_path):
    from mlflow.tracking import MlflowClient

    trackers.to_mlflow(record, tmp_path)
    trackers.to_mlflow(record, tmp_path)  # mirrored again: replaces, never repeats
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"{trackers.PROJECT}/{tmp_path.name}")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == record["run"]["id"] and run.info.status == "FINISHED"
    assert run.data.tags["bench.status"] == "ok"
    final = trackers.final_figures(record)
    assert {name: run.data.metrics[name] for name in final} == pytest.approx(final)
    assert run.data.params["train.lr"] == str(record["run"]["config"]["train"]["lr"])
    assert run.data.params["model.backbone"] == record["run"]["config"]["model"]["backbone"]
    loss = client.get_metric_history(run.info.run_id, "history/train_loss")
    assert sorted((m.step, m.value) for m in loss) == [(h["epoch"], h["train_loss"])
                                                       for h in record["metrics"]["history"]]


def wandb_records(run_file: Path) -> list[dict]:
    """The records of a ``.wandb`` file, decoded by W&B's own reader (``wandb leet inspect --json``)."""
    shown = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_file)],
                           capture_output=True, text=True, check=True, timeout=120)
    return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]


def test_wandb_offline_run_read_back_by_wandbs_own_reader(record, tmp_path):
    trackers.to_wandb(record, tmp_path)
    trackers.to_wandb(record, tmp_path)  # mirrored again: replaces, never repeats
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (run_file,) = run_dir.glob("*.wandb")
    lines = wandb_records(run_file)
    (run,) = [line["run"] for line in lines if line["type"] == "run"]
    assert run["display_name"] == record["run"]["id"]
    assert run["config"]["update"]["train"]["lr"] == record["run"]["config"]["train"]["lr"]
    history = {line["history"]["step"]["num"]: line["history"]["item"] for line in lines if line["type"] == "history"}
    assert {step: item["history/train_loss"] for step, item in history.items()} == {
        h["epoch"]: pytest.approx(h["train_loss"]) for h in record["metrics"]["history"]}
    summary = {}
    for line in lines:
        if line["type"] == "summary":
            summary |= line["summary"].get("update", {})
    assert summary["test/macro_f1"] == pytest.approx(record["metrics"]["test"]["macro_f1"])
    assert summary["profile/peak_mem_bytes"] == record["profile"]["peak_mem_bytes"]
    assert summary["status"] == "ok"


def test_a_failing_tracker_costs_the_worker_neither_its_record_nor_its_exit_code(record, tmp_path, monkeypatch,
                                                                                 capsys):
    def broken(record, out):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setitem(trackers.WRITERS, "tensorboard", broken)
    monkeypatch.setenv(trackers.TRACK_ENV, "tensorboard")
    monkeypatch.setenv(trackers.TRACK_DIR_ENV, str(tmp_path))
    attempt = tmp_path / ".attempts" / "run.json"
    assert worker._write(attempt, record, 0) == 0
    assert json.loads(attempt.read_text()) == record
    assert capsys.readouterr().err.splitlines() == [
        f"warning: run {record['run']['id']}: not mirrored to tensorboard: RuntimeError: disk on fire second line"]


def test_without_the_flag_nothing_is_mirrored(record, tmp_path, monkeypatch):
    assert cli.build_parser().parse_args([]).track == ()
    monkeypatch.setenv(trackers.TRACK_ENV, "tensorboard")  # left over by a caller: the flag alone decides
    monkeypatch.setenv(trackers.TRACK_DIR_ENV, str(tmp_path))
    with cli.tracking((), tmp_path):
        assert trackers.from_environment() == ((), None)
        assert worker._write(tmp_path / "run.json", record, 0) == 0
    assert os.environ[trackers.TRACK_ENV] == "tensorboard"  # the caller's environment is restored
    assert not [name for name in TRACKER_FOLDERS if (tmp_path / name).exists()]


def test_a_failure_beside_a_good_result_is_not_mirrored_over_it(record, tmp_path, monkeypatch):
    (tmp_path / f"{record['run']['id']}.json").write_text(json.dumps(record))
    failed = json.loads(json.dumps(record))
    failed["run"].update(status="failed", error="RuntimeError: boom")
    called = []
    monkeypatch.setitem(trackers.WRITERS, "tensorboard", lambda record, out: called.append(record))
    monkeypatch.setenv(trackers.TRACK_ENV, "tensorboard")
    monkeypatch.setenv(trackers.TRACK_DIR_ENV, str(tmp_path))
    assert worker._write(tmp_path / ".attempts" / "run.json", failed, 1) == 1
    assert worker._write(tmp_path / ".attempts" / "run.json", record, 0) == 0
    assert [r["run"]["status"] for r in called] == ["ok"]


@pytest.mark.parametrize("parser, argv", [(cli.build_parser, ["--track", "tensorboard,nope"]),
                                           (trackers_command.build_parser, ["runs", "--to", "tensorboard,nope"])])
def test_an_unknown_tracker_is_argparses_one_line_error(parser, argv, capsys):
    with pytest.raises(SystemExit) as stop:
        parser().parse_args(argv)
    error = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert stop.value.code == 2 and len(error) == 1 and "unknown tracker nope" in error[0], error


def test_a_missing_tracker_package_names_the_extra_before_any_run(tmp_path, monkeypatch, capsys):
    import run_bench

    monkeypatch.setitem(trackers.PACKAGES, "wandb", "vpar_bench_no_such_package")
    out = tmp_path / "out"
    assert run_bench.main(["--preset", "ci", "--strategies", "frozen", "--track", "wandb", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert 'pip install -e ".[trackers]"' in line and "wandb" in line
    assert not out.exists() or not list(out.glob("*.json"))


def test_the_offline_command_mirrors_a_folder_and_refuses_bad_input(runs, tmp_path, capsys):
    assert trackers_command.main([str(runs), "--to", "tensorboard"]) == 0
    assert trackers_command.main([str(runs), "--to", "tensorboard"]) == 0
    assert len(list((runs / "tensorboard" / "full__f2_b16_s0").glob("events.out.tfevents.*"))) == 1
    assert "full__f2_b16_s0: mirrored to tensorboard" in capsys.readouterr().out
    assert trackers_command.main([str(tmp_path / "missing"), "--to", "tensorboard"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error:") and "not a folder" in line
    with pytest.raises(SystemExit) as stop:
        trackers_command.main(["--help"])
    assert stop.value.code == 0 and "--to" in capsys.readouterr().out


def test_a_sweep_with_track_writes_event_files_and_survives_a_broken_tracker(tmp_path):
    """End to end, one tiny run: TensorBoard gets its event files; MLflow fails (its store's place is taken by a
    file), which costs one warning line and nothing else; the record is written and the config has no trace of the
    trackers (its digest, the run's identity, is the one a sweep without --track computes)."""
    from bench.runner import experiments

    out = tmp_path / "out"
    out.mkdir()
    (out / "mlruns").write_text("in the way")
    done = subprocess.run([sys.executable, str(ROOT / "run_bench.py"), "--preset", "ci", "--strategies", "frozen",
                           "--track", "tensorboard,mlflow", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "frozen__f2_b16_s0.json").read_text())
    assert record["run"]["status"] == "ok"
    assert list((out / "tensorboard" / "frozen__f2_b16_s0").glob("events.out.tfevents.*"))
    warnings = [line for line in done.stderr.replace("\r", "\n").splitlines() if "not mirrored" in line]
    assert len(warnings) == 1 and "to mlflow" in warnings[0], warnings
    base = experiments.load_preset("ci")
    (spec,) = experiments.expand(base, strategies=["frozen"], seeds=[base["train"]["seed"]],
                                 frames=[base["data"]["frames"]], batch_sizes=[base["train"]["batch_size"]])
    assert record["run"]["config"] == spec.config.to_dict()
    assert record["run"]["config_digest"] == spec.config.digest()
