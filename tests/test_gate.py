"""The regression gate: tolerances measured from seeds, the learned / own-parameter / gain checks, the baseline read
and matched before a sweep, and a deliberately broken pipeline failing it at small scale while a harmless change
(another seed) passes."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import run_bench
from bench.config import merge
from bench.measure import metrics, predictions
from bench.reporting import gate
from bench.runner.experiments import expand, load_preset
from bench.runner.worker import run_record
from data.schema import MARS

# ---- synthetic records: the gate's arithmetic ------------------------------------------------------------------

CONFIG = {"data": {"dataset": "synthetic", "frames": 1}, "model": {"backbone": "tiny"},
          "train": {"batch_size": 16, "epochs": 4}, "profile": {}}


def _record(strategy: str, seed: int, macro: float, *, own: float | None = 0.05, majority: float = 0.30,
            mem: int = 1000, params: int = 10, status: str = "ok") -> dict:
    config = merge(CONFIG, {"strategy": {"name": strategy, "family": strategy, "params": {}}, "train": {"seed": seed}})
    return {"run": {"id": f"{strategy}_s{seed}", "strategy": strategy, "status": status, "error": None,
                    "config": config},
            "metrics": {"test": {"macro_f1": macro, "paper_f1": macro - 0.1, "mA": macro + 0.2},
                        "majority_test": {"macro_f1": majority},
                        "own_params_effect": {"prob_abs_change_mean": None if strategy == "frozen" else own}},
            "profile": {"peak_mem_bytes": mem, "params_trainable": params, "params_total": 100,
                        "fwd_flops_per_clip": 5.0, "train_step_flops": 15.0, "peak_mem_kind": "test"}}


SEEDS = {"frozen": (0.44, 0.45, 0.46), "full": (0.50, 0.51, 0.52), "lora": (0.45, 0.45, 0.46)}


def _baseline_records() -> list[dict]:
    return [_record(name, seed, value) for name, values in SEEDS.items() for seed, value in enumerate(values)]


def test_tolerances_are_measured_from_the_seed_spread():
    baseline = gate.make_baseline(_baseline_records(), preset="gate")
    variances = [np.var(v, ddof=1) for v in SEEDS.values()]  # 1e-4, 1e-4, 1/3 e-4
    pooled = math.sqrt(np.mean(variances))
    assert baseline["noise"]["macro_f1"] == pytest.approx(pooled)
    assert baseline["tolerances"]["macro_f1"] == pytest.approx(3 * math.sqrt(1 + 1 / 3) * pooled)
    full = baseline["strategies"]["full"]
    assert full["macro_f1"] == pytest.approx(0.51) and full["learned_margin"] == pytest.approx(0.21)
    assert full["required_learned_margin"] == pytest.approx(0.105)
    assert full["gain_significant"] and not baseline["strategies"]["lora"]["gain_significant"]
    assert baseline["seeds"] == [0, 1, 2] and "--seeds 0,1,2 --update-baseline" in baseline["measurement"]
    assert set(baseline["exactness"]["exact"]) == {"params_trainable", "params_total", "fwd_flops_per_clip",
                                                   "train_step_flops"}


def _failures(records, baseline) -> list[str]:
    return gate.failure_lines(gate.compare(records, baseline))


def test_a_model_at_the_majority_level_fails_the_learned_check_whatever_its_accuracy_tolerance():
    baseline = gate.make_baseline(_baseline_records(), preset="gate")
    baseline["tolerances"]["macro_f1"] = 1.0  # even a baseline that tolerates any accuracy drop
    run = [_record("frozen", 3, 0.45), _record("full", 3, 0.31), _record("lora", 3, 0.455)]
    failures = _failures(run, baseline)
    assert any(line.startswith("full: learned_margin NOT LEARNED") for line in failures)
    assert not any(line.startswith(("frozen", "lora")) for line in failures)


def test_own_parameters_without_effect_fail_and_a_vanished_gain_over_frozen_fails():
    baseline = gate.make_baseline(_baseline_records(), preset="gate")
    run = [_record("frozen", 3, 0.45), _record("full", 3, 0.51, own=0.0), _record("lora", 3, 0.45)]
    assert [line.split(" (")[0] for line in _failures(run, baseline)] == ["full: own_params_effect NOT LEARNED"]
    run = [_record("frozen", 3, 0.47), _record("full", 3, 0.48), _record("lora", 3, 0.45)]
    assert any(line.startswith("full: gain_over_frozen REGRESSION") for line in _failures(run, baseline))


def test_predictions_unrelated_to_the_clip_fail_the_permutation_chance_check_whatever_their_class_rates():
    rng = np.random.default_rng(0)
    labels = np.zeros((256, MARS.num_columns), dtype=np.int64)
    for group, cols in zip(MARS.groups, MARS.group_slices(), strict=True):
        width = group.width
        labels[np.arange(256), cols.start + (rng.integers(0, width, 256) if width > 1 else 0)] = \
            rng.random(256) < 0.4 if width == 1 else 1
    probs = np.clip(0.35 * labels + 0.65 * rng.random(labels.shape), 0, 1)  # informative, often wrong
    informative = _record("full", 3, 0.5)
    informative["metrics"]["test_predictions"] = predictions.encode(probs, labels)
    misaligned = _record("full", 3, 0.5)
    misaligned["metrics"]["test_predictions"] = predictions.encode(probs, np.roll(labels, -1, axis=0))
    for record, clip_labels in ((informative, labels), (misaligned, np.roll(labels, -1, axis=0))):
        record["metrics"]["test"]["macro_f1"] = metrics.evaluate(probs, clip_labels, MARS)["macro_f1"]
    good, bad = gate.summarise(informative), gate.summarise(misaligned)
    assert good["chance_margin"] > good["required_chance_margin"] > 0
    assert bad["chance_margin"] < bad["required_chance_margin"]
    baseline = gate.make_baseline(_baseline_records(), preset="gate")
    verdicts = {v.metric: v.verdict for v in gate.compare([misaligned], baseline) if v.strategy == "full"}
    assert verdicts["chance_margin"] == "NOT LEARNED"


def test_a_new_seed_within_the_noise_passes_and_memory_or_parameter_changes_fail():
    baseline = gate.make_baseline(_baseline_records(), preset="gate")
    assert _failures([_record("frozen", 3, 0.455), _record("full", 3, 0.505), _record("lora", 3, 0.452)],
                     baseline) == []
    run = [_record("frozen", 3, 0.45, mem=1200), _record("full", 3, 0.51, params=11), _record("lora", 3, 0.45)]
    failures = [line.split(" (")[0] for line in _failures(run, baseline)]
    assert failures == ["frozen: peak_mem_bytes REGRESSION", "full: params_trainable REGRESSION"]


def test_a_baseline_on_which_a_strategy_does_not_learn_is_refused():
    records = _baseline_records() + [_record("prompt", s, 0.30 + 0.01 * s) for s in range(3)]
    with pytest.raises(gate.BaselineError, match="'prompt' does not learn clearly"):
        gate.make_baseline(records, preset="gate")
    with pytest.raises(gate.BaselineError, match="at least 2 seeds"):
        gate.make_baseline([_record("full", 0, 0.5)], preset="gate")


# ---- the baseline is read and matched before the sweep -------------------------------------------------------

def _write(tmp_path, payload) -> str:
    path = tmp_path / "baseline.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


def _smoke_baseline() -> dict:
    baseline = gate.make_baseline(_baseline_records(), preset="smoke")
    spec = expand(load_preset("smoke"), strategies=["frozen"], seeds=[0], frames=[2], batch_sizes=[16])[0]
    baseline["setting"] = gate.sweep_setting(spec.config.to_dict())
    return baseline


@pytest.mark.parametrize("payload, message", [
    (None, "baseline not found"),
    ("{not json", "unreadable baseline"),
    ({"baseline_version": 1, "strategies": {}}, "baseline_version 1, expected 2"),
    ("drop:tolerances", "missing field(s) ['tolerances']"),
    ("drop:signature", "strategies.frozen.signature is None, expected a string"),
    ("bad:tolerance", "tolerances.macro_f1 is 'x', expected a number >= 0"),
])
def test_a_missing_or_malformed_baseline_stops_before_the_sweep_with_one_line(tmp_path, capsys, payload, message):
    baseline = _smoke_baseline()
    if payload == "drop:tolerances":
        payload = {k: v for k, v in baseline.items() if k != "tolerances"}
    elif payload == "drop:signature":
        del baseline["strategies"]["frozen"]["signature"]
        payload = baseline
    elif payload == "bad:tolerance":
        baseline["tolerances"]["macro_f1"] = "x"
        payload = baseline
    path = str(tmp_path / "absent.json") if payload is None else _write(tmp_path, payload)
    out = tmp_path / "runs"
    code = run_bench.main(["--preset", "smoke", "--strategies", "frozen", "--out", str(out), "--check", path])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err
    assert not out.exists()  # nothing ran


def test_a_baseline_of_another_preset_or_setting_does_not_pass_this_sweep(tmp_path, capsys):
    path = _write(tmp_path, _smoke_baseline())
    out = tmp_path / "runs"
    assert run_bench.main(["--preset", "gate", "--strategies", "frozen", "--out", str(out), "--check", path]) == 2
    assert "recorded for preset 'smoke', this sweep is preset 'gate'" in capsys.readouterr().err
    assert run_bench.main(["--preset", "smoke", "--epochs", "3", "--strategies", "frozen", "--out", str(out),
                           "--check", path]) == 2
    assert "train.epochs: baseline 1, this sweep 3" in capsys.readouterr().err
    assert run_bench.main(["--preset", "smoke", "--strategies", "frozen", "--out", str(out),
                           "--update-baseline"]) == 2
    assert "at least 2 seeds" in capsys.readouterr().err
    assert not out.exists()


# ---- a broken pipeline at small scale, end to end through the gate --------------------------------------------

# full's CLIP weights at the rate of new parameters (its own default is 100x lower): in 3 epochs on 256 clips it then
# fits what it trains on, which the leakage cases need to show.
SMALL = {"data": {"num_train": 256, "num_val": 64, "num_test": 384}, "train": {"epochs": 3, "backbone_lr_scale": 1.0},
         "profile": {"enabled": False}}


def _run(strategy: str, seed: int) -> dict:
    """One real run in this process (so a test can break the pipeline with monkeypatch), as a result record; a run
    that raises is recorded failed with its error, as the worker records it. Two frames, so a temporal path exists."""
    from bench.training.run import run_one

    base = merge(load_preset("gate"), SMALL)
    spec = expand(base, strategies=[strategy], seeds=[seed], frames=[2], batch_sizes=[16])[0]
    try:
        outcome = run_one(spec.config)
    except Exception as error:
        return run_record(spec.config, run_id=spec.run_id, status="failed", error=f"{type(error).__name__}: {error}")
    record = run_record(spec.config, run_id=spec.run_id, status="ok")
    record.update(outcome)
    return record


@pytest.fixture(scope="module")
def small_baseline():
    """frozen and full on 256 training clips, 2 frames, 3 epochs, seeds 0-2: the baseline a small gate is held to."""
    return gate.make_baseline([_run(s, seed) for s in ("frozen", "full") for seed in (0, 1, 2)], preset="gate")


def _labels_of_the_next_clip(monkeypatch):
    import bench.training.run

    real = bench.training.run.build_loaders

    def shifted(*args, **kwargs):
        loaders = real(*args, **kwargs)
        for loader in loaders.values():
            loader.dataset.labels = np.roll(loader.dataset.labels, -1, axis=0)  # clip i gets clip i+1's labels
        return loaders

    monkeypatch.setattr(bench.training.run, "build_loaders", shifted)


def _own_parameters_never_stepped(monkeypatch):
    import bench.training.run

    def head_only(model, cfg, backbone_ids):
        own = {id(p) for p in predictions.own_parameters(model).values()}
        return torch.optim.Adam([p for p in model.parameters() if p.requires_grad and id(p) not in own], lr=cfg.lr)

    monkeypatch.setattr(bench.training.run, "make_optimizer", head_only)


def test_another_seed_passes_the_small_gate(small_baseline):
    assert _failures([_run("frozen", 3), _run("full", 3)], small_baseline) == []


def test_misaligned_labels_fail_the_gate_through_the_chance_check(small_baseline, monkeypatch):
    _labels_of_the_next_clip(monkeypatch)
    failures = [line.split(" (")[0] for line in _failures([_run("frozen", 0), _run("full", 0)], small_baseline)]
    for strategy in ("frozen", "full"):  # the majority-class margin alone may not catch it: see the chance check
        assert f"{strategy}: chance_margin NOT LEARNED" in failures
    assert "frozen: macro_f1" in failures  # the same-seed tier: seed 0 is the baseline's, held to it exactly


def test_own_parameters_that_never_step_fail_the_gate(small_baseline, monkeypatch):
    _own_parameters_never_stepped(monkeypatch)
    failures = _failures([_run("full", 0)], small_baseline)
    assert any(line.startswith("full: own_params_effect NOT LEARNED") for line in failures)
    assert any(line.startswith("frozen: (not in this run) MISSING") for line in failures)


# ---- injected bugs of every kind, each through the gate against the same small baseline -------------------------
# Each bug keeps FLOPs and parameter counts; each must fail naming the strategy, the check and the reason, while a
# harmless change passes. ``_verdicts`` keeps "strategy: check VERDICT" of every failure.

def _verdicts(records, baseline) -> set[str]:
    """"strategy: check VERDICT" of every failure of the strategies that ran (the others are reported missing)."""
    ran = {r["run"]["strategy"] for r in records}
    return {line.split(" (seed")[0] for line in _failures(records, baseline) if line.split(":")[0] in ran}


def test_a_test_split_built_from_training_clips_fails_the_run_and_the_gate(small_baseline, monkeypatch):
    """Leakage by wiring: the test split made of training clips. Every run checks its splits are disjoint."""
    import bench.training.datasets as datasets

    real = datasets._load_split
    monkeypatch.setattr(datasets, "_load_split", lambda cfg, split, **kw: real(cfg, "train" if split == "test" else
                                                                                split, **kw))
    record = _run("frozen", 0)
    assert record["run"]["status"] == "failed"
    failures = _failures([record, _run("full", 0)], small_baseline)
    assert any(line.startswith("frozen: (run failed: SplitOverlapError: the train and test splits share") and
               "MISSING" in line for line in failures), failures


def test_training_on_the_test_clips_is_suspicious_through_test_beating_train(small_baseline, monkeypatch):
    """Leakage by a loader: the training loader iterates the test clips (the splits themselves stay disjoint)."""
    from torch.utils.data import DataLoader

    import bench.training.run

    real = bench.training.run.build_loaders

    def train_on_test(*args, **kwargs):
        loaders = real(*args, **kwargs)
        test = loaders["test"]
        loaders["train"] = DataLoader(test.dataset, batch_size=test.batch_size, shuffle=True, drop_last=True,
                                      generator=torch.Generator().manual_seed(0))
        return loaders

    monkeypatch.setattr(bench.training.run, "build_loaders", train_on_test)
    verdicts = _verdicts([_run("full", 0)], small_baseline)
    assert "full: train_vs_test SUSPICIOUS" in verdicts, verdicts


def test_a_pretrained_backbone_learning_rate_ten_times_too_low_fails_full_at_its_own_seed(small_baseline,
                                                                                         monkeypatch):
    """A broken parameter group: the backbone group's lr scaled by 0.1."""
    import dataclasses

    import bench.training.run
    from bench.training.train import make_optimizer

    monkeypatch.setattr(bench.training.run, "make_optimizer", lambda model, cfg, ids: make_optimizer(
        model, dataclasses.replace(cfg, backbone_lr_scale=cfg.backbone_lr_scale * 0.1), ids))
    verdicts = _verdicts([_run("full", 0)], small_baseline)
    assert any(v.startswith("full: ") and "(same seed)" in v for v in verdicts), verdicts


