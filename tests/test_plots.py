"""Figures stay legible at many strategies: family colours shared by every figure, bars sorted by value, Pareto
labels that do not overlap; the report index links every file; tables use one number format per column."""
from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from bench.reporting import index, plots, report
from tests.test_report import fake_record, write_folder

FAMILIES = {"full": "full", "frozen": "frozen", "lora": "lora", "lora_mlp": "lora", "lora_qkv": "lora",
            "adapter": "adapter", "peft": "peft", "peft_ia3": "peft", "peft_lokr": "peft", "peft_oft": "peft",
            "prompt": "prompt", "promptpar": "prompt", "side": "side", "side_spatial": "side",
            "side_temporal": "side", "custom": "my_family"}


def crowded_records() -> list[dict]:
    """16 strategies whose (memory, F1) points crowd into a small area, as in the default run."""
    rng = np.random.default_rng(0)
    records = []
    for i, (name, family) in enumerate(FAMILIES.items()):
        record = fake_record(name, f1=0.40 + 0.01 * rng.random(), mem_mib=50 + 8 * rng.random(),
                             step_ms=100 + 50 * rng.random(), params=200_000 + 10_000 * i)
        record["run"]["family"] = family
        records.append(record)
    return records


@pytest.fixture(scope="module")
def crowded():
    frame = report.sort_runs(report.to_frame(crowded_records()))
    return frame, report.aggregate(frame)


def test_colours_follow_the_family_and_are_the_same_in_every_figure(crowded):
    frame, agg = crowded
    families = plots.families_of(frame)
    colours = plots.palette(frame["strategy"], families)
    assert colours["full"] == to_rgb(plots.FAMILY_COLOURS["full"])  # a one-strategy family: its own colour
    lora = [colours[s] for s in ("lora", "lora_mlp", "lora_qkv")]
    assert len(set(lora)) == 3  # variants differ ...
    assert all(_same_hue(c, to_rgb(plots.FAMILY_COLOURS["lora"])) for c in lora)  # ... in shade only
    assert plots.palette(["lora", "lora_mlp", "lora_qkv"], families)["lora"] == colours["lora"]  # report-independent
    fig1 = plots.efficiency_figure(frame, f1="paper_f1", title="t")
    memory = fig1.axes[0]
    bars = {tick.get_text(): patch.get_facecolor()[:3] for tick, patch in zip(memory.get_yticklabels(),
                                                                             memory.patches, strict=False)}
    assert all(np.allclose(bars[s], colours[s]) for s in bars) and len(bars) == len(FAMILIES)
    pareto = plots.pareto_figure(agg, f1="paper_f1", title="t", families=families)
    markers = pareto.axes[0].collections[0].get_facecolors()[:, :3]
    assert all(np.allclose(m, colours[s]) for m, s in zip(markers, agg["strategy"], strict=True))
    legend = [t.get_text() for t in pareto.legends[0].get_texts()]
    assert legend == ["full", "frozen", "adapter", "my_family", "lora", "peft", "prompt", "side"]


def _same_hue(a, b) -> bool:
    """Shading mixes with black or white: the colour's channel differences keep their ratios."""
    da, db = np.subtract(a, min(a)), np.subtract(b, min(b))
    return np.allclose(da / max(da.max(), 1e-9), db / max(db.max(), 1e-9), atol=0.05)


def test_bars_are_horizontal_and_sorted_best_first(crowded):
    frame, _ = crowded
    fig1 = plots.efficiency_figure(frame, f1="paper_f1", title="t")
    memory, f1 = fig1.axes[0], fig1.axes[1]
    by_mem = frame.assign(mem=frame["peak_mem_bytes"].astype("float64")).sort_values("mem")["strategy"].tolist()
    assert [t.get_text() for t in memory.get_yticklabels()] == by_mem  # lowest memory at the top
    by_f1 = frame.sort_values("paper_f1", ascending=False)["strategy"].tolist()
    assert [t.get_text() for t in f1.get_yticklabels()] == by_f1  # highest F1 at the top
    widths = [p.get_width() for p in memory.patches]
    assert widths == sorted(widths)


