"""Command line of the benchmark (``run_bench.py``): parse, build the sweep, run it, print and write reports."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from tabulate import tabulate

from bench.boundary import ensure_writable_folder, entry_point, raise_if_interrupted
from bench.config import PRECISIONS, ConfigError, field_at, field_table, merge, parse_setting
from bench.measure import cuda_memory, trackers
from bench.measure.environment import source_digest
from bench.reporting import gate, report
from bench.runner import experiments, launch, tuning
from bench.runner.lifeline import FolderLock
from bench.runner.placement import device_label
from bench.runner.sweep import run_sweep
from strategies import options, registry

DESCRIPTION = """Benchmark fine-tuning strategies of CLIP for video pedestrian attribute recognition (VTF pipeline).
Every strategy is trained and evaluated by the same loop and profiled the same way; one JSON per run is written
to --out, and a results table is printed at the end. Without arguments: the embedded default (synthetic MARS-schema
videos, the small par-vit-tiny CLIP), offline, on CPU."""


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _precisions(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names or any(n not in PRECISIONS for n in names):
        raise argparse.ArgumentTypeError(f"expected {', '.join(PRECISIONS)} or a comma-separated list of them "
                                         f"(with --plan), got {text!r}")
    return names


def _tune_axis(text: str) -> tuning.Axis:
    try:
        return tuning.parse_axis(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


ABLATIONS = {  # --ablate name -> config override (bench/config.py documents each field)
    "visual-attention": {"model": {"visual_attention": False}},
    "one-frame": {"data": {"frame_ablation": "one"}},
    "shuffle-frames": {"data": {"frame_ablation": "shuffle"}},
}


def _ablations(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown or {"one-frame", "shuffle-frames"} <= set(names):
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(ABLATIONS)} (one-frame and shuffle-frames "
                                         f"exclude each other), got {text!r}")
    return names


# Flags that set one run-config field each: their help text and choices are the field's own declaration
# (bench/config.py), so each stands once; ``--set SECTION.FIELD=VALUE`` reaches every other field.
FIELD_FLAGS = {
    "--dataset": "data.dataset",
    "--data-root": "data.data_root",
    "--backbone": "model.backbone",
    "--pretrained": "model.pretrained",
    "--temporal": "model.temporal",
    "--epochs": "train.epochs",
    "--device": "train.device",
    "--protocol": "train.protocol",
    "--half-frozen-backbone": "train.half_frozen_backbone",
}
CLI_HIDDEN_CHOICES = {"train.protocol": ("val-only",)}  # a --tune grid's internal protocol, not a user's choice


def _field_help(path: str) -> str:
    f = field_at(path)
    rules = options.rules_text({k: v for k, v in f.metadata.items() if k != "choices"})
    return f"{f.metadata.get('help', '')} ({path}{'; ' + rules if rules else ''})"


def _field_choices(path: str) -> list | None:
    choices = field_at(path).metadata.get("choices")
    hidden = CLI_HIDDEN_CHOICES.get(path, ())
    return None if choices is None else [c for c in options.resolve_choices(choices) if c not in hidden]


def add_field_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run-config fields (bench/config.py; python run_bench.py --list-fields)")
    for flag, path in FIELD_FLAGS.items():
        f = field_at(path)
        if f.type == "bool":
            group.add_argument(flag, action="store_true", default=None, help=_field_help(path))
            continue
        kind = int if f.type == "int" else None
        group.add_argument(flag, type=kind, choices=_field_choices(path), help=_field_help(path))
    group.add_argument("--set", dest="settings", action="append", type=_setting, default=[],
                       metavar="SECTION.FIELD=VALUE",
                       help="set any run-config field, e.g. --set train.lr=3e-4 --set data.augment=frame (repeat "
                            "for more); the value is read as JSON where it parses (numbers, true / false, null, "
                            "lists), else as text; applied after the preset and the flags above, and checked as "
                            "every config is")
    group.add_argument("--list-fields", action="store_true",
                       help="print every run-config field --set can reach, with its type, default, rules and help")


def _setting(text: str) -> dict:
    try:
        return parse_setting(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def list_fields() -> str:
    """``--list-fields``: every field of every run-config section, as ``--set`` names it."""
    return tabulate(field_table(), headers=["field", "type", "default", "meaning"], tablefmt="plain")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (``error: argument --set: ...``) and exit 2, as every other bad
    input of the benchmark, instead of the whole usage block; ``--help`` still prints it."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="run_bench.py", description=DESCRIPTION,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategies", default="all", help="comma-separated strategy names, or 'all' (default)")
    p.add_argument("--list-strategies", action="store_true",
                   help="print every strategy with a description; with --backbone, also its trainable / total "
                   "parameter counts, computed by building each model (random weights) at the settings of "
                   "--preset, which defaults to 'paper' here (VTFPAR++: fusion width 240, side width 240)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="with --list-strategies: also every strategy's parameters, each with its type, default (a "
                   "variant's own value where it sets one) and help text")
    p.add_argument("--preset", help=f"experiment preset: default (if omitted), {', '.join(experiments.preset_names())}"
                                    ", or a path to a preset .json file")
    p.add_argument("--frames", type=_ints, help="frames per clip; a list sweeps them, e.g. 1,2,4,6,8")
    p.add_argument("--batch-size", type=_ints, help="batch size; a list sweeps it, e.g. 4,8,16")
    p.add_argument("--seed", "--seeds", dest="seeds", type=_ints, help="training seed(s), e.g. 0,1,2")
    p.add_argument("--precision", type=_precisions,
                   help="training / evaluation precision: fp32 (default), bf16 or fp16 autocast (fp16 with a "
                        "gradient scaler); parameters and optimizer state stay fp32. With --plan a list plans each, "
                        "e.g. fp32,bf16")
    p.add_argument("--ablate", type=_ablations, default=(),
                   help="sensitivity ablations, comma-separated: visual-attention (every visual block's attention "
                        "branch computed and discarded), one-frame (the first sampled frame shown T times), "
                        "shuffle-frames (frames in a random order); runs are labelled by them in reports. "
                        "python -m bench.tools.sensitivity runs them all")
    p.add_argument("--tune", type=_tune_axis, action="append", metavar="KEY=V1,V2,...",
                   help=f"tune a training hyperparameter per strategy ({', '.join(registry.HYPERPARAMETERS)}) over "
                        "a grid, e.g. --tune lr=3e-4,1e-3,3e-3 (repeat for a product grid): every grid point runs "
                        "on the validation split only (the test split is never built), the best mean validation "
                        "score over the seeds is chosen, and the sweep's runs train with it. Grid runs and "
                        "tuning.json (choice, scores, the grid's cost) go to --out/tuning/")
    p.add_argument("--profile-only", action="store_true",
                   help="measure a few training steps per run (memory, time, FLOPs) without training to convergence")
    p.add_argument("--plan", action="store_true",
                   help="predict each selected run's cost without training: FLOPs (the measured runs' counter) and "
                        "peak memory by category and module of one training step traced on fake tensors; prints a "
                        "table and writes --out/plan/plan.json (bench/runner/planning.py)")
    p.add_argument("--gpu-memory", type=_gpus, metavar="GIB_OR_GPU",
                   help="with --plan: per GPU (capacities in GiB such as 24,40,80,141, or names: "
                        f"{', '.join(cuda_memory.GPUS)}) the predicted CUDA memory_reserved peak, the largest batch "
                        "that fits and, for a named GPU, a compute-bound step time (predictions; "
                        "docs/precision-and-cost.md)")
    p.add_argument("--out", type=Path, help="output folder for result JSONs (default: runs/<preset>)")
    p.add_argument("--no-resume", action="store_true", help="re-run runs that already finished in --out")
    p.add_argument("--replace-other-settings", action="store_true",
                   help="a finished result in --out of another setting (another precision, epochs, weights, ...) "
                        "under a run's name refuses the sweep; with this flag it is moved into --out/set-aside/ "
                        "(kept byte for byte) and the run takes its place")
    p.add_argument("--wait-lock", action="store_true",
                   help="if another sweep is writing into --out, wait for it to end instead of refusing")
    p.add_argument("--check", type=Path, metavar="BASELINE",
                   help="regression gate: compare this sweep with a baseline JSON (e.g. results/baselines/gate.json); "
                        "exits 1 if any strategy got less accurate beyond the measured seed noise, stopped "
                        "clearing the majority class, its own parameters stopped mattering, it got hungrier for "
                        "memory, or changed its parameters / FLOPs; exits 2 at once if the baseline is missing, "
                        "malformed or of another preset / setting")
    p.add_argument("--update-baseline", action="store_true",
                   help="write this sweep as the new baseline (to --check's path, default "
                        "results/baselines/<preset>.json) instead of checking; needs >= 2 seeds, whose spread sets "
                        "the tolerances (e.g. --preset gate --seeds 0,1,2 --update-baseline)")
    p.add_argument("--track", type=trackers.names_argument, default=(), metavar="TRACKERS",
                   help="also mirror every finished run to tensorboard, mlflow and/or wandb (comma-separated), "
                        "offline, under --out: tensorboard/<run_id>/, mlruns/, wandb/; the JSONs stay the results. "
                        'Needs pip install -e ".[trackers]"; python -m bench.reporting.trackers mirrors an existing '
                        "folder")
    add_field_flags(p)
    launch.add_arguments(p)
    return p


def overrides(args: argparse.Namespace) -> dict:
    """The command line's changes to the preset: the field flags, --precision, --profile-only, the ablations, the
    launcher's settings, then every --set (the last word)."""
    plain: dict = {}
    for flag, path in FIELD_FLAGS.items():
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None:
            section, _, name = path.partition(".")
            plain = merge(plain, {section: {name: value}})
    if args.precision:
        plain = merge(plain, {"train": {"precision": args.precision[0]}})
    if args.profile_only:
        plain = merge(plain, {"profile": {"only": True}})
    for name in args.ablate:
        plain = merge(plain, ABLATIONS[name])
    plain = merge(plain, launch.config_overrides(args))
    for setting in args.settings:
        plain = merge(plain, setting)
    return plain