def test_a_visual_attention_path_cut_off_fails_at_its_own_seed(small_baseline, monkeypatch):
    """Every visual block's attention branch discarded (FLOPs and parameters unchanged) by a bug in the build."""
    import bench.training.run
    from models.vision import discard_attention

    real = bench.training.run.build_base_model

    def without_attention(cfg):
        model = real(cfg)
        discard_attention(model.backbone)
        return model

    monkeypatch.setattr(bench.training.run, "build_base_model", without_attention)
    verdicts = _verdicts([_run("full", 0)], small_baseline)
    assert any(v.startswith("full: ") and "(same seed)" in v for v in verdicts), verdicts


def test_a_temporal_path_that_keeps_one_frame_fails_at_its_own_seed(small_baseline, monkeypatch):
    """The frame average replaced by the first frame (a slicing bug in the temporal aggregator)."""
    from models.temporal import MeanOverFrames

    monkeypatch.setattr(MeanOverFrames, "forward", lambda self, tokens: tokens[:, 0])  # (B, T, N, D) -> (B, N, D)
    verdicts = _verdicts([_run("full", 0)], small_baseline)
    assert any(v.startswith("full: ") and "(same seed)" in v for v in verdicts), verdicts


def test_another_thread_count_is_a_harmless_change(small_baseline):
    """Two intra-op threads instead of the baseline's: operation order changes, the gate must not call it a bug."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if threads == 1 else 1)
    try:
        records = [_run("full", 0)]
    finally:
        torch.set_num_threads(threads)
    assert _verdicts(records, small_baseline) == set()


# ---- the same-seed tier, both directions ------------------------------------------------------------------------

ZEN4 = "AuthenticAMD family 25 model 17 stepping 1; torch AVX512"


def _with_environment(record: dict, cpu: str = "AMD EPYC", cpu_id: str = ZEN4) -> dict:
    return {**record, "environment": {"torch": "2.14.1", "cpu": cpu, "cpu_id": cpu_id, "python": "3.11.7",
                                      "numpy": "2.4.6", "gpu": None}}


def _seeded_baseline() -> dict:
    return gate.make_baseline([_with_environment(r) for r in _baseline_records()], preset="gate")


def test_a_repeated_seed_is_held_to_its_own_value_far_inside_the_seed_noise():
    baseline = _seeded_baseline()
    assert gate.SAME_SEED_TOLERANCE < baseline["tolerances"]["macro_f1"]
    drop = 2 * gate.SAME_SEED_TOLERANCE  # inside the statistical tolerance, outside the same-seed one
    run = [_with_environment(_record(name, 0, values[0] - (drop if name == "full" else 0)))
           for name, values in SEEDS.items()]
    failures = _failures(run, baseline)
    expected = [f"full: {m} (same seed) REGRESSION" for m in gate.ACCURACY]
    assert [line.split(" (seed")[0] for line in failures] == expected
    elsewhere = [_with_environment(r, cpu="Intel Xeon") for r in run]  # another CPU: the statistical tier only
    assert not _failures(elsewhere, baseline)
    # A virtual machine names two generations alike ("AMD EPYC"); the generation and the kernels' instruction set
    # decide the float sums, so another of them is another environment too.
    zen3 = [_with_environment(r, cpu_id="AuthenticAMD family 25 model 1 stepping 1; torch AVX2") for r in run]
    assert not _failures(zen3, baseline)


def test_much_better_than_the_same_seed_is_suspicious_and_says_why():
    baseline = _seeded_baseline()
    run = [_with_environment(_record(name, 0, values[0] + (0.02 if name == "frozen" else 0)))
           for name, values in SEEDS.items()]
    failures = _failures(run, baseline)
    assert any(line.startswith("frozen: macro_f1 (same seed) SUSPICIOUS") and "leaking" in line for line in failures)


def test_much_better_than_the_seed_mean_is_suspicious_in_the_statistical_tier():
    baseline = gate.make_baseline(_baseline_records(), preset="gate")
    run = [_record("frozen", 3, 0.45), _record("full", 3, 0.51), _record("lora", 3, 0.60)]
    assert any(line.startswith("lora: macro_f1 SUSPICIOUS") for line in _failures(run, baseline))


def test_memory_is_checked_in_both_directions():
    baseline = gate.make_baseline(_baseline_records(), preset="gate")
    run = [_record("frozen", 3, 0.45), _record("full", 3, 0.51, mem=500), _record("lora", 3, 0.45, mem=2000)]
    verdicts = {line.split(" (")[0] for line in _failures(run, baseline)}
    assert verdicts == {"full: peak_mem_bytes CHANGED", "lora: peak_mem_bytes REGRESSION"}


def test_splits_sharing_a_person_fail_the_run():
    from bench.training.datasets import SplitOverlapError, check_disjoint

    class Split:
        def __init__(self, ids):
            self.track_ids = self.pids = ids

    check_disjoint({"train": Split(["a", "b"]), "val": Split(["c"]), "test": Split(["d"])})
    with pytest.raises(SplitOverlapError, match="train and test splits share 1 clips"):
        check_disjoint({"train": Split(["a", "b"]), "val": Split(["c"]), "test": Split(["b"])})


def test_a_record_names_the_cpu_generation_and_the_kernels_instruction_set(monkeypatch, tmp_path):
    """``cpu_id`` reads vendor, family, model and stepping (not the model name a virtual machine shares between
    generations) and torch's dispatch level, so two hosts named alike are told apart."""
    from bench.measure import environment as env

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
                       "model name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\nmodel\t\t: 99\n")
    real_path = env.Path
    monkeypatch.setattr(env, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert env.cpu_identity() == "AuthenticAMD family 25 model 1 stepping 1; torch AVX2"
    assert env.cpu_model() == "AMD EPYC"
    assert "cpu_id" in gate.ENVIRONMENT_KEYS
