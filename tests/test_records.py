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
DOCUMENTS = ("cost-plan", "cost-plan-check", "tuning")  # committed JSONs that say they are no run record ("kind")
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
