"""The gate judges this code on this code's results: every record names the source files it was made by, a record
of other code is run again under --check (kept aside, never lost), and a run that scores better on test than on
its own training clips beyond the measured noise fails as suspicious."""
from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest

import run_bench
from bench import cli, records
from bench.config import RunConfig, merge
from bench.measure import environment, generalisation, predictions
from bench.reporting import gate
from bench.runner.experiments import expand, load_preset
from bench.runner.worker import run_record
from data.schema import MARS

# ---- the code a record was made by ------------------------------------------------------------------------------

PROJECT = {"bench/cli.py": "A = 1\n", "bench/measure/m.py": "B = 2\n", "strategies/s.py": "", "models/p.py": "",
           "models/configs/tiny.json": "{}", "data/d.py": "", "run_bench.py": "main()\n",
           "experiments/presets/smoke.json": "{}", "results/default/x.json": "{}", "tests/test_x.py": "",
           "README.md": "# readme\n", "bench/notes.txt": "not source"}


def _project(root):
    for name, text in PROJECT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_code_digest_changes_with_a_source_file_and_not_with_a_result_file(tmp_path):
    root = _project(tmp_path)
    assert environment.covered_files(root) == sorted(name for name in PROJECT if not name.startswith(
        ("results/", "tests/", "README")) and name.endswith((".py", ".json")))
    before = environment.compute_source_digest(root)
    for untouched in ("results/default/x.json", "tests/test_x.py", "README.md", "bench/notes.txt"):
        (root / untouched).write_text("changed")
    (root / "results" / "new.json").write_text("{}")
    assert environment.compute_source_digest(root) == before
    (root / "bench" / "cli.py").write_text("A = 2\n")
    changed = environment.compute_source_digest(root)
    assert changed != before
    (root / "bench" / "cli.py").write_text("A = 1\n")
    assert environment.compute_source_digest(root) == before  # the bytes decide, not the time stamps
    (root / "bench" / "measure" / "m.py").rename(root / "bench" / "measure" / "n.py")
    assert environment.compute_source_digest(root) != before  # a rename counts
    assert len(before) == 64 and int(before, 16) >= 0


def test_a_record_names_the_code_it_was_made_by():
    record = run_record(RunConfig(), run_id="x", status=records.OK)
    code = record["code"]
    assert record["schema_version"] == records.SCHEMA_VERSION == 3
    assert code["source_sha256"] == environment.source_digest() == environment.compute_source_digest()
    assert code["covers"] == list(environment.CODE_COVERS)
    assert (code["commit"], code["dirty"]) == (record["run"]["git_commit"], record["run"]["git_dirty"])


def _other_code(path, digest: str | None = "0" * 64) -> bytes:
    """Rewrite the record at ``path`` as if made by other code (``digest``; None: a version 2 record, no code)."""
    record = json.loads(path.read_text())
    if digest is None:
        record["schema_version"] = 2
        del record["code"]
    else:
        record["code"]["source_sha256"] = digest
    path.write_text(json.dumps(record))
    return path.read_bytes()


@pytest.mark.parametrize("digest", ["0" * 64, None], ids=["other-digest", "version-2"])
def test_a_record_of_other_code_is_resumed_as_before_but_not_by_the_gate(tmp_path, capsys, digest):
    cfg = RunConfig()
    final = tmp_path / "x.json"
    records.settle(run_record(cfg, run_id="x", status=records.OK), final)
    content = _other_code(final, digest)
    assert records.resume_decision(final, cfg)[0] == "finished earlier, skipped"  # outside --check: as before
    current = environment.source_digest()
    assert records.resume_decision(final, cfg, source_sha256=current) == (None, None)
    kept = tmp_path / "set-aside" / "x.other-code.json"
    assert kept.read_bytes() == content and not final.exists()
    shown = "000000000000.." if digest else "none recorded"
    assert capsys.readouterr().out.strip() == (f"gate: x: made by other code (source sha256 {shown} vs "
                                               f"{current[:12]}..); re-running (the earlier record is kept as {kept})")
    records.settle(run_record(cfg, run_id="x", status=records.OK), final)
    assert records.resume_decision(final, cfg, source_sha256=current)[0] == "finished earlier, skipped"


