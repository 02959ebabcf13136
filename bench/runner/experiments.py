"""Experiments: presets (JSON under experiments/presets) and strategy variants (experiments/strategies) expanded
into the list of runs of a sweep.

A preset may scale a family to its backbone with ``strategy_defaults`` (e.g. a narrower side network for the tiny
CLIP); a variant's own parameters win over those. A variant file names a registered strategy family and its
parameters, e.g. ``side_spatial.json``:
``{"family": "side", "description": "...", "params": {"temporal": false}}``; it may also override ``model`` keys.
The runnable strategy names are the registered families plus every variant file.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

from bench.config import EXPERIMENTS_DIR, ConfigError, PresetConfig, RunConfig, load_json, merge
from bench.runner.sweep import RunSpec
from strategies import registry


def preset_names() -> list[str]:
    return sorted(p.stem for p in (EXPERIMENTS_DIR / "presets").glob("*.json"))


def preset_path(name: str | None) -> Path:
    """presets/<name>.json, or ``name`` itself when it is a JSON file (a preset kept outside the project)."""
    if name in (None, "default"):
        return EXPERIMENTS_DIR / "defaults.json"
    if name.endswith(".json"):
        if not Path(name).is_file():
            raise ConfigError(f"--preset {name!r}: no such file")
        return Path(name)
    path = EXPERIMENTS_DIR / "presets" / f"{name}.json"
    if not path.exists():
        raise ConfigError(f"--preset {name!r}: no such preset; available: {', '.join(preset_names())} "
                          "(or a path to a .json file)")
    return path


def load_preset(name: str | None) -> dict:
    """defaults.json deep-merged with the preset (``default``/None = the defaults alone), checked field by field
    (``bench.config.PresetConfig``) before anything runs; an error names the preset file. A preset may name another
    one under ``"extends"``; it is merged over that one (``paper-dryrun`` extends ``paper``)."""
    path = preset_path(name)
    config = _load_preset_file(path, seen=())
    try:
        PresetConfig.from_dict(config)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return config


def _load_preset_file(path: Path, *, seen: tuple[Path, ...]) -> dict:
    defaults = EXPERIMENTS_DIR / "defaults.json"
    if path == defaults:
        return load_json(defaults)
    if path in seen:
        raise ConfigError(f"{path}: \"extends\" forms a cycle ({' -> '.join(p.stem for p in (*seen, path))})")
    preset = dict(load_json(path))
    parent = preset.pop("extends", None)
    if parent is not None and not isinstance(parent, str):
        raise ConfigError(f"{path}: \"extends\": expected a preset name, got {parent!r}")
    try:
        base = _load_preset_file(preset_path(parent), seen=(*seen, path)) if parent else load_json(defaults)
    except ConfigError as error:
        raise ConfigError(f"{path}: \"extends\" {parent!r}: {error}") from None
    return merge(base, preset)


def _variant(path: Path) -> dict:
    spec = load_json(path)
    unknown = sorted(set(spec) - {"family", "description", "params", "model"})
    if unknown or "family" not in spec:
        raise ConfigError(f"{path}: expected keys family, description, params, model; got {sorted(spec)}")
    return {"family": spec["family"], "description": spec.get("description", ""),
            "params": spec.get("params", {}), "model": spec.get("model", {})}


def strategy_catalog() -> dict[str, dict]:
    """name -> {family, description, params, model}: registered families first, then variants."""
    catalog = {name: {"family": name, "description": registry.get(name).description, "params": {}, "model": {}}
               for name in registry.names()}
    for path in sorted((EXPERIMENTS_DIR / "strategies").glob("*.json")):
        catalog[path.stem] = _variant(path)
    return catalog


def resolve_strategies(text: str) -> list[str]:
    catalog = strategy_catalog()
    if text.strip() == "all":
        return list(catalog)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in catalog]
    if unknown or not names:
        raise ConfigError(f"--strategies: unknown {unknown or text!r}; available: all, {', '.join(catalog)}")
    return names


def run_config(base: dict, strategy: str, *, seed: int, frames: int, batch_size: int) -> RunConfig:
    """One run's config: preset, then the preset's ``strategy_defaults`` for the family, then the variant."""
    entry = strategy_catalog()[strategy]
    base = dict(base)
    family_defaults = base.pop("strategy_defaults", {}).get(entry["family"], {})
    params = {**family_defaults, **entry["params"]}
    config = merge(base, {"model": entry["model"], "data": {"frames": frames},
                          "train": {"seed": seed, "batch_size": batch_size},
                          "strategy": {"name": strategy, "family": entry["family"], "params": params}})
    run = RunConfig.from_dict(config)
    return resolved(run, strategy_params(run.strategy.registered, run.strategy.params, variant=strategy))


def strategy_params(family: str, params: dict, *, variant: str):
    """The strategy's config built and checked by the registry; a problem in a variant's parameters names its file."""
    try:
        return registry.build_config(family, params)
    except registry.StrategyError as error:
        if variant == family:
            raise
        raise registry.StrategyError(f"{EXPERIMENTS_DIR / 'strategies' / f'{variant}.json'}: {error}") from None


def resolved(run: RunConfig, strategy_cfg) -> RunConfig:
    """The run with every strategy field spelled out (defaults included): a changed default in code then changes the
    config digest, so resume re-runs and the gate sees a changed configuration."""
    params = json.loads(registry.config_to_json(strategy_cfg))
    return dataclasses.replace(run, strategy=dataclasses.replace(run.strategy, params=params))


def preflight(specs: list[RunSpec]) -> None:
    """Checks that need more than the config itself, done once before any run starts, so a bad file fails the sweep
    at once in one line rather than every run one by one: every real dataset's manifest reads, and every distinct
    backbone and its weights load."""
    from models.backbone import check_weights

    roots = sorted({(s.config.data.dataset, s.config.data.data_root) for s in specs
                    if s.config.data.dataset != "synthetic"})
    if roots:
        from data.video_dataset import resolve_manifest

        for dataset, root in roots:
            resolve_manifest(dataset, root)
    for model in {(s.config.model.backbone, s.config.model.pretrained, s.config.model.activation) for s in specs}:
        check_weights(model[0], model[1], activation=model[2])


def run_id(strategy: str, *, frames: int, batch_size: int, seed: int) -> str:
    """The readable id of a run, also its result file's name."""
    return f"{strategy}__f{frames}_b{batch_size}_s{seed}"