def list_strategies(base: dict | None = None) -> str:
    """One line per strategy; with ``base`` (a config), also its parameter counts, built and counted, not typed."""
    catalog = experiments.strategy_catalog()
    if base is None:
        return "\n".join(f"{name:<16} {entry['description']}" for name, entry in catalog.items())
    from bench.runner.experiments import parameter_counts

    rows = []
    for name, counts in parameter_counts(base, list(catalog)):
        share = 100.0 * counts["params_trainable"] / counts["params_total"]
        rows.append([name, counts["params_trainable"], counts["params_total"], f"{share:.2f}",
                     catalog[name]["description"]])
    headers = ["strategy", "trainable params", "total params", "trainable %", "description"]
    return tabulate(rows, headers=headers, tablefmt="github", intfmt=",")


def strategy_parameters(name: str, entry: dict) -> list[str]:
    """The lines of one strategy under ``--verbose``: each parameter's name, type, default and help (with its
    declared bounds or choices); a variant shows its family and its own values as the defaults."""
    fields = registry.describe(entry["family"], entry["params"])
    lines = [f"    (variant of {entry['family']})"] if entry["family"] != name else []
    lines.append(f"    training defaults: {hyperparameter_line(entry['family'])}")
    if not fields:
        return [*lines, "    (no parameters)"]
    name_width = max(len(f.name) for f in fields)
    spec_width = max(len(f"{f.type} = {f.default}") for f in fields)
    for f in fields:
        text = f.help + (f" ({f.rules})" if f.rules else "")
        lines.append(f"    {f.name:<{name_width}}  {f'{f.type} = {f.default}':<{spec_width}}  {text}")
    return lines


