"""explore.html: one self-contained offline page holding one point per successful run; in a real headless browser
it draws them with no console error, filters them, and recomputes the Pareto front of what it shows."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest

from bench.reporting import explore, plots
from tests.test_report import RECORDS, fake_record

BROWSERS = ("chromium", "chromium-browser", "chromium-headless-shell", "headless_shell", "google-chrome",
            "google-chrome-stable")
# Runs first in <head>: records page errors and console.error, then, once the plot is drawn, what it shows before
# and after unticking seed 1, into an attribute that --dump-dom prints.
PROBE = """<script>
window.__errors = [];
addEventListener("error", (event) => window.__errors.push(String(event.message)));
const __consoleError = console.error;
console.error = (...args) => { window.__errors.push(args.join(" ")); __consoleError(...args); };
function __shown(gd) {
  return {points: document.querySelectorAll("#explore-plot .scatterlayer path.point").length,
          hover: gd.data.flatMap((trace) => trace.customdata || []),
          front: gd.data[gd.data.length - 1].x};
}
const __wait = setInterval(() => {
  const gd = document.getElementById("explore-plot");
  if (!gd || !gd.data || !document.getElementById("shown").textContent) return;
  clearInterval(__wait);
  const before = __shown(gd);
  const box = document.querySelector('input[name="seed"][value="1"]');
  box.checked = false;
  box.dispatchEvent(new Event("change"));
  setTimeout(() => {
    const after = __shown(gd);
    box.checked = true;
    box.dispatchEvent(new Event("change"));
    document.documentElement.setAttribute("data-probe", JSON.stringify({errors: window.__errors, before, after}));
  }, 300);
}, 50);
</script>"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    records = [record for _, record in RECORDS]
    path = explore.write_explore(tmp_path_factory.mktemp("explore"), records, source="runs")
    return path, records


def embedded(text: str) -> dict:
    found = re.search(r'<script type="application/json" id="explore-data">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def test_page_is_self_contained_and_holds_one_point_per_run(page):
    path, records = page
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and path.name == "explore.html"
    assert not re.search(r"<script[^>]*\ssrc\s*=", text)  # plotly.js inlined: nothing to fetch
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']?https?:", text)
    assert "Plotly.react" in text and "window.Plotly" in text
    data = embedded(text)
    ok = [r["run"]["id"] for r in records if r["run"]["status"] == "ok"]
    assert sorted(run["run_id"] for run in data["runs"]) == sorted(ok)  # the failed run has no point
    full = next(run for run in data["runs"] if run["run_id"] == "full__f2_b8_s1")
    assert full["values"]["paper_f1"] == pytest.approx(70.0) and full["values"]["peak_mem_bytes"] == 1200.0
    assert full["seed"] == "1" and full["precision"] == "fp32" and "full__f2_b8_s1" in full["hover"]
    assert "dataset synthetic, backbone ViT-B-16, 2 frames, batch 8, fp32<br>seed 1" in full["hover"]
    assert data["columns"]["peak_mem_bytes"]["better"] == "lower" and "macro_f1" in data["columns"]
    assert {s["name"]: s["colour"] for s in data["strategies"]}["full"] == plots.FAMILY_COLOURS["full"]


def test_hover_names_the_configuration_values_that_set_a_run_apart():
    small, large = fake_record("lora"), fake_record("lora", seed=1)
    small["run"]["config"]["strategy"]["params"], large["run"]["config"]["strategy"]["params"] = {"r": 4}, {"r": 16}
    hover = {run["run_id"]: run["hover"] for run in explore.page_data([small, large])["runs"]}
    assert "strategy.params.r = 16" in hover["lora__f2_b8_s1"] and "strategy.params.r = 4" in hover["lora__f2_b8_s0"]
    assert "train.seed" not in hover["lora__f2_b8_s1"]  # said once, as "seed 1"


def browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@pytest.mark.skipif(browser() is None, reason=f"no headless browser binary on PATH (looked for {', '.join(BROWSERS)})")
def test_a_headless_browser_draws_one_point_per_run_without_console_errors(page, tmp_path):
    source, records = page
    probed = tmp_path / "explore.html"
    probed.write_text(source.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    screenshot = tmp_path / "explore.png"
    result = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                             "--window-size=1400,1100", f"--screenshot={screenshot}", "--dump-dom", probed.as_uri()],
                            capture_output=True, text=True, timeout=90)
    found = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert found, f"the page never finished drawing; browser stderr:\n{result.stderr[-2000:]}"
    probe = json.loads(html.unescape(found.group(1)))
    assert probe["errors"] == []
    runs = embedded(probed.read_text(encoding="utf-8"))["runs"]
    plotted = [run for run in runs if run["values"]["paper_f1"] is not None]  # default axes: F1 vs memory
    assert probe["before"]["points"] == len(plotted) == 6  # the profile-only run has no F1
    assert sorted(probe["before"]["hover"]) == sorted(run["run_id"] for run in plotted)
    assert probe["after"]["points"] == len([run for run in plotted if run["seed"] != "1"])
    x = [run["values"]["peak_mem_bytes"] for run in plotted]
    front = plots.pareto_front(x, [run["values"]["paper_f1"] for run in plotted])
    assert probe["before"]["front"] == [x[i] for i in front]
    assert screenshot.stat().st_size > 10_000