def test_pareto_labels_do_not_overlap_each_other_and_stay_inside(crowded):
    frame, agg = crowded
    fig = plots.pareto_figure(agg, f1="paper_f1", title="t", families=plots.families_of(frame))
    fig.canvas.draw()
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.texts if re.match(r"^\S+ \([\d.]+ M\)$", t.get_text())]
    assert sorted(t.get_text().split(" ")[0] for t in labels) == sorted(FAMILIES)
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    frame_box = ax.get_window_extent(renderer)
    assert all(frame_box.x0 <= b.x0 and b.x1 <= frame_box.x1 and frame_box.y0 <= b.y0 and b.y1 <= frame_box.y1
               for b in boxes)


def test_same_points_give_the_same_label_positions(crowded):
    _, agg = crowded
    first, second = (plots.pareto_figure(agg, f1="paper_f1", title="t") for _ in range(2))
    assert [t.get_position() for t in first.axes[0].texts] == [t.get_position() for t in second.axes[0].texts]


def test_index_shows_table_figures_setting_and_links_every_file(tmp_path):
    folder = write_folder(tmp_path / "runs")
    report.write_reports(folder)
    out = folder / "report"
    (out / "compare.md").write_text("written later by bench.reporting.compare\n")
    report.write_reports(folder)  # regenerated: the index now lists compare.md too
    others = sorted(p.name for p in out.iterdir() if p.name not in index.INDEX_FILES and not p.name.startswith("."))
    markdown, page = (out / "README.md").read_text(), (out / "index.html").read_text()
    for name in others:
        assert f"]({name})" in markdown and f'href="{name}"' in page, name
    for figure in ("fig1_efficiency.png", "pareto.png", "cost_curves.png", "training_curves.png"):
        assert f"![{figure}]({figure})" in markdown and f'<img src="{figure}"' in page
    assert "[explore.html](explore.html): Interactive explorer" in markdown  # beside the figures, not only in Files
    assert '<p><a href="explore.html">explore.html</a>: Interactive explorer' in page
    assert "| `config.train.batch_size` | 8, 16 " in markdown  # the setting, with the values that vary
    assert "`config.data.dataset`" in markdown and "synthetic" in markdown
    assert "| full " in markdown and "params (M) ↓" in markdown  # the main table
    assert "dataset synthetic, backbone ViT-B-16, 2 frames, batch 8" in markdown  # the reference setting
    assert page.startswith("<!DOCTYPE html>") and "http" not in page  # opens offline


def test_console_table_and_summary_use_the_same_units_and_formats():
    records = [fake_record("full", params=87_144_000, mem_mib=2391.54), fake_record("frozen", params=951_400,
                                                                                    mem_mib=422.8)]
    frame = report.sort_runs(report.to_frame(records))
    printed = report.summary_table(frame)
    assert "params (M)" in printed and "peak mem (MiB)" in printed and "87144000" not in printed
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in printed.splitlines()[2:]}
    headers = [c.strip() for c in printed.splitlines()[0].split("|")[1:-1]]
    assert rows["full"][headers.index("params (M)")] == "87.144"  # 3 significant digits on the smallest value
    assert rows["frozen"][headers.index("params (M)")] == "0.951"
    assert rows["full"][headers.index("peak mem (MiB)")] == "2391.5"
    view = report.summary_view(report.aggregate(frame), arrows=False)
    assert view.set_index("strategy").loc["frozen", "params (M)"] == "0.951"


@pytest.mark.parametrize(("values", "scale", "expected"), [
    ([1.077e6, 0.237e6], 1e-6, ".3f"),  # millions of parameters: 1.077, 0.237
    ([87.144e6, 0.9515e6], 1e-6, ".3f"),  # 87.144, 0.951
    ([1270e9, 426e9], 1e-9, ".0f"),  # GFLOPs: 1270, 426
    ([1.5e3], 1e-6, ".4f"),  # 0.0015: at most 4 decimals
    ([0.0, float("nan")], 1e-6, ".0f"),  # nothing to size the column by
])
def test_one_precision_per_column(values, scale, expected):
    display = report.Display("x", "params_trainable", scale, significant=3)
    assert display.spec(pd.Series(values, dtype="float64")) == expected