def hyperparameter_line(family: str) -> str:
    """A strategy's own ``train`` defaults and their source, e.g. ``lr 0.001, backbone_lr_scale 0.01 (...)``."""
    hyper = registry.get(family).hyper
    values = ", ".join(f"{key} {value:g}" for key, value in hyper.values.items()) or "the loop's"
    return f"{values} ({hyper.source})"


def list_parameters() -> str:
    """``--list-strategies --verbose``: every strategy with its description and its parameters."""
    lines = []
    for name, entry in experiments.strategy_catalog().items():
        lines += [f"{name:<16} {entry['description']}", *strategy_parameters(name, entry)]
    return "\n".join(lines)


def print_strategies(args: argparse.Namespace) -> int:
    """--list-strategies: descriptions (with --verbose, every strategy's parameters); with --backbone, parameter
    counts at the paper's settings unless --preset says otherwise. Counting needs no weights, so models are built from
    random initialisation (offline)."""
    if not args.backbone:
        print(list_parameters() if args.verbose else list_strategies())
        return 0
    preset = args.preset or "paper"
    base = merge(experiments.load_preset(preset), overrides(args))
    base = merge(base, {"model": {"pretrained": None}})
    print(f"parameter counts of --backbone {args.backbone} at preset {preset!r} "
          f"(fusion width {base['model']['fusion_width']}, {base['data']['frames']} frames):")
    print(list_strategies(base))
    if args.verbose:
        print(f"\nparameters of every strategy:\n{list_parameters()}")
    return 0