# ---- through the command line: a finished smoke run, resumed or redone ----------------------------------------

SMOKE = ["--preset", "smoke", "--strategies", "frozen"]


def _smoke_spec(**override):
    return expand(merge(load_preset("smoke"), override), strategies=["frozen"], seeds=[0], frames=[2],
                  batch_sizes=[16])[0]


@pytest.fixture
def finished() -> dict:
    """A finished record of the smoke sweep's one run (``SMOKE``), as this code writes it: the configuration the
    command line gives it (so a sweep resumes it), figures made up (the gate's verdict is not what is tested)."""
    spec = _smoke_spec()
    record = run_record(spec.config, run_id=spec.run_id, status=records.OK)
    made_up = _record("frozen", 0, skill=0.15, train_skill=0.25)
    record.update({"metrics": made_up["metrics"], "profile": made_up["profile"], "weights": {}})
    return record


@pytest.fixture(scope="module")
def real_run() -> dict:
    """The record of one real smoke run of ``frozen`` (profiling off, for speed), run in this process."""
    from bench.training.run import run_one

    spec = _smoke_spec(profile={"enabled": False})
    record = run_record(spec.config, run_id=spec.run_id, status=records.OK)
    record.update(run_one(spec.config))
    return record


def _smoke_baseline(path) -> str:
    """A baseline the smoke sweep may be checked against (its figures are made up: only the run's check matters)."""
    config = _smoke_spec().config
    baseline = gate.make_baseline([_record("frozen", seed, skill=0.15 + 0.01 * seed, train_skill=0.25)
                                   for seed in range(3)], preset="smoke")
    baseline["setting"] = records.sweep_setting(config.to_dict())
    path.write_text(json.dumps(baseline))
    return str(path)


def test_under_check_a_record_of_other_code_runs_again_and_without_check_it_is_resumed(finished, tmp_path, capsys,
                                                                                      monkeypatch):
    out, run_id = tmp_path / "runs", finished["run"]["id"]
    records.settle(finished, out / f"{run_id}.json")
    content = _other_code(out / f"{run_id}.json")
    monkeypatch.setattr(cli.report, "write_reports", lambda folder: [folder / "report" / "README.md"])  # not tested
    run_bench.main([*SMOKE, "--out", str(out)])
    assert f"{run_id}: finished earlier, skipped" in capsys.readouterr().out
    assert (out / f"{run_id}.json").read_bytes() == content  # resumed as it was
    ran = []

    def launcher(pending, out_dir, progress):  # runs nothing: the fixture's record, as this code makes it
        ran.extend(spec.run_id for spec in pending)
        record = {**finished, "code": {**finished["code"], "source_sha256": environment.source_digest()}}
        return {run_id: records.settle(record, out_dir / f"{run_id}.json")}

    monkeypatch.setattr(cli.launch, "make_launcher", lambda args: launcher)
    run_bench.main([*SMOKE, "--out", str(out), "--check", _smoke_baseline(tmp_path / "baseline.json")])
    captured = capsys.readouterr().out
    current = environment.source_digest()
    assert ran == [run_id]
    assert f"gate: {run_id}: made by other code (source sha256 000000000000.. vs {current[:12]}..); re-running" \
        in captured
    assert (out / "set-aside" / f"{run_id}.other-code.json").read_bytes() == content  # nothing lost
    assert records.read_result(out / f"{run_id}.json")["code"]["source_sha256"] == current


