"""A fair comparison: each strategy's own training defaults with their source, the evaluation protocols (val,
the papers' full-train, the released code's warned test-select, the grid's val-only) and ``--tune``, whose grid never
reads the test split."""
from __future__ import annotations

import json

import pytest
import torch

import run_bench
from bench.config import ConfigError, merge
from bench.runner import tuning
from bench.runner.experiments import expand, load_preset
from bench.runner.sweep import RunSpec
from bench.training import datasets as run_datasets
from strategies import registry

TINY = {"data": {"num_train": 32, "num_val": 16, "num_test": 16}, "train": {"epochs": 2},
        "profile": {"enabled": False}}


def _config(strategy: str = "full", preset: str = "smoke", **train):
    base = merge(merge(load_preset(preset), TINY), {"train": train})
    return expand(base, strategies=[strategy], seeds=[0], frames=[2], batch_sizes=[16])[0].config


# --- each strategy's own training defaults -------------------------------------------------------------------------

def test_every_strategy_declares_its_training_defaults_with_a_source():
    for name in registry.names():
        hyper = registry.get(name).hyper
        assert "lr" in hyper.values and hyper.source.strip(), name


def test_full_fine_tunes_pretrained_clip_weights_far_below_the_new_parameters():
    from bench.training.run import build_model
    from bench.training.train import make_optimizer

    cfg = _config("full")
    assert cfg.train.lr == 1e-3 and cfg.train.backbone_lr_scale == 0.01
    model, _, backbone_ids, _ = build_model(cfg)
    groups = make_optimizer(model, cfg.train, backbone_ids).param_groups
    rates = {id(p): group["lr"] for group in groups for p in group["params"]}
    assert {rates[id(p)] for p in model.backbone.parameters()} == {1e-5}
    assert {rates[id(p)] for p in model.head.parameters()} == {1e-3}


def test_an_explicit_setting_wins_over_the_strategy_default():
    assert _config("full", backbone_lr_scale=0.5).train.backbone_lr_scale == 0.5
    assert _config("frozen").train.backbone_lr_scale == 1.0  # frozen declares none: the loop's default


def test_a_strategy_cannot_declare_an_unknown_or_negative_default():
    with pytest.raises(registry.StrategyError, match="momentum"):
        registry.Hyperparameters({"momentum": 0.9})
    with pytest.raises(registry.StrategyError, match="lr"):
        registry.Hyperparameters({"lr": -1.0})


# --- protocols ---------------------------------------------------------------------------------------------------

def _loaders(protocol: str, monkeypatch=None):
    cfg = _config("frozen", protocol=protocol)
    return run_datasets.build_loaders(cfg.data, image_size=32, batch_size=8, seed=0, protocol=protocol)


def test_val_only_never_builds_the_test_split(monkeypatch):
    real = run_datasets._load_split

    def guarded(cfg, split, **kwargs):
        assert split != "test", "the test split was built under protocol val-only"
        return real(cfg, split, **kwargs)

    monkeypatch.setattr(run_datasets, "_load_split", guarded)
    loaders = _loaders("val-only")
    assert "test" not in loaders and len(loaders["val"].dataset) == 16


def test_full_train_trains_on_train_and_validation_clips_without_a_validation_split():
    loaders = _loaders("full-train")
    train = loaders["train"].dataset
    assert "val" not in loaders and len(train) == 32 + 16 and train.labels.shape[0] == 48
    assert len(set(train.track_ids)) == 48 and not set(train.track_ids) & set(loaders["test"].dataset.track_ids)


def test_test_select_chooses_on_the_test_split():
    loaders = _loaders("test-select")
    assert loaders["val"].dataset is loaders["test"].dataset


def test_full_train_tests_the_last_epoch_and_has_no_validation_metrics():
    from bench.training.run import run_one

    result = run_one(_config("frozen", protocol="full-train"))
    metrics = result["metrics"]
    assert metrics["best_epoch"] == 2 and metrics["val"] == {} and "macro_f1" in metrics["test"]
    assert all(set(epoch) == {"epoch", "train_loss", "elapsed_s"} for epoch in metrics["history"])