PATH_OPTIONS = {"out": "--out", "check": "--check", "slurm_config": "--slurm-config", "data_root": "--data-root"}
PATH_VARIABLES = ("PAR_BENCH_CACHE_DIR", "PAR_BENCH_TRACEBACK_DIR", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE",
                  "TORCH_HOME")  # environment variables naming folders, ours and our libraries'
NOT_PATHS = ("none", "off")  # words these options and variables take instead of a path


def absolute(path: str | os.PathLike) -> str:
    """``path`` against the caller's folder (``~`` expanded); symbolic links kept as the user wrote them."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def resolve_paths(args: argparse.Namespace, environ=os.environ) -> None:
    """Every path the caller gave, made absolute once against the caller's folder before anything runs, so workers
    (whatever their working directory, on whichever node) and records name the same files. ``--pretrained`` is a
    path only where that file or folder exists here; otherwise it is an open_clip tag or a file the project ships
    (models/backbone.py). The out folder's default, ``runs/<preset>``, is also the caller's. Preset files resolve
    their own relative paths against themselves (``bench.runner.experiments``)."""
    args.out = args.out or Path("runs") / Path(args.preset or "default").stem
    for name in PATH_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            setattr(args, name, type(value)(absolute(value)))
    pretrained = args.pretrained
    if pretrained and pretrained.lower() not in NOT_PATHS and os.path.exists(os.path.expanduser(pretrained)):
        args.pretrained = absolute(pretrained)
    for name in PATH_VARIABLES:
        value = environ.get(name)
        if value and value.lower() not in NOT_PATHS:
            environ[name] = absolute(value)
    check_names(args)


def check_names(args: argparse.Namespace) -> None:
    """A path whose name is not UTF-8 (bytes the file system takes, but no text can hold) is refused before any work:
    the records, the report and every message name it."""
    named = {flag: getattr(args, name) for name, flag in PATH_OPTIONS.items()}
    named |= {"--pretrained": args.pretrained, "--preset": args.preset}
    for flag, value in named.items():
        if value is not None and not _is_utf8(str(value)):
            shown = os.fsencode(str(value)).decode("utf-8", "backslashreplace")
            raise ConfigError(f"{flag} {shown}: the name is not valid UTF-8, which the records and the report must "
                              "hold; rename it or choose another path")


def _gpus(text: str) -> list:
    try:
        return cuda_memory.parse_gpus(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--gpu-memory: ")) from None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    if args.list_fields:
        print(list_fields())
        return 0
    if args.list_strategies:
        return print_strategies(args)
    resolve_paths(args)
    trackers.require_installed(args.track)
    args.preset = args.preset or "default"
    base = merge(experiments.load_preset(args.preset), overrides(args))
    specs = sweep_specs(args, base)
    if args.gpu_memory and not args.plan:
        raise ConfigError("--gpu-memory: only with --plan (a sweep measures the memory of the machine it runs on)")
    if args.plan:
        return plan(args, base, specs)
    if args.precision and len(args.precision) > 1:
        raise ConfigError(f"--precision {','.join(args.precision)}: a list is for --plan; a sweep trains in one "
                          "precision per --out folder (run one sweep per precision)")
    if args.tune and (args.check or args.update_baseline):
        raise ConfigError("--tune: not with --check / --update-baseline (the gate holds runs at the preset's "
                          "settings; tune in a sweep of its own)")
    experiments.preflight(specs)
    baseline = preflight_gate(args, specs)
    warn_protocol(specs)
    grid = tuning.grid_runs(specs, tuning.grid_points(args.tune)) if args.tune else []
    out = ensure_writable_folder(args.out)  # before any work
    launch.resolve_jobs(args, cpu_runs=all(device_label(spec.config.train.device) == "cpu" for spec in specs))
    with FolderLock(out, wait=args.wait_lock), tracking(args.track, out):
        launcher = launch.make_launcher(args)
        raise_if_interrupted()  # a Ctrl-C some library swallowed during the imports and checks above starts nothing
        if grid:
            specs = tune(args, specs, grid, out, launcher)
            if specs is None:
                print("when the grid's jobs have finished, run the same command again to choose and train")
                return 0
        records = run_sweep(specs, out, resume=not args.no_resume, retry_failed=args.retry_failed,
                            launcher=launcher, source_sha256=fresh_code(args),
                            replace_other_settings=args.replace_other_settings)
        if records is None:
            print(f"when the jobs have finished: python -m bench.reporting.report {out}")
            return 0
        frame = report.to_frame(records)
        print(report.summary_table(frame))
        written = report.write_reports(out)
        print(f"results: {out}/  report: {written[0].parent}/ ({len(written)} files; start at "
              f"{written[0].parent / 'README.md'} or index.html)")
        if args.update_baseline or args.check:
            return gate_step(records, args, baseline)
    return 0 if (frame["status"] == "ok").all() else 1


def warn_protocol(specs) -> None:
    """test-select is the released code's practice, never a sound default: say so before any run."""
    chosen = sum(spec.config.train.protocol == "test-select" for spec in specs)
    if chosen:
        print(f"WARNING: protocol test-select ({chosen} run(s)): the test split chooses each checkpoint, as "
              "the released VTF / VTFPAR++ code does; those test scores are optimistic and not comparable with "
              "protocol val", file=sys.stderr)


