"""The strategy registry: name -> (config dataclass, apply function, description).

A strategy module calls ``register(...)`` once at import. Every module in this package except the ones listed in
``_NOT_STRATEGIES`` is imported on first use, so adding a strategy is one file. Strategies kept outside the project
are loaded from the modules named in the environment variable ``PAR_BENCH_PLUGINS`` (comma-separated, importable
from ``PYTHONPATH``); worker processes inherit it. A plugin strategy named like one already registered is an error
naming both (``origin`` says where each came from); the bench refuses one named like a built-in variant
(experiments/strategies). The bench only ever talks to this module (``apply_strategy``, ``build_config``, ``names``);
it never imports a concrete strategy.

Rules every strategy follows (checked by the registry-parametrized contract tests): ``apply_strategy`` freezes the
whole model, the strategy enables only its own parameters, and the shared fusion/head are enabled by one shared flag
(``train_head``), never per strategy. Parameters a strategy adds carry its prefix (``lora_``, ``adapter_``,
``prompt_``, ``side_`` ...), listed in ``prefixes``. A strategy that trains parameters the model already had (full
fine-tuning: all of the visual tower; BitFit: its biases) declares them with ``trains_existing(model, cfg)``, so what it
trains is stated by the strategy and checked, not special-cased by the tests.

A strategy's config is a frozen dataclass deriving from ``StrategyOptions``, every field declared with
``strategies.options.option`` (type, default, help text, rules): the builder the run config uses too. A bad value, from
JSON, the command line or code, is one ``StrategyError`` naming the strategy, the field, the value and what was
expected; ``describe`` lists the fields (``run_bench.py --list-strategies --verbose``).
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping

from torch import nn

from strategies import options

_NOT_STRATEGIES = {"registry", "common", "options"}
_REGISTRY: dict[str, StrategyEntry] = {}


class StrategyError(options.OptionError):
    """Unknown strategy, invalid strategy parameters, or a model a strategy cannot apply to."""

    bad_input = True  # a bench.errors.BenchError: the command line prints the message alone (exit 2)


class StrategyOptions(options.Validated):
    """Base of every strategy's config: its fields are checked against their declared types and rules on
    construction, and a bad value is a ``StrategyError`` naming the field."""

    ERROR: ClassVar[type[StrategyError]] = StrategyError


def _nothing(model: nn.Module, cfg: Any) -> tuple:
    return ()


#: The ``train`` keys (bench/config.py ``TrainConfig``) a strategy may give its own default for.
HYPERPARAMETERS = ("lr", "backbone_lr_scale", "weight_decay", "warmup_epochs")


@dataclass(frozen=True)
class Hyperparameters:
    """A strategy's own training defaults and where they come from.

    One learning rate for every way of tuning is unfair by construction: pretrained CLIP weights are fine-tuned at
    rates about 100x below those of newly initialised parameters. ``values`` fill the ``train`` keys that the
    defaults file, a preset and the command line leave unset (an explicit setting always wins, and ``--tune``
    wins over both); ``source`` cites the paper or practice each value follows."""

    values: Mapping[str, float] = field(default_factory=dict)
    source: str = ("the loop's defaults (bench/config.py): Adam at VTF's lr 1e-3 for every trained parameter "
                   "(VTF section 3.1)")

    def __post_init__(self):
        unknown = sorted(set(self.values) - set(HYPERPARAMETERS))
        bad = {k: v for k, v in self.values.items() if not isinstance(v, (int, float)) or isinstance(v, bool)
               or v < 0}
        if unknown or bad:
            raise StrategyError(f"strategy hyperparameters: expected non-negative numbers for some of "
                                f"{', '.join(HYPERPARAMETERS)}, got {dict(self.values)}")


#: New parameters (prompts, adapters, low-rank factors, side networks, the shared head) at the papers' rate.
NEW_PARAMETERS = Hyperparameters({"lr": 1e-3}, "VTF and VTFPAR++ train every new parameter with Adam at lr 1e-3 "
                                               "(VTF section 3.1; VTFPAR++ likewise)")


@dataclass(frozen=True)
class StrategyEntry:
    name: str
    config: type
    apply: Callable[[nn.Module, Any], nn.Module]
    description: str
    prefixes: tuple[str, ...] = ()
    zero_init: bool = False  # step-0 output equals the frozen base model's
    trains_existing: Callable[[nn.Module, Any], Iterable[nn.Parameter]] = _nothing  # (model, cfg): pre-existing params
    source: str = "code that called register"  # where it came from, to name both sides of a name collision
    hyper: Hyperparameters = Hyperparameters()  # its own training defaults, with their source

    @property
    def trains_pretrained(self) -> bool:
        """Whether it trains parameters the model came with (so ``train.backbone_lr_scale`` can matter to it)."""
        return self.trains_existing is not _nothing


def register(name: str, *, config: type, apply: Callable, description: str, prefixes: tuple[str, ...] = (),
             zero_init: bool = False, trains_existing: Callable[[nn.Module, Any], Iterable[nn.Parameter]] = _nothing,
             hyper: Hyperparameters = Hyperparameters()) -> None:
    """Add a strategy. A name already taken by another strategy (a plugin named like a built-in, two plugins alike)
    is an error naming both: the registry never lets one silently replace or hide the other. ``hyper``: the
    strategy's own training defaults with their source (``Hyperparameters``)."""
    source = _loading[-1] if _loading else StrategyEntry.source
    if name in _REGISTRY and _REGISTRY[name].apply is not apply:
        raise StrategyError(f"strategy {name!r} of {source} has the name of the strategy of {_REGISTRY[name].source};"
                            f" rename the one of {source}")
    _REGISTRY[name] = StrategyEntry(name, config, apply, description, tuple(prefixes), zero_init, trains_existing,
                                    source, hyper)