def test_a_val_only_run_has_validation_metrics_and_no_test_metrics():
    from bench.training.run import run_one

    metrics = run_one(_config("frozen", protocol="val-only"))["metrics"]
    assert set(metrics) == {"val", "best_epoch", "history"} and "macro_f1" in metrics["val"]


def test_test_select_is_warned(capsys):
    from bench.cli import warn_protocol

    warn_protocol([RunSpec("frozen__f2_b16_s0", _config("frozen", protocol="test-select"))])
    assert "WARNING: protocol test-select" in capsys.readouterr().err
    warn_protocol([RunSpec("frozen__f2_b16_s0", _config("frozen"))])
    assert capsys.readouterr().err == ""


# --- --tune --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [("momentum=0.9", "KEY=V1"), ("lr", "KEY=V1"), ("lr=a,b", "numbers"),
                                           ("lr=0,1e-3", "above 0"), ("weight_decay=-1", "non-negative")])
def test_a_bad_tune_axis_is_one_line_naming_it(text, message):
    with pytest.raises(ValueError, match=message):
        tuning.parse_axis(text)


def test_the_grid_is_the_product_and_backbone_scale_is_tuned_only_where_it_acts():
    axes = [tuning.parse_axis("lr=1e-3,3e-3"), tuning.parse_axis("train.backbone_lr_scale=0.01,1")]
    points = tuning.grid_points(axes)
    assert len(points) == 4 and points[0] == {"lr": 1e-3, "backbone_lr_scale": 0.01}
    assert tuning.strategy_points(_config("full"), points) == points
    assert tuning.strategy_points(_config("frozen"), points) == [{"lr": 1e-3, "backbone_lr_scale": 1.0},
                                                                 {"lr": 3e-3, "backbone_lr_scale": 1.0}]


def _grid_record(run: tuning.GridRun, score: float | None, *, test: bool = False) -> dict:
    metrics = {} if score is None else {"val": {"macro_f1": score}}
    if test:
        metrics["test"] = {"macro_f1": 0.9}
    return {"run": {"id": run.spec.run_id, "status": "ok" if score is not None else "failed"}, "metrics": metrics,
            "profile": {"train_time_s": 36.0, "train_steps": 10, "peak_mem_bytes": 2**20}}


def test_the_choice_is_the_best_mean_validation_score_and_skips_failed_points():
    specs = [RunSpec(f"full__f2_b16_s{seed}", tuning.with_train(_config("full"), {"seed": seed})) for seed in (0, 1)]
    grid = tuning.grid_runs(specs, tuning.grid_points([tuning.parse_axis("lr=1e-4,1e-3,1e-2")]))
    scores = {"lr0.0001": (0.30, 0.34), "lr0.001": (0.40, 0.30), "lr0.01": (0.90, None)}  # 1e-2: a run failed
    records = [_grid_record(run, scores[tuning.point_label(run.point)][run.spec.config.train.seed]) for run in grid]
    chosen = tuning.choose(grid, records)
    assert chosen["full"]["chosen"] == {"lr": 1e-3}
    document = tuning.summary(specs, grid, records, chosen, [tuning.parse_axis("lr=1e-4,1e-3,1e-2")])
    entry = document["strategies"]["full"]
    assert entry["defaults"] == {"lr": 1e-3} and entry["changed"] is False
    assert entry["cost"] == {"runs": 6, "runs_ok": 5, "train_hours": 0.06, "train_steps": 60,
                             "peak_mem_bytes_max": 2**20}
    assert [s.config.train.lr for s in tuning.tuned_specs(specs, chosen)] == [1e-3, 1e-3]


def test_the_choice_refuses_a_grid_run_that_holds_test_metrics():
    specs = [RunSpec("full__f2_b16_s0", _config("full"))]
    grid = tuning.grid_runs(specs, tuning.grid_points([tuning.parse_axis("lr=1e-3")]))
    with pytest.raises(AssertionError, match="never read the test split"):
        tuning.choose(grid, [_grid_record(grid[0], 0.5, test=True)])


