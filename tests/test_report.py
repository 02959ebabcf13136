"""Reports from result JSONs: every file written and readable, seed statistics and ratios hand-checked, failed and
profile-only runs handled, figures labelled with units, and the same folder always gives the same bytes.

The records below are fabricated (schema of bench/records.py) so the expected numbers are known.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from bench.records import SCHEMA_VERSION
from bench.reporting import plots, report

MIB = 2**20
GPU = "NVIDIA H100 80GB HBM3"
OUTPUTS = ("summary.csv", "summary.md", "summary.tex", "per_attribute_f1.md", "per_attribute_f1.csv",
           "per_group_f1.csv", "plan_vs_measured.md", "per_kind_f1.md", "frames_ablation.md", "frames_ablation.csv",
           "memory_breakdown.md", "memory_breakdown.csv", "fig1_efficiency.png", "pareto.png", "cost_curves.png",
           "training_curves.png", "explore.html", "README.md", "index.html")


def fake_record(strategy: str, *, seed: int = 0, frames: int = 2, batch: int = 8, f1: float | None = 0.5,
                mem_mib: float = 1000.0, step_ms: float = 100.0, params: int = 1_000_000, status: str = "ok",
                error: str | None = None) -> dict:
    """One result JSON; ``f1=None`` makes a profile-only run (no metrics section)."""
    run_id = f"{strategy}__f{frames}_b{batch}_s{seed}"
    config = {"strategy": {"name": strategy, "family": strategy, "params": {}},
              "data": {"dataset": "synthetic", "frames": frames}, "model": {"backbone": "ViT-B-16"},
              "train": {"batch_size": batch, "seed": seed}}
    record = {"schema_version": SCHEMA_VERSION,
              "run": {"id": run_id, "strategy": strategy, "family": strategy, "status": status, "error": error,
                      "config": config, "git_commit": "0123456789abcdef", "git_dirty": False},
              "metrics": {}, "profile": {}, "environment": {"gpu": GPU, "cpu": "x86", "torch": "2.5"}}
    if status != "ok":
        return record
    record["profile"] = {"params_total": 10_000_000, "params_trainable": params, "params_added": 0,
                         "train_step_flops": 3e9 * frames * batch * params / 1e6, "peak_mem_bytes": int(mem_mib * MIB),
                         "peak_mem_kind": "cuda_max_allocated", "step_time_ms_median": step_ms,
                         "throughput_clips_per_s": 1000.0 * batch / step_ms, "train_time_s": 10.0,
                         "mode": "train" if f1 is not None else "profile-only"}
    if f1 is not None:
        record["metrics"] = {"test": _test_metrics(f1), "majority_test": {"paper_f1": 0.1, "macro_f1": 0.2},
                             "best_epoch": 1}
    return record


def _test_metrics(f1: float) -> dict:
    """Two groups (hat, colour) and three columns; column F1s are f1 -/+ 0.1 and f1, so their mean is f1."""
    return {"paper_f1": f1, "macro_f1": f1 - 0.05, "mA": 0.7,
            "per_group": {"hat": {"paper_f1": f1 - 0.1}, "colour": {"paper_f1": f1 + 0.1}},
            "per_column": {"hat": {"f1": f1 - 0.1}, "colour red": {"f1": f1 + 0.1}, "colour blue": {"f1": f1}}}


RECORDS = (  # (file stem, record)
    ("full__f2_b8_s0", fake_record("full", seed=0, f1=0.60, mem_mib=1000, step_ms=100)),
    ("full__f2_b8_s1", fake_record("full", seed=1, f1=0.70, mem_mib=1200, step_ms=120)),
    ("frozen__f2_b8_s0", fake_record("frozen", f1=0.40, mem_mib=550, step_ms=44, params=10_000)),
    ("lora__f2_b8_s0", fake_record("lora", f1=0.65, mem_mib=700, step_ms=80, params=200_000)),
    ("frozen__f1_b8_s0", fake_record("frozen", frames=1, f1=0.30, mem_mib=300, step_ms=30, params=10_000)),
    ("adapter__f2_b8_s0", fake_record("adapter", f1=None, mem_mib=800, step_ms=90, params=300_000)),
    ("big__f2_b8_s0", fake_record("big", status="failed", error="OutOfMemoryError: CUDA out of memory | 80 GiB")),
    ("lora__f4_b16_s0", fake_record("lora", frames=4, batch=16, f1=0.66, mem_mib=2000, step_ms=300)),
)


def write_folder(folder: Path, records=RECORDS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, record in records:
        (folder / f"{stem}.json").write_text(json.dumps(record))
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list[Path]]:
    folder = write_folder(tmp_path_factory.mktemp("runs"))
    return folder, report.write_reports(folder)


@pytest.fixture(scope="module")
def frame(built) -> pd.DataFrame:
    return report.sort_runs(report.to_frame(report.load_records(built[0])))


def test_every_output_written_and_readable(built, frame):
    folder, written = built
    assert [p.name for p in written] == list(OUTPUTS)
    assert all(p.parent == folder / "report" and p.stat().st_size > 0 for p in written)
    pd.testing.assert_frame_equal(report.read_summary_csv(folder / "report" / "summary.csv"), frame)
    markdown = (folder / "report" / "summary.md").read_text()
    assert all(f"| {name} " in markdown for name in ("full", "frozen", "lora", "adapter"))
    assert "\\toprule" in (folder / "report" / "summary.tex").read_text()
    for name in ("fig1_efficiency.png", "pareto.png", "cost_curves.png", "training_curves.png"):
        height, width, _ = matplotlib.image.imread(folder / "report" / name).shape
        assert height > 400 and width > 400


def test_strategies_in_stable_order(frame):
    assert report.strategy_order(["lora", "frozen", "adapter", "full", "big"]) == \
        ["full", "frozen", "adapter", "big", "lora"]
    assert list(dict.fromkeys(frame["strategy"])) == ["full", "frozen", "adapter", "big", "lora"]


def test_mean_and_sample_std_over_seeds(frame):
    agg = report.aggregate(frame)
    full = agg[agg["strategy"] == "full"].iloc[0]
    assert full["seeds"] == 2
    assert full["paper_f1_mean"] == pytest.approx(0.65)
    assert full["paper_f1_std"] == pytest.approx(math.sqrt(2 * 0.05**2 / 1))  # ddof = 1: 0.0707
    assert full["peak_mem_bytes_mean"] / MIB == pytest.approx(1100.0)
    view = report.summary_view(agg, arrows=True)
    row = view[view["strategy"] == "full"].iloc[0]
    assert row["paper-F1 (%) ↑"] == "65.00 ± 7.07"
    assert row["peak mem (MiB) ↓"] == "1100.0 ± 141.4"
    lora = view[(view["strategy"] == "lora") & (view["frames"] == 2)].iloc[0]
    assert lora["paper-F1 (%) ↑"] == "65.00"  # one seed: no "±"


def test_ratios_against_full_at_the_same_setting(frame):
    agg = report.aggregate(frame).set_index(["strategy", "frames"])
    assert agg.loc[("frozen", 2), "mem / full"] == pytest.approx(550 / 1100)
    assert agg.loc[("frozen", 2), "step / full"] == pytest.approx(44 / 110)
    assert agg.loc[("lora", 2), "GFLOPs / full"] == pytest.approx(0.2)  # FLOPs scale with params here
    assert agg.loc[("full", 2), "mem / full"] == pytest.approx(1.0)
    assert math.isnan(agg.loc[("frozen", 1), "mem / full"])  # no full run with 1 frame


def test_failed_and_profile_only_runs(built, frame):
    markdown = (built[0] / "report" / "summary.md").read_text()
    failed = markdown.split("## Failed runs")[1]
    assert "big__f2_b8_s0" in failed and "OutOfMemoryError: CUDA out of memory \\| 80 GiB" in failed
    assert "big" not in set(report.aggregate(frame)["strategy"])
    view = report.summary_view(report.aggregate(frame), arrows=False)
    adapter = view[view["strategy"] == "adapter"].iloc[0]
    assert adapter["paper-F1 (%)"] == "-" and adapter["peak mem (MiB)"] == "800.0"


def test_failed_retry_beside_a_kept_result_is_listed(tmp_path):
    retry = fake_record("frozen", status="failed", error="killed by signal SIGKILL")
    folder = write_folder(tmp_path / "runs", [*RECORDS[:3], ("frozen__f2_b8_s0.failed", retry)])
    scan = report.scan_folder(folder)
    frame = report.to_frame(scan.records)
    markdown = report.summary_markdown(frame, report.aggregate(frame), scan, source="runs")
    failed = markdown.split("## Failed runs")[1]
    assert "killed by signal SIGKILL" in failed and "earlier ok result kept" in failed


def test_per_attribute_table_vtf_table2_layout(built):
    table = pd.read_csv(built[0] / "report" / "per_attribute_f1.csv", index_col="attribute")
    assert list(table.columns) == ["full", "frozen", "lora"]  # reference setting: 2 frames, batch 8
    assert list(table.index) == ["hat", "colour red", "colour blue", "Average"]
    assert table.loc["colour red", "full"] == pytest.approx(0.75)  # seeds 0.70 and 0.80
    assert table.loc["Average", "frozen"] == pytest.approx(0.40)
    groups = pd.read_csv(built[0] / "report" / "per_group_f1.csv", index_col="attribute")
    assert groups.loc["Average", "lora"] == pytest.approx(0.65)  # equals the run's paper-F1
    assert "| colour red" in (built[0] / "report" / "per_attribute_f1.md").read_text()


def test_frames_ablation_vtf_table3_layout(frame):
    tables = report.frames_tables(report.aggregate(frame), "paper_f1")
    setting, table = next((s, t) for s, t in tables if s["batch_size"] == 8)
    assert list(table.columns) == ["1 frame", "2 frames"]
    assert list(table.index) == ["full", "frozen", "lora"]  # adapter has no F1 at all: dropped below
    assert table.loc["frozen", "1 frame"] == pytest.approx(0.30)
    assert table.loc["full", "2 frames"] == pytest.approx(0.65)
    assert math.isnan(table.loc["full", "1 frame"])


def _labels(fig) -> list[tuple[str, str]]:
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]


def test_figures_have_axis_labels_with_units(frame):
    ok = frame[frame["status"] == "ok"]
    setting = report.reference_setting(frame)
    assert setting == {"dataset": "synthetic", "backbone": "ViT-B-16", "frames": 2, "batch_size": 8,
                       "world_size": 1, "batch_per_rank": 8, "precision": "fp32", "switches": "-"}
    runs, groups = report.select_setting(ok, setting), report.select_setting(report.aggregate(frame), setting)
    title = report.figure_title(frame, setting)
    assert GPU in title and "ViT-B-16" in title
    fig1 = plots.efficiency_figure(runs, f1="paper_f1", title=title)
    assert [x for x, _ in _labels(fig1)] == ["peak training memory (MiB, cuda_max_allocated)", "paper-F1 (%)",
                                             "training step time (ms)", "tunable parameters (M)"]
    assert fig1.get_suptitle() == title
    pareto = plots.pareto_figure(groups, f1="paper_f1", title=title)
    assert _labels(pareto) == [("peak training memory (MiB)", "paper-F1 (%)")]
    curves = plots.cost_curves_figure(ok, reference=setting, title=title)
    assert [x for x, _ in _labels(curves)] == ["frames per clip", "batch size (clips)"] * 2
    assert [y for _, y in _labels(curves)] == ["peak training memory (MiB, cuda_max_allocated)"] * 2 + \
        ["training step time (ms)"] * 2
    assert len(curves.axes[0].get_lines()) >= 2  # memory vs frames drawn for full / frozen / lora


def test_cost_curves_hold_each_axis_where_the_other_one_was_swept():
    """A frames sweep at batch 8 and a batch sweep at 2 frames in one folder: both curves are drawn."""
    records = [fake_record(name, frames=f, batch=8, mem_mib=100 * f) for name in ("full", "frozen") for f in (1, 4, 8)]
    records += [fake_record(name, frames=2, batch=b, mem_mib=10 * b) for name in ("full", "frozen") for b in (4, 8, 16)]
    frame = report.to_frame(records)
    setting = report.reference_setting(frame)
    assert (setting["frames"], setting["batch_size"]) == (8, 8)  # most frames wins the tie
    curves = plots.cost_curves_figure(frame, reference=setting, title="t")
    titles = [ax.get_title() for ax in curves.axes]
    assert titles[0] == "peak training memory vs frames per clip (batch 8)"
    assert titles[1] == "peak training memory vs batch size (2 frames)"
    frames_curve = curves.axes[0].get_lines()[0].get_xydata()[:, 0].tolist()
    batch_curve = curves.axes[1].get_lines()[0].get_xydata()[:, 0].tolist()
    assert frames_curve == [1, 2, 4, 8] and batch_curve == [4, 8, 16]


def test_pareto_front_hand_computed():
    # (memory, F1): b dominates a; c costs more but is better; d is dominated by c.
    x, y = [10.0, 5.0, 20.0, 30.0], [0.5, 0.6, 0.7, 0.65]
    assert plots.pareto_front(x, y) == [1, 2]


def test_same_folder_gives_same_bytes(built, tmp_path):
    folder, first = built
    second = report.write_reports(folder, tmp_path / "again")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_cli_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--help"])
    assert exit_info.value.code == 0 and "FOLDER" in capsys.readouterr().out.upper()
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2
    assert "no readable result JSON" in capsys.readouterr().err


def test_summary_table_prints_dash_for_missing(frame):
    text = report.summary_table(frame)
    assert "nan" not in text and "| big " in text


def test_folder_without_successful_runs_still_reports(tmp_path):
    folder = write_folder(tmp_path / "runs", [RECORDS[6]])  # one failed run only
    (folder / "broken.json").write_text("{")
    written = report.write_reports(folder)
    assert [p.name for p in written] == list(OUTPUTS)
    assert "No successful run" in (folder / "report" / "per_attribute_f1.md").read_text()
    markdown = (folder / "report" / "summary.md").read_text()
    assert "big__f2_b8_s0" in markdown.split("## Failed runs")[1] and "broken.json" in markdown