def test_a_real_run_records_its_training_subset_and_passes_the_train_vs_test_check(real_run):
    subset, test = real_run["metrics"]["train_subset"], real_run["metrics"]["test"]
    assert subset["num_samples"] == test["num_samples"] == 32  # smoke: min(64 training clips, 32 test clips)
    assert {"macro_f1", "paper_f1", "mA", "macro_f1_bootstrap_std"} <= set(subset)
    assert any(key.startswith("macro_f1_") and key not in ("macro_f1_bootstrap_std", "macro_f1_identity")
               for key in subset)  # the per-kind figures
    assert real_run["profile"]["train_subset_eval_time_s"] > 0
    assert real_run["code"]["source_sha256"] == environment.source_digest()
    summary = gate.summarise(real_run)
    verdict = gate._compare_train_test("frozen", 0, {}, summary, {})
    assert verdict.verdict == "ok" and verdict.now == pytest.approx(test["macro_f1"] - subset["macro_f1"])
    assert verdict.limit == pytest.approx(max(gate.K_STD * summary["train_vs_test_noise"], 0.005))


# ---- the train-vs-test check on records built from predictions -------------------------------------------------

CONFIG = {"data": {"dataset": "synthetic", "frames": 1}, "model": {"backbone": "tiny"},
          "train": {"batch_size": 16, "epochs": 4, "threshold": 0.45}, "profile": {}}


@functools.cache
def _clips(n: int, seed: int) -> np.ndarray:
    """(n, A) 0/1 labels of the MARS schema: one class per multi-class group, binary groups at a 40 % rate."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, MARS.num_columns), dtype=np.int64)
    for group, cols in zip(MARS.groups, MARS.group_slices(), strict=True):
        if group.binary:
            labels[:, cols.start] = rng.random(n) < 0.4
        else:
            labels[np.arange(n), cols.start + rng.integers(0, group.width, n)] = 1
    return labels


def _predict(labels: np.ndarray, skill: float, seed: int) -> np.ndarray:
    """Probabilities that follow the labels with weight ``skill`` and noise otherwise."""
    rng = np.random.default_rng(seed)
    return np.clip(skill * labels + (1 - skill) * rng.random(labels.shape), 0, 1)


CLIPS = 128


@functools.cache
def _figures(split: int, skill: float, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics (with the bootstrap std) of predictions of ``skill`` on the fixed clips of ``split``; computed once."""
    labels = _clips(CLIPS, split)
    probs = _predict(labels, skill, seed)
    return generalisation.subset_metrics(probs, labels, MARS, threshold=0.45), probs, labels


def _record(strategy: str, seed: int, *, skill: float, train_skill: float, stored: bool = False) -> dict:
    """A finished run's record whose test and training-subset figures are computed from predictions of the given
    skill on fixed clips (the same clips for every seed, as in a sweep); ``stored``: with its test predictions."""
    config = merge(CONFIG, {"strategy": {"name": strategy, "family": strategy, "params": {}}, "train": {"seed": seed}})
    test, test_probs, test_labels = _figures(1, skill, 10 + seed)
    subset = _figures(2, train_skill, 20 + seed)[0]
    found = {"test": dict(test), "majority_test": {"macro_f1": 0.3}, "train_subset": dict(subset),
             "own_params_effect": {"prob_abs_change_mean": 0.05}}
    if stored:
        found["test_predictions"] = predictions.encode(test_probs, test_labels)
    return {"run": {"id": f"{strategy}_s{seed}", "strategy": strategy, "status": "ok", "error": None,
                    "config": config},
            "metrics": found,
            "profile": {"peak_mem_bytes": 1000, "params_trainable": 10, "params_total": 100,
                        "fwd_flops_per_clip": 5.0, "train_step_flops": 15.0, "peak_mem_kind": "test"},
            "code": {"source_sha256": "a" * 64}}


def _without_figure(record: dict) -> dict:
    """The record as schema version 2 wrote it: no training subset, no code."""
    return {**{k: v for k, v in record.items() if k != "code"},
            "metrics": {k: v for k, v in record["metrics"].items() if k != "train_subset"}}