def expand(base: dict, *, strategies: list[str], seeds: list[int], frames: list[int], batch_sizes: list[int]
           ) -> list[RunSpec]:
    """The cross product of the sweep axes, one RunSpec per run, with a readable run id."""
    specs = []
    for strategy, frame_count, batch, seed in itertools.product(strategies, frames, batch_sizes, seeds):
        cfg = run_config(base, strategy, seed=seed, frames=frame_count, batch_size=batch)
        specs.append(RunSpec(run_id(strategy, frames=frame_count, batch_size=batch, seed=seed), cfg))
    return specs


def parameter_counts(base: dict, strategies: list[str]) -> list[tuple[str, dict]]:
    """Build the base model once, then each strategy on a copy of it, and count its parameters."""
    import copy

    from bench.measure.profile import count_parameters
    from bench.runner.run import build_base_model, seed_everything, with_strategy

    frames, batch = base["data"]["frames"], base["train"]["batch_size"]
    first = run_config(base, strategies[0], seed=0, frames=frames, batch_size=batch)
    seed_everything(0)
    base_model, rows = build_base_model(first), []
    for name in strategies:
        cfg = run_config(base, name, seed=0, frames=frames, batch_size=batch)
        model = build_base_model(cfg) if cfg.model != first.model else copy.deepcopy(base_model)
        model, base_ids, _ = with_strategy(model, cfg)
        rows.append((name, count_parameters(model, base_ids)))
    return rows