def test_tuning_needs_the_val_protocol():
    specs = [RunSpec("full__f2_b16_s0", _config("full", protocol="full-train"))]
    with pytest.raises(ConfigError, match="protocol must be 'val'"):
        tuning.grid_runs(specs, [{"lr": 1e-3}])


def test_tune_end_to_end_chooses_on_validation_and_trains_with_the_choice(tmp_path, monkeypatch):
    preset = tmp_path / "tiny.json"
    preset.write_text(json.dumps({"extends": "smoke", **TINY}))
    out = tmp_path / "out"
    code = run_bench.main(["--preset", str(preset), "--strategies", "frozen", "--tune", "lr=1e-3,1e-2",
                           "--out", str(out)])
    assert code == 0
    document = json.loads((out / "tuning" / "tuning.json").read_text())
    entry = document["strategies"]["frozen"]
    grid = [json.loads(p.read_text()) for p in sorted((out / "tuning").glob("frozen__*.json"))]
    assert len(grid) == 2 and all("test" not in r["metrics"] and r["run"]["config"]["train"]["protocol"] ==
                                  "val-only" for r in grid)
    best = max(grid, key=lambda r: r["metrics"]["val"]["macro_f1"])
    assert entry["chosen"] == {"lr": best["run"]["config"]["train"]["lr"]}
    final = json.loads((out / "frozen__f2_b16_s0.json").read_text())
    assert final["run"]["config"]["train"]["lr"] == entry["chosen"]["lr"] and "test" in final["metrics"]
    assert (out / "report" / "tuning.md").read_text().count("| frozen") == 1


def test_tune_is_refused_with_the_gate(tmp_path, capsys):
    code = run_bench.main(["--preset", "smoke", "--strategies", "frozen", "--tune", "lr=1e-3", "--check",
                           str(tmp_path / "gate.json"), "--out", str(tmp_path / "out")])
    assert code == 2 and "--tune: not with --check" in capsys.readouterr().err


def test_protocol_flag_reaches_the_run_config():
    from bench.cli import build_parser, overrides

    args = build_parser().parse_args(["--protocol", "full-train"])
    assert overrides(args)["train"]["protocol"] == "full-train"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--protocol", "val-only"])  # the grid's protocol, not a user's choice


def test_loss_weights_follow_the_joined_training_split():
    from bench.training.run import weighted_loss

    split = _loaders("val")
    joined = torch.cat([torch.as_tensor(split[name].dataset.labels, dtype=torch.float32) for name in ("train", "val")])
    rates = weighted_loss(_loaders("full-train"), torch.device("cpu")).positive_rates
    torch.testing.assert_close(rates, joined.mean(0))
    assert not torch.allclose(rates, weighted_loss(split, torch.device("cpu")).positive_rates)


# --- VTF's fusion: the last block and final norm of a pretrained ViT ----------------------------------------------

def _timm_vit(tmp_path, suffix: str = ".pth"):
    import timm

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()  # width 192, 3 heads
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    else:
        torch.save({"model": vit.state_dict()}, path)
    return vit, path


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_the_fusion_started_from_a_vit_computes_its_last_block_and_norm(tmp_path, suffix):
    from models.par_model import FusionSpec, PARModel, fusion_block, init_fusion_from_vit

    vit, path = _timm_vit(tmp_path, suffix)
    model = PARModel.__new__(PARModel)
    torch.nn.Module.__init__(model)
    model.fusion, model.fusion_norm = fusion_block(FusionSpec(width=192, heads=3)), torch.nn.LayerNorm(192)
    assert init_fusion_from_vit(model, str(path)) == 11
    tokens = torch.randn(2, 7, 192)
    with torch.no_grad():
        expected = vit.norm(vit.blocks[-1](tokens))
        got = model.fusion_norm(model.fusion.eval()(tokens))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_run_starts_its_fusion_from_the_vit_file(tmp_path):
    from bench.training.run import build_base_model

    vit, path = _timm_vit(tmp_path)
    cfg = _config("frozen")
    cfg = type(cfg).from_dict(merge(cfg.to_dict(), {"model": {"fusion_width": 192, "fusion_heads": 3,
                                                              "fusion_init": str(path)}}))
    model = build_base_model(cfg)
    torch.testing.assert_close(model.fusion.attn.in_proj_weight, vit.blocks[-1].attn.qkv.weight)
    torch.testing.assert_close(model.fusion_norm.weight, vit.norm.weight)