def _honest_baseline_records() -> list[dict]:
    """frozen and full at three seeds: test macro-F1 about 0.51 and 0.56, their training clips' about 0.61."""
    return [_record(s, seed, skill=0.15 + 0.01 * seed + (0.05 if s == "full" else 0), train_skill=0.25)
            for s in ("frozen", "full") for seed in range(3)]


def _train_vs_test(verdicts: list[gate.Verdict]) -> dict[str, gate.Verdict]:
    return {v.strategy: v for v in verdicts if v.metric == gate.TRAIN_TEST}


@pytest.mark.parametrize("figure", [True, False], ids=["baseline-with-figure", "baseline-before-figure"])
def test_a_run_trained_on_its_test_split_fails_the_train_vs_test_check(figure):
    """Trained on its own test clips, a model scores there what it scores on clips it learned, and on its real
    training clips like on unseen ones: test beats train. Against a baseline with the figure, the bound is the
    baseline's; against one recorded before it, the run's own bootstrap noise."""
    rows = _honest_baseline_records()
    baseline = gate.make_baseline(rows if figure else [_without_figure(r) for r in rows], preset="gate")
    leaked = _record("full", 3, skill=0.35, train_skill=0.15, stored=True)  # test ~0.75, its training ~0.51
    now = [_record("frozen", 3, skill=0.16, train_skill=0.25), leaked]
    compared = gate.compare(now, baseline)
    verdicts = _train_vs_test(compared)
    assert verdicts["full"].verdict == "SUSPICIOUS" and verdicts["frozen"].verdict == "ok"
    summary = gate.summarise(leaked)
    if figure:
        entry = baseline["strategies"]["full"]
        assert entry["train_vs_test"] < 0  # honest runs: training clips score higher
        assert verdicts["full"].limit == pytest.approx(max(entry["train_vs_test"], 0)
                                                       + baseline["tolerances"]["train_vs_test"])
    else:
        assert baseline["tolerances"]["train_vs_test"] is None and verdicts["full"].baseline is None
        assert verdicts["full"].limit == pytest.approx(gate.K_STD * summary["train_vs_test_noise"])
    failures = [line for line in gate.failure_lines(compared) if "train_vs_test" in line]
    assert len(failures) == 1
    assert failures[0].startswith("full: train_vs_test SUSPICIOUS (seed 3")
    assert "test data leaking into training, or evaluation on the wrong split" in failures[0]


def test_an_ordinary_run_passes_the_train_vs_test_check_with_either_baseline():
    rows = _honest_baseline_records()
    for baseline in (gate.make_baseline(rows, preset="gate"),
                     gate.make_baseline([_without_figure(r) for r in rows], preset="gate")):
        now = [_record("frozen", 3, skill=0.16, train_skill=0.25), _record("full", 3, skill=0.21, train_skill=0.25)]
        compared = gate.compare(now, baseline)
        assert {v.verdict for v in _train_vs_test(compared).values()} == {"ok"}
        assert not any("train_vs_test" in line for line in gate.failure_lines(compared))
    old = [_without_figure(r) for r in now]  # a record older than the figure, against a baseline without it
    assert {v.verdict for v in _train_vs_test(gate.compare(old, baseline)).values()} == {"n/a"}


def test_the_bootstrap_noise_of_the_difference_is_that_of_both_splits():
    record = _record("full", 0, skill=0.2, train_skill=0.25, stored=True)
    gap = generalisation.record_gap(record)
    probs, labels = predictions.decode(record["metrics"]["test_predictions"])
    test_std = generalisation.macro_f1_bootstrap_std(probs, labels, MARS, threshold=0.45)
    train_std = record["metrics"]["train_subset"]["macro_f1_bootstrap_std"]
    assert gap["gap_std"] == pytest.approx(math.hypot(test_std, train_std))
    assert 0.005 < train_std < 0.05  # macro-F1 on 128 clips: a few points
    del record["metrics"]["test_predictions"]  # without predictions: the subset's noise scaled to the test size
    assert generalisation.record_gap(record)["gap_std"] == pytest.approx(math.sqrt(2) * train_std)