def tune(args: argparse.Namespace, specs: list, grid: list, out: Path, launcher) -> list | None:
    """--tune: the grid's validation-only runs into OUT/tuning/, each strategy's choice, then the sweep's runs
    with it (None: the grid's jobs were only submitted)."""
    records = run_sweep([run.spec for run in grid], out / tuning.TUNING_FOLDER, resume=not args.no_resume,
                        retry_failed=args.retry_failed, launcher=launcher,
                        replace_other_settings=args.replace_other_settings)
    if records is None:
        return None
    chosen = tuning.choose(grid, records)
    path = tuning.write_summary(out, tuning.summary(specs, grid, records, chosen, args.tune))
    for strategy, entry in chosen.items():
        values = ", ".join(f"{key} {value:g}" for key, value in entry["chosen"].items())
        print(f"tuning: {strategy}: {values} (best mean validation {specs[0].config.train.select_metric})")
    print(f"tuning: {path}")
    return tuning.tuned_specs(specs, chosen)


@contextlib.contextmanager
def tracking(names: tuple[str, ...], out: Path):
    """--track: the sweep's workers learn the trackers and the folder from the environment they inherit (local
    workers, --jobs, torchrun, Slurm jobs, a Ray cluster the sweep starts), never from the run's config, whose
    digest is the run's identity for resume and the gate. Without --track the variables are removed, so only the
    flag decides; the caller's environment is restored afterwards."""
    variables = {trackers.TRACK_ENV: ",".join(names), trackers.TRACK_DIR_ENV: str(out)} if names else {}
    saved = {name: os.environ.get(name) for name in (trackers.TRACK_ENV, trackers.TRACK_DIR_ENV)}
    for name in saved:
        os.environ.pop(name, None)
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def sweep_specs(args: argparse.Namespace, base: dict) -> list:
    """The runs the sweep's axes select from the merged config ``base``."""
    return experiments.expand(base, strategies=experiments.resolve_strategies(args.strategies),
                              seeds=args.seeds or [base["train"]["seed"]],
                              frames=args.frames or [base["data"]["frames"]],
                              batch_sizes=args.batch_size or [base["train"]["batch_size"]])