_loading: list[str] = []  # the module being imported by _load_builtin, innermost last


def origin(name: str) -> str:
    """Where strategy ``name`` was registered, e.g. ``plugin 'my_plugin' (/path/my_plugin.py)``."""
    return get(name).source


def _load_builtin() -> None:
    package = importlib.import_module("strategies")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in _NOT_STRATEGIES:
            _import(f"strategies.{module.name}", f"the built-in module strategies.{module.name}")
    for name in filter(None, (n.strip() for n in os.environ.get("PAR_BENCH_PLUGINS", "").split(","))):
        _import_plugin(name)


def _import(module: str, source: str) -> None:
    _loading.append(source)
    try:
        importlib.import_module(module)
    finally:
        _loading.pop()


def _import_plugin(name: str) -> None:
    """Import one plugin module; whatever it raises becomes one line naming the module and its file."""
    try:
        _import(name, f"plugin {name!r} ({_plugin_file(name)})")
    except ModuleNotFoundError as error:
        if error.name != name.split(".")[0] and error.name != name:
            raise StrategyError(f"PAR_BENCH_PLUGINS: plugin {name!r} ({_plugin_file(name)}) failed at import: "
                                f"{type(error).__name__}: {error}") from None
        raise StrategyError(f"PAR_BENCH_PLUGINS: cannot import {name!r} ({error}; is its folder on "
                            "PYTHONPATH?)") from None
    except SyntaxError as error:
        raise StrategyError(f"PAR_BENCH_PLUGINS: plugin {name!r} ({error.filename}, line {error.lineno}) has a "
                            f"syntax error: {error.msg}") from None
    except StrategyError as error:  # its own message names the plugin
        raise StrategyError(f"PAR_BENCH_PLUGINS: {error}") from None
    except Exception as error:  # a plugin may raise anything at import; the sweep must still say it in one line
        raise StrategyError(f"PAR_BENCH_PLUGINS: plugin {name!r} ({_plugin_file(name)}) failed at import: "
                            f"{type(error).__name__}: {' '.join(str(error).split())}") from None


def _plugin_file(name: str) -> str:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return "file not found"
    return str(spec.origin) if spec and spec.origin else "file not found"


def names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get(name: str) -> StrategyEntry:
    _load_builtin()
    if name not in _REGISTRY:
        raise StrategyError(f"unknown strategy {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_config(name: str, params: dict | None = None):
    """Strategy parameters (from JSON) -> the strategy's frozen config dataclass; unknown keys are rejected. A plugin
    whose config is a plain dataclass gets the same generic check of its fields' types and rules."""
    entry = get(name)
    params = dict(params or {})
    known = {f.name for f in dataclasses.fields(entry.config)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise StrategyError(f"strategy {name!r}: unknown parameter(s) {unknown}; known: {sorted(known)}")
    try:
        cfg = entry.config(**params)
        if not isinstance(cfg, StrategyOptions):
            options.validate_fields(cfg, error=StrategyError)
        return cfg
    except (TypeError, ValueError) as error:
        raise StrategyError(f"strategy {name!r}: {error}") from error


def describe(name: str, params: dict | None = None) -> list[options.FieldDoc]:
    """Every parameter of a strategy: type, default (``params`` replace defaults, as a variant does), help, rules."""
    return options.describe(get(name).config, params)


def config_to_json(cfg) -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


def apply_strategy(model: nn.Module, name: str, params: dict | None = None, *, train_head: bool = True
                   ) -> nn.Module:
    """Freeze everything, let the strategy enable its own parameters, then set the shared head by one flag."""
    cfg = build_config(name, params)
    model.requires_grad_(False)
    model = get(name).apply(model, cfg)
    for module in model.head_modules():
        module.requires_grad_(train_head)
    return model
