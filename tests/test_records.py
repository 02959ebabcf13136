"""The result record's schema is stated once (bench/records.py): what the worker writes follows it, and every
committed result file still reads through it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import records
from bench.config import RunConfig
from bench.runner.worker import run_record

RESULTS = Path(__file__).resolve().parent.parent / "results"
#: Committed JSONs that say they are no run record ("kind").
DOCUMENTS = ("cost-plan", "cost-plan-check", "tuning", "linear-probe")
COMMITTED = sorted(p for p in RESULTS.rglob("*.json") if "report" not in p.parts and p.parent.name != "baselines"
                   and json.loads(p.read_text()).get("kind") not in DOCUMENTS)


def test_a_worker_record_has_the_schema_sections_and_run_keys():
    record = run_record(RunConfig(), run_id="x", status=records.OK)
    assert list(record) == ["schema_version", *(s for s in records.SECTIONS if s != "weights")]
    assert record["schema_version"] == records.SCHEMA_VERSION
    assert tuple(record["run"]) == records.RUN_KEYS
    assert all(record[section] == {} for section in records.OUTCOME if section in record)


def test_every_committed_result_file_reads():
    assert len(COMMITTED) > 100
    for path in COMMITTED:
        record = records.read_result(path)
        assert set(record) <= {"schema_version", *records.SECTIONS}, path
        assert record["run"]["status"] in (records.OK, records.FAILED, records.PREEMPTED), path


def test_settle_never_puts_a_failure_over_a_good_result(tmp_path):
    good = run_record(RunConfig(), run_id="x", status=records.OK)
    failed = run_record(RunConfig(), run_id="x", status=records.FAILED, error="boom")
    final = tmp_path / "x.json"
    records.settle(good, final)
    records.settle(failed, final)
    assert json.loads(final.read_text())["run"]["status"] == records.OK
    assert records.read_result(final.with_suffix(records.FAILED_SUFFIX))["run"]["error"] == "boom"
    records.settle(good, final)
    assert not final.with_suffix(records.FAILED_SUFFIX).exists()


@pytest.mark.parametrize("payload", [{"schema_version": 99, "run": {"id": "x", "status": "ok"}},
                                     {"schema_version": 2, "run": {"id": "x"}}], ids=["version", "status"])
def test_validation_names_the_file(payload, tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(records.ResultFileError, match=str(path)):
        records.read_result(path)


def _finished_record(**train) -> dict:
    """A finished version-3 record with a few test scores and profile figures, as the worker writes one."""
    record = run_record(RunConfig.from_dict({"train": train}) if train else RunConfig(), run_id="x", status=records.OK)
    record["metrics"] = {"test": {"macro_f1": 0.5, "paper_f1": 0.4, "mA": 0.6}, "majority_test": {"macro_f1": 0.3},
                         "best_epoch": 2, "own_params_effect": {"prob_abs_change_mean": 0.01}}
    record["profile"] = {"params_trainable": 10, "peak_mem_bytes": 2048, "peak_mem_by_category_bytes": {"grads": 7}}
    return record


def test_row_is_the_one_flat_view_of_a_record():
    record = _finished_record()
    flat = records.row(record)
    assert {key: flat[key] for key in records.SETTING} == records.setting_of(record)
    assert (flat["strategy"], flat["status"], flat["seed"]) == (record["run"]["strategy"], records.OK, 0)
    assert (flat["macro_f1"], flat["majority_macro_f1"], flat["own_params_effect"]) == (0.5, 0.3, 0.01)
    assert (flat["params_trainable"], flat["peak_mem_bytes"], flat["best_epoch"]) == (10, 2048, 2)
    assert flat["peak_mem_grads_bytes"] == 7  # older records hold the categories only as one mapping
    assert flat["macro_acc"] is None and flat["train_step_flops"] is None  # not measured: None, never a guess


def test_setting_of_is_what_runs_share_and_gives_older_records_the_defaults_of_their_time():
    record = _finished_record(precision="bf16", batch_size=8)
    frames = record["run"]["config"]["data"]["frames"]
    assert records.setting_of(record) == {"dataset": "synthetic", "backbone": "par-vit-tiny", "frames": frames,
                                          "batch_size": 8, "world_size": 1, "batch_per_rank": 8,
                                          "precision": "bf16", "switches": "-"}
    for key in ("precision", "world_size"):
        del record["run"]["config"]["train"][key]
    assert (records.setting_of(record)["precision"], records.setting_of(record)["world_size"]) == ("fp32", 1)


ADDED_IN = {"code": 3, "weights": 2}  # sections a version added (bench/records.py)


def _as_version(record: dict, version: int) -> dict:
    """``record`` as an older version wrote it: without the sections added after ``version``."""
    older = {key: value for key, value in record.items() if ADDED_IN.get(key, 0) <= version}
    return {**older, "schema_version": version}


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_record_is_upgraded_to_this_version_and_reads_the_same(version, tmp_path):
    record = _finished_record()
    record["run"]["git_commit"], record["run"]["git_dirty"] = "abc123", False
    old = _as_version(record, version)
    upgraded = records.upgrade(old, tmp_path / "x.json")
    assert (upgraded["schema_version"], upgraded["upgraded_from"]) == (records.SCHEMA_VERSION, version)
    assert upgraded["code"] == {"commit": "abc123", "dirty": False, "source_sha256": None, "covers": None}
    assert records.record_source(upgraded) is None  # no source digest: the gate still runs it again
    assert old["schema_version"] == version and "upgraded_from" not in old  # the record read is left as it was
    assert records.row(upgraded) == records.row(old)
    assert records.validate_record(upgraded, tmp_path / "x.json") is upgraded


def test_a_current_record_is_not_upgraded(tmp_path):
    record = _finished_record()
    assert records.upgrade(record, tmp_path / "x.json") is record


@pytest.mark.parametrize("version", [0, 4, 99, "3", True, None])
def test_a_version_without_an_upgrade_is_refused_naming_file_version_and_the_versions_read(version, tmp_path):
    path = tmp_path / "old.json"
    with pytest.raises(records.ResultFileError) as refused:
        records.upgrade({"schema_version": version, "run": {"id": "x", "status": "ok"}}, path)
    assert str(refused.value).startswith(f"{path}: schema_version {version!r}")
    assert str(records.READABLE_VERSIONS) in str(refused.value)


def test_every_committed_result_file_reads_in_this_version_with_the_same_row():
    for path in COMMITTED:
        raw, record = records.read_result(path), records.read_record(path)
        assert record["schema_version"] == records.SCHEMA_VERSION, path
        assert records.row(record) == records.row(raw), path
