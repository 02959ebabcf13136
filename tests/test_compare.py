"""Side-by-side comparison of two sweeps (bench/reporting/compare.py): values, deltas and files, on fabricated
records."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.reporting import compare
from tests.test_report import MIB, fake_record


def _write(folder, records):
    folder.mkdir()
    for record in records:
        (folder / f"{record['run']['id']}.json").write_text(json.dumps(record))
    return folder


def test_compare_puts_two_sweeps_side_by_side_with_macro_f1_deltas(tmp_path, capsys):
    random = _write(tmp_path / "random", [fake_record("full", f1=0.45, mem_mib=100), fake_record("side", f1=0.35)])
    pretrained = _write(tmp_path / "pretrained", [fake_record("full", f1=0.55, mem_mib=100),
                                                  fake_record("side", seed=0, f1=0.60),
                                                  fake_record("side", seed=1, f1=0.70)])
    assert compare.main([str(random), str(pretrained), "--labels", "random,pretrained"]) == 0
    table = pd.read_csv(pretrained / "report" / "compare.csv", index_col="strategy")
    # fake_record's macro_f1 = f1 - 0.05; side's pretrained figure is the mean over its two seeds
    assert table.loc["full", "pretrained - random:macro_f1_delta"] == pytest.approx(0.10, abs=1e-9)
    assert table.loc["side", "pretrained:macro_f1_mean"] == pytest.approx(0.60, abs=1e-9)
    assert table.loc["side", "pretrained - random:macro_f1_delta"] == pytest.approx(0.30, abs=1e-9)
    assert table.loc["full", "random:peak_mem_bytes_mean"] == 100 * MIB
    text = (pretrained / "report" / "compare.md").read_text()
    assert "| full " in text and "+10.00" in text and "+30.00" in text
    assert "macro-F1 (%) random" in capsys.readouterr().out


def test_compare_refuses_a_folder_without_results_and_mismatched_labels(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    good = _write(tmp_path / "good", [fake_record("full")])
    assert compare.main([str(good), str(empty)]) == 2
    assert compare.main([str(good), str(good), "--labels", "only-one"]) == 2
    assert "error:" in capsys.readouterr().err