def test_a_baseline_keeps_its_records_code_and_refuses_mixed_code_or_a_leak():
    rows = _honest_baseline_records()
    baseline = gate.make_baseline(rows, preset="gate")
    assert baseline["provenance"]["code"] == {"source_sha256": "a" * 64, "covers": list(environment.CODE_COVERS)}
    assert "train_vs_test" in baseline["measurement"]
    rows[0]["code"] = {"source_sha256": "b" * 64}
    with pytest.raises(gate.BaselineError, match="runs made by different code"):
        gate.make_baseline(rows, preset="gate")
    rows = _honest_baseline_records()
    rows[-1] = _record("full", 2, skill=0.22, train_skill=0.05)  # its usual test figure, its training clips worse
    with pytest.raises(gate.BaselineError, match="'full' seed 2: test macro-F1 .* above that of its training subset"):
        gate.make_baseline(rows, preset="gate")


def test_a_baseline_recorded_before_the_figure_still_reads(tmp_path):
    """The committed baseline with the train-vs-test figure taken out, as baselines before it were."""
    baseline = gate.read_baseline(environment.ROOT / "results" / "baselines" / "gate.json")
    assert baseline["tolerances"]["train_vs_test"] >= 0
    older = json.loads(json.dumps(baseline))
    del older["tolerances"]["train_vs_test"], older["noise"]["train_vs_test"]
    for entry in older["strategies"].values():
        entry.pop("train_vs_test", None)
        entry.pop("train_vs_test_std", None)
        for seed in entry.get("per_seed", {}).values():
            seed.pop("train_vs_test", None)
    assert "train_vs_test" not in gate.read_baseline(_write(tmp_path, older))["tolerances"]
    bad = {**baseline, "tolerances": {**baseline["tolerances"], "train_vs_test": -1}}
    with pytest.raises(gate.BaselineError, match="tolerances.train_vs_test is -1, expected a number >= 0"):
        gate.read_baseline(_write(tmp_path, bad))


def _write(tmp_path, payload) -> str:
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(payload))
    return str(path)


# ---- the training subset is seen as the test split is ----------------------------------------------------------

def test_the_training_subset_is_the_first_training_clips_sampled_as_evaluation_samples():
    from bench.config import DataConfig
    from bench.training.datasets import build_loaders
    from data.synthetic import SyntheticConfig, SyntheticVideoPAR

    cfg = DataConfig(num_train=24, num_val=8, num_test=16, frames=2, augment="clip")
    loaders = build_loaders(cfg, image_size=32, batch_size=8, seed=0)
    subset, train = loaders["train_subset"].dataset, loaders["train"].dataset
    assert len(subset) == 16 and np.array_equal(subset.labels, train.labels[:16])
    assert train.train is True  # the training split itself is left as it was
    evaluated = SyntheticVideoPAR(SyntheticConfig(num_train=24, num_val=8, num_test=16, image_size=32), "train",
                                  num_frames=2, train=False)
    for i in (0, 3, 15):  # segment-centre frames, no augmentation: what a test clip gets
        assert subset[i][0].equal(evaluated[i][0]) and subset[i][0].equal(subset[i][0])
    with pytest.raises(IndexError):
        subset[16]
    ablated = build_loaders(DataConfig(num_train=24, num_val=8, num_test=16, frames=2, frame_ablation="one"),
                            image_size=32, batch_size=8, seed=0)["train_subset"].dataset
    video = ablated[0][0]
    assert ablated.dataset.dataset.train is False and video[0].equal(video[1])  # the ablation stays applied
