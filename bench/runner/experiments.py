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
import os
from pathlib import Path

from bench.config import EXPERIMENTS_DIR, ConfigError, PresetConfig, RunConfig, load_json, merge
from bench.runner.sweep import RunSpec
from strategies import registry


def preset_names() -> list[str]:
    return sorted(p.stem for p in (EXPERIMENTS_DIR / "presets").glob("*.json"))


def preset_path(name: str | None, *, folder: Path | None = None) -> Path:
    """presets/<name>.json, or ``name`` itself when it is a JSON file (a preset kept outside the project): relative to
    ``folder`` (that of the preset whose ``extends`` names it), else to the caller's folder."""
    if name in (None, "default"):
        return EXPERIMENTS_DIR / "defaults.json"
    if name.endswith(".json"):
        path = Path(os.path.abspath(Path(folder or Path.cwd()) / Path(name).expanduser()))
        if not path.is_file():
            raise ConfigError(f"--preset {name!r}: no such file ({path})")
        return path
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
    preset = _own_paths(dict(load_json(path)), path)
    parent = preset.pop("extends", None)
    if parent is not None and not isinstance(parent, str):
        raise ConfigError(f"{path}: \"extends\": expected a preset name, got {parent!r}")
    try:
        base = (_load_preset_file(preset_path(parent, folder=path.parent), seen=(*seen, path)) if parent
                else load_json(defaults))
    except ConfigError as error:
        raise ConfigError(f"{path}: \"extends\" {parent!r}: {error}") from None
    return merge(base, preset)


def _own_paths(preset: dict, path: Path) -> dict:
    """A preset kept outside the project names its files relative to itself: ``data.data_root`` always, and
    ``model.pretrained`` / ``model.fusion_init`` where such a file exists there (else a tag or a file the project
    ships). The shipped presets are left as written: their paths are the project's, and baselines record them so."""
    if EXPERIMENTS_DIR in path.resolve().parents:
        return preset
    data, model = preset.get("data"), preset.get("model")
    if isinstance(data, dict) and isinstance(data.get("data_root"), str):
        preset["data"] = {**data, "data_root": os.path.abspath(path.parent / Path(data["data_root"]).expanduser())}
    for key in ("pretrained", "fusion_init"):
        weights = model.get(key) if isinstance(model, dict) else None
        if isinstance(weights, str) and weights and (path.parent / Path(weights).expanduser()).exists():
            model = preset["model"] = {**model, key: os.path.abspath(path.parent / Path(weights).expanduser())}
    return preset


def _variant(path: Path) -> dict:
    spec = load_json(path)
    unknown = sorted(set(spec) - {"family", "description", "params", "model"})
    if unknown or "family" not in spec:
        raise ConfigError(f"{path}: expected keys family, description, params, model; got {sorted(spec)}")
    return {"family": spec["family"], "description": spec.get("description", ""),
            "params": spec.get("params", {}), "model": spec.get("model", {})}


def strategy_catalog() -> dict[str, dict]:
    """name -> {family, description, params, model}: registered families first, then variants. A variant named like
    a registered strategy (a plugin's, ``PAR_BENCH_PLUGINS``) would hide it: that is an error naming both."""
    catalog = {name: {"family": name, "description": registry.get(name).description, "params": {}, "model": {}}
               for name in registry.names()}
    for path in sorted((EXPERIMENTS_DIR / "strategies").glob("*.json")):
        if path.stem in catalog:
            raise registry.StrategyError(f"strategy {path.stem!r} of {registry.origin(path.stem)} has the name of the "
                                         f"built-in variant {path}; rename the plugin's strategy")
        catalog[path.stem] = _variant(path)
    return catalog


def resolve_strategies(text: str) -> list[str]:
    """The names ``--strategies`` lists, each once, in the order first given."""
    catalog = strategy_catalog()
    if text.strip() == "all":
        return list(catalog)
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in catalog]
    if unknown or not names:
        raise ConfigError(f"--strategies: unknown {unknown or text!r}; available: all, {', '.join(catalog)}")
    return names


def run_config(base: dict, strategy: str, *, seed: int, frames: int, batch_size: int) -> RunConfig:
    """One run's config: the strategy's own training defaults (``registry.Hyperparameters``) under the preset, so
    an explicit preset or command-line value wins; then the preset's ``strategy_defaults`` for the family, then
    the variant."""
    entry = strategy_catalog()[strategy]
    base = dict(base)
    family_defaults = base.pop("strategy_defaults", {}).get(entry["family"], {})
    params = {**family_defaults, **entry["params"]}
    base = merge({"train": dict(registry.get(entry["family"]).hyper.values)}, base)
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
    train_sizes = {}
    if roots:
        from data.video_dataset import resolve_manifest

        for dataset, root in roots:
            train_sizes[dataset, root] = resolve_manifest(dataset, root).split_counts()["train"]
    for spec in specs:
        check_batch_fits(spec.config, train_sizes)
    for model in {(s.config.model.backbone, s.config.model.pretrained, s.config.model.activation) for s in specs}:
        check_weights(model[0], model[1], activation=model[2])


def check_batch_fits(cfg: RunConfig, train_sizes: dict) -> None:
    """A batch larger than the training split would run as a smaller one, while the record names the batch asked
    for: refused. ``train_sizes``: (dataset, root) -> clips of a real dataset's train split."""
    data = cfg.data
    size = data.num_train if data.dataset == "synthetic" else train_sizes[data.dataset, data.data_root]
    where = "data.num_train" if data.dataset == "synthetic" else f"the train split of {data.data_root}"
    if cfg.train.batch_size > size:
        raise ConfigError(f"--batch-size {cfg.train.batch_size}: larger than the train split ({size} clips, {where});"
                          f" choose at most {size}")


def run_id(strategy: str, *, frames: int, batch_size: int, seed: int) -> str:
    """The readable id of a run, also its result file's name."""
    return f"{strategy}__f{frames}_b{batch_size}_s{seed}"


def expand(base: dict, *, strategies: list[str], seeds: list[int], frames: list[int], batch_sizes: list[int]
           ) -> list[RunSpec]:
    """The cross product of the sweep axes, one RunSpec per run, with a readable run id; a value given twice on an
    axis (``--seeds 0,0``) is one run, not two runs of the same config."""
    specs = []
    axes = [list(dict.fromkeys(axis)) for axis in (strategies, frames, batch_sizes, seeds)]
    for strategy, frame_count, batch, seed in itertools.product(*axes):
        cfg = run_config(base, strategy, seed=seed, frames=frame_count, batch_size=batch)
        specs.append(RunSpec(run_id(strategy, frames=frame_count, batch_size=batch, seed=seed), cfg))
    return specs


def parameter_counts(base: dict, strategies: list[str]) -> list[tuple[str, dict]]:
    """Build the base model once, then each strategy on a copy of it, and count its parameters."""
    import copy

    from bench.measure.profile import count_parameters
    from bench.training.run import build_base_model, seed_everything, with_strategy

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