def plan(args: argparse.Namespace, base: dict, specs: list) -> int:
    """--plan: the selected runs, in every --precision listed, planned without training (bench/runner/planning.py)."""
    from bench.reporting import plan_figure
    from bench.runner.planning import PLAN_FOLDER, plan_command

    for other in (args.precision or ())[1:]:
        specs = specs + sweep_specs(args, merge(base, {"train": {"precision": other}}))
    experiments.preflight(specs)
    out = ensure_writable_folder(args.out)
    code = plan_command(specs, out=out, preset=args.preset, gpus=args.gpu_memory or [])
    figure = plan_figure.write_plan_figure(out / PLAN_FOLDER / "plan.json")
    if figure is not None:
        print(f"figure: {figure}")
    return code


def fresh_code(args: argparse.Namespace) -> str | None:
    """Under --check, the digest of this checkout's source files: a result made by other code is no evidence about
    this code, so the gate resumes only records made by this one (others are set aside and run again)."""
    return source_digest() if args.check else None


def baseline_path(args: argparse.Namespace) -> Path:
    return args.check or Path(absolute(Path("results") / "baselines" / f"{args.preset}.json"))


def preflight_gate(args: argparse.Namespace, specs) -> dict | None:
    """Before any run: --check reads and validates the baseline and its preset / setting; --update-baseline needs
    several seeds. Problems raise ``gate.BaselineError`` (one line, exit 2)."""
    if args.update_baseline:
        if len({spec.config.train.seed for spec in specs}) < 2:
            raise gate.BaselineError("--update-baseline needs at least 2 seeds to measure the noise "
                                     "(e.g. --seeds 0,1,2)")
        return None
    if not args.check:
        return None
    baseline = gate.read_baseline(args.check)
    gate.check_sweep(baseline, preset=args.preset, configs=[spec.config.to_dict() for spec in specs], path=args.check)
    return baseline


def gate_step(records: list[dict], args: argparse.Namespace, baseline: dict | None) -> int:
    """--update-baseline writes the sweep as the baseline; --check compares with it and fails on regressions."""
    path = baseline_path(args)
    if args.update_baseline:
        gate.write_baseline(path, gate.make_baseline(records, preset=args.preset))
        print(f"baseline written: {path}")
        return 0
    verdicts = gate.compare(records, baseline)
    print(gate.verdict_table(verdicts))
    identical, comparable = gate.identical_to_baseline_seeds(records, baseline)
    print(f"gate: {identical} of {comparable} run(s) repeat the baseline's accuracy of the same seed exactly "
          "(expected on the same CPU model and software; otherwise within the tolerances)")
    failures = gate.failure_lines(verdicts)
    for line in failures:
        print(f"GATE FAILURE {line}", file=sys.stderr)
    print(f"gate: {'FAILED' if failures else 'passed'} against {path} ({len(failures)} failure(s))")
    if failures:
        seeds = ",".join(map(str, baseline["seeds"]))
        print(f"gate: a change that alters the numerics on purpose is re-baselined in the same commit: python "
              f"run_bench.py --preset {args.preset or 'default'} --seeds {seeds} --update-baseline --check {path}")
    return 1 if failures else 0


@entry_point("run_bench")
def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 all runs ok, 1 some run failed (or a regression), 2 bad input, 130 interrupted."""
    return run(build_parser().parse_args(argv))