def test_a_vit_file_of_another_width_or_no_vit_is_one_line(tmp_path):
    from models.par_model import FusionInitError, FusionSpec, PARModel, fusion_block, init_fusion_from_vit

    _, path = _timm_vit(tmp_path)
    model = PARModel.__new__(PARModel)
    torch.nn.Module.__init__(model)
    model.fusion, model.fusion_norm = fusion_block(FusionSpec(width=128, heads=4)), torch.nn.LayerNorm(128)
    with pytest.raises(FusionInitError, match="width 192.*expected width model.fusion_width = 128"):
        init_fusion_from_vit(model, str(path))
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(FusionInitError, match="no timm ViT state dict"):
        init_fusion_from_vit(model, str(other))
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(FusionInitError, match="cannot read"):
        init_fusion_from_vit(model, str(tmp_path / "broken.pth"))


def test_a_missing_vit_file_is_refused_by_the_config(tmp_path):
    with pytest.raises(ConfigError, match="fusion_init.*existing ViT state-dict file"):
        type(_config("frozen")).from_dict(merge(_config("frozen").to_dict(),
                                                {"model": {"fusion_init": str(tmp_path / "none.pth")}}))


# --- the released code's learning-rate schedule -------------------------------------------------------------------

def test_the_released_schedule_is_timms_per_epoch_cosine_and_gives_less_total_rate():
    import math

    from bench.training.train import cosine_with_warmup, released_schedule

    def factors(make, steps):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        schedule, seen = make(optimizer), []
        for _ in range(steps):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return seen

    epochs, per_epoch = 30, 10
    released = factors(lambda o: released_schedule(o, epochs=epochs, warmup_epochs=5, steps_per_epoch=per_epoch),
                       epochs * per_epoch)
    by_hand = [0.01 + t * 0.99 / 5 if t < 5 else 0.002 + 0.5 * 0.998 * (1 + math.cos(math.pi * t / epochs))
               for t in range(epochs)]
    assert released == pytest.approx([by_hand[step // per_epoch] for step in range(epochs * per_epoch)])
    ours = factors(lambda o: cosine_with_warmup(o, total_steps=epochs * per_epoch, warmup_steps=5 * per_epoch),
                   epochs * per_epoch)
    assert 1.1 < sum(ours) / sum(released) < 1.3  # this project's schedule gives about a fifth more rate in all


def test_a_bad_schedule_name_is_refused():
    with pytest.raises(ConfigError, match="lr_schedule.*'released'"):
        type(_config("frozen")).from_dict(merge(_config("frozen").to_dict(), {"train": {"lr_schedule": "step"}}))


# --- the gate holds each strategy to its own training hyperparameters ---------------------------------------------

def test_the_gate_refuses_a_sweep_whose_strategy_hyperparameters_differ_from_the_baseline():
    from pathlib import Path

    from bench.reporting import gate

    path = Path(__file__).resolve().parent.parent / "results" / "baselines" / "gate.json"
    baseline = gate.read_baseline(path)
    base = load_preset("gate")
    specs = expand(base, strategies=["frozen", "full"], seeds=[0], frames=[2], batch_sizes=[16])
    gate.check_sweep(baseline, preset="gate", configs=[s.config.to_dict() for s in specs], path=path)
    changed = expand(merge(base, {"train": {"backbone_lr_scale": 0.1}}), strategies=["full"], seeds=[0], frames=[2],
                     batch_sizes=[16])
    with pytest.raises(gate.BaselineError, match="full's training hyperparameters differ.*backbone_lr_scale"):
        gate.check_sweep(baseline, preset="gate", configs=[s.config.to_dict() for s in changed], path=path)
