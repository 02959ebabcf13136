"""The regression gate: compare a sweep with a committed baseline and fail on a regression or on a broken model.

The baseline is recorded from several seeds of one preset (``--seeds 0,1,2 --update-baseline``), so every
tolerance is measured, not guessed: the seed-to-seed standard deviation of each metric, pooled over strategies
(each strategy's sample variance, ddof = 1, averaged), times ``K_STD`` and ``sqrt(1 + 1/n)`` (a new run against the
mean of n seeds), never below a floor. Checks, per strategy and run:

* accuracy (macro-F1, paper-F1, mA): may not fall below the baseline mean by more than its tolerance;
* learned: test macro-F1 minus the same run's majority-class macro-F1 must reach ``LEARNED_FRACTION`` of the
  baseline's learned margin. This needs no baseline accuracy to be right: misaligned labels, a frozen head, a loop
  that does not train all put a model at the majority level, far below half its margin. A baseline is refused
  unless every strategy's required margin lies outside the seed noise on both sides (``check_learnable``);
* better than chance: test macro-F1 minus the macro-F1 of the run's own test predictions paired with permuted clips
  (bench/measure/statistics.py ``permutation_chance``) must exceed ``K_STD`` standard deviations of that permutation
  distribution: a permutation test of the run itself, needing nothing from the baseline. The majority class is a weak
  floor for macro-F1 (predicting minority classes at random scores about 5 points above it on the embedded default); the
  permutation level is the chance level of this very model's outputs, so predictions unrelated to the clip (misaligned
  labels) sit at 0 here;
* own parameters: the own-parameter probe (bench/measure/predictions.py: test predictions with the strategy's own
  parameters back at their initial values) must move the predictions by at least ``LEARNED_FRACTION`` of the
  baseline's mean. It is exactly 0 if a strategy's parameters never step or are not used by the forward pass;
* gain over ``frozen`` (macro-F1 minus frozen's in the same sweep and seed): checked only where the baseline shows a
  gain beyond its tolerance; it may not fall by more than that tolerance;
* test against train (``train_vs_test``): test macro-F1 minus the same run's macro-F1 on a fixed subset of its
  training clips, evaluated like the test split (bench/measure/generalisation.py). A model does not score better on
  clips it never saw than on clips it trained on, so a gap above the noise is SUSPICIOUS: test data leaking into
  training, or evaluation on the wrong split. The bound is measured: where the baseline holds the figure, the larger
  of its mean gap and 0 plus its seed tolerance (as for accuracy); for a baseline recorded before the figure existed,
  ``K_STD`` times the bootstrap standard deviation of the run's own difference (clips of both splits resampled);
  never below the accuracy floor. A baseline on which some run already shows such a gap is refused;
* peak memory: may not rise by more than a relative tolerance (measured seed spread, floor 5 %);
* parameter counts and FLOPs: exact, unless the strategy's configuration changed (reported, not failed).

Which comparisons are exact: parameters and FLOPs always (they depend on the configuration only). Accuracy is
deterministic on CPU for the same seed, software and CPU model: a run repeating one of the baseline's seeds is
reported as identical or not (information, not a verdict, since another CPU or library build changes the numerics
within the noise). Peak memory (live tensors under the CPU profiler) repeats on the same software.

The baseline records its preset and setting (the resolved configuration minus strategy and seed); a sweep with a
different preset or setting is refused before it starts, as is a missing or malformed baseline.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tabulate import tabulate

from bench.errors import BenchError
from bench.measure.environment import CODE_COVERS, environment, git_state
from bench.measure.generalisation import record_gap
from bench.measure.statistics import record_chance
from bench.records import (
    first_difference,
    record_source,
    setting_of,
    strategy_hyperparameters,
    sweep_setting,
    write_json_atomic,
)
from bench.records import row as record_row

BASELINE_VERSION = 2
ACCURACY = ("macro_f1", "paper_f1", "mA")
LEARNED, CHANCE, OWN_EFFECT, GAIN = "learned_margin", "chance_margin", "own_params_effect", "gain_over_frozen"
TRAIN_TEST = "train_vs_test"  # test macro-F1 minus the training subset's: > 0 means test beats train
MEMORY = ("peak_mem_bytes",)
EXACT = ("params_trainable", "params_total", "fwd_flops_per_clip", "train_step_flops")
K_STD = 3.0
LEARNED_FRACTION = 0.5
# The own-parameter effect is exactly 0 when a strategy's own parameters never step or are ignored, so the required
# effect never drops below a tenth of the baseline's mean, even where few seeds give a wide spread.
OWN_EFFECT_FLOOR = 0.1
FLOORS = {"accuracy_abs": 0.005, "memory_rel": 0.05}
# Same-seed tier: a run repeating a baseline seed in the baseline's numeric environment is held to that seed's value,
# in both directions, within SAME_SEED_TOLERANCE (a fraction; 0.001 = 0.1 points), not within the seed noise. Harmless
# changes of the numerics (another thread count, pool vs serial, a refactor that reorders float sums) must stay
# inside it: docs/gate-and-statistics.md, "Regression gate", gives the measurement.
SAME_SEED_TOLERANCE = 0.001
ENVIRONMENT_KEYS = ("torch", "cpu", "cpu_id", "python", "numpy")  # what makes the same seed give the same numbers
REQUIRED_KEYS = ("preset", "setting", "seeds", "noise", "tolerances", "strategies")
STRATEGY_KEYS = ("signature", *ACCURACY, LEARNED, "required_learned_margin", *MEMORY, *EXACT)


class BaselineError(BenchError, ValueError):
    """The baseline file is missing, malformed, or does not belong to this sweep."""


@dataclass(frozen=True)
class Verdict:
    strategy: str
    metric: str
    baseline: float | None
    now: float | None
    verdict: str  # ok / REGRESSION / SUSPICIOUS / CHANGED / NOT LEARNED / changed-config / MISSING / n/a
    seed: int | None = None
    limit: float | None = None  # the bound the value was held to (lower for accuracy, upper for memory)

    @property
    def failed(self) -> bool:
        return self.verdict in ("REGRESSION", "SUSPICIOUS", "CHANGED", "NOT LEARNED", "MISSING")


def strategy_signature(record: dict) -> str:
    """What may legitimately change parameter counts and FLOPs: the strategy, model, frames and batch size."""
    cfg = record["run"]["config"]
    key = {"strategy": cfg["strategy"], "model": cfg["model"], "frames": cfg["data"]["frames"],
           "batch_size": cfg["train"]["batch_size"]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def summarise(record: dict, frozen_macro_f1: float | None = None) -> dict:
    """The gate's figures of one run (read through ``records.row``); ``frozen_macro_f1``: that of ``frozen`` in
    the same sweep and seed."""
    flat = record_row(record)
    entry = {key: flat[key] for key in ACCURACY}
    macro, floor = flat["macro_f1"], flat["majority_macro_f1"]
    entry[LEARNED] = macro - floor if macro is not None and floor is not None else None
    chance = record_chance(record) if macro is not None else None
    entry[CHANCE] = macro - chance["macro_f1"] if chance else None
    entry["required_chance_margin"] = max(K_STD * chance["macro_f1_std"], FLOORS["accuracy_abs"]) if chance else None
    entry[OWN_EFFECT] = flat["own_params_effect"]
    entry[GAIN] = macro - frozen_macro_f1 if macro is not None and frozen_macro_f1 is not None else None
    gap = record_gap(record)
    entry[TRAIN_TEST] = gap["gap"] if gap else None
    entry["train_vs_test_noise"] = gap["gap_std"] if gap else None  # bootstrap std of that difference
    entry.update({key: flat[key] for key in (*MEMORY, *EXACT, "peak_mem_kind")})
    entry["signature"] = strategy_signature(record)
    entry["environment"] = numeric_environment(record)
    entry["hyperparameters"] = strategy_hyperparameters(record["run"]["config"])
    return entry


def numeric_environment(record: dict) -> dict:
    """What decides a seed's numbers besides the code: library versions, CPU model and generation, precision (not
    the thread count: ``SAME_SEED_TOLERANCE`` covers it, measured)."""
    env = record.get("environment") or {}
    return {**{key: env.get(key) for key in ENVIRONMENT_KEYS}, "gpu": env.get("gpu"),
            "precision": setting_of(record)["precision"]}


def _frozen_by_seed(flats: list[dict]) -> dict[int, float]:
    return {f["seed"]: f["macro_f1"] for f in flats
            if f["strategy"] == "frozen" and f["status"] == "ok" and f["macro_f1"] is not None}


def summaries(records: list[dict]) -> list[tuple[str, int, dict]]:
    """(strategy, seed, summary) of every successful run."""
    flats = [record_row(r) for r in records]
    frozen = _frozen_by_seed(flats)
    rows = []
    for r, flat in zip(records, flats, strict=True):
        if flat["status"] == "ok":
            frozen_f1 = frozen.get(flat["seed"]) if flat["strategy"] != "frozen" else None
            rows.append((flat["strategy"], flat["seed"], summarise(r, frozen_f1)))
    return rows


# ---- recording a baseline -------------------------------------------------------------------------------------

def _values(rows, strategy: str, metric: str) -> list[float]:
    return [s[metric] for name, _, s in rows if name == strategy and s[metric] is not None]


def pooled_std(rows, metric: str) -> float:
    """sqrt of the mean over strategies of each strategy's seed variance (ddof = 1)."""
    variances = [np.var(v, ddof=1) for v in (_values(rows, name, metric) for name in {n for n, _, _ in rows})
                 if len(v) >= 2]
    return float(math.sqrt(np.mean(variances))) if variances else 0.0


def _tolerances(rows, n_seeds: int) -> tuple[dict, dict]:
    widen = K_STD * math.sqrt(1 + 1 / n_seeds)
    noise = {metric: pooled_std(rows, metric) for metric in (*ACCURACY, LEARNED, CHANCE, GAIN, TRAIN_TEST)}
    mem_rel = [np.std(v, ddof=1) / np.mean(v) for v in
               (_values(rows, name, "peak_mem_bytes") for name in {n for n, _, _ in rows}) if len(v) >= 2]
    noise["peak_mem_rel"] = float(math.sqrt(np.mean(np.square(mem_rel)))) if mem_rel else 0.0
    tolerances = {metric: max(widen * noise[metric], FLOORS["accuracy_abs"])
                  for metric in (*ACCURACY, LEARNED, CHANCE, GAIN, TRAIN_TEST)}
    tolerances["peak_mem_rel"] = max(widen * noise["peak_mem_rel"], FLOORS["memory_rel"])
    tolerances.update({"k_std": K_STD, "widening": round(widen, 4), "learned_fraction": LEARNED_FRACTION,
                       "floors": FLOORS})
    if not any(summary[TRAIN_TEST] is not None for _, _, summary in rows):  # records older than the figure
        noise[TRAIN_TEST] = tolerances[TRAIN_TEST] = None
    return noise, tolerances


def _strategy_entry(rows, name: str, tolerances: dict, n_seeds: int) -> dict:
    mine = [(seed, s) for n, seed, s in rows if n == name]
    first = mine[0][1]
    entry = {"signature": first["signature"], "peak_mem_kind": first["peak_mem_kind"], "runs": len(mine),
             "hyperparameters": first["hyperparameters"]}
    for metric in (*ACCURACY, LEARNED, CHANCE, OWN_EFFECT, GAIN, TRAIN_TEST, *MEMORY):
        values = _values(rows, name, metric)
        entry[metric] = float(np.mean(values)) if values else None
        entry[f"{metric}_std"] = float(np.std(values, ddof=1)) if len(values) >= 2 else None
    entry["required_learned_margin"] = LEARNED_FRACTION * entry[LEARNED]
    if entry[OWN_EFFECT] is not None:
        spread = K_STD * math.sqrt(1 + 1 / n_seeds) * (entry[f"{OWN_EFFECT}_std"] or 0.0)
        entry["required_own_params_effect"] = max(min(LEARNED_FRACTION * entry[OWN_EFFECT], entry[OWN_EFFECT] - spread),
                                                  OWN_EFFECT_FLOOR * entry[OWN_EFFECT])
    entry["gain_significant"] = entry[GAIN] is not None and entry[GAIN] > tolerances[GAIN]
    entry.update({key: first[key] for key in EXACT})
    kept = (*ACCURACY, LEARNED, CHANCE, "required_chance_margin", OWN_EFFECT, TRAIN_TEST, "train_vs_test_noise",
            "environment")
    entry["per_seed"] = {str(seed): {k: s[k] for k in kept} for seed, s in mine}
    return entry


def check_learnable(strategies: dict, tolerances: dict) -> None:
    """Refuse a baseline on which some strategy does not learn clearly beyond the seed noise."""
    for name, entry in strategies.items():
        needed = tolerances[LEARNED] / min(LEARNED_FRACTION, 1 - LEARNED_FRACTION)
        if entry[LEARNED] < needed:
            raise BaselineError(
                f"strategy {name!r} does not learn clearly on this preset: learned margin {entry[LEARNED]:.4f} over "
                f"the majority class, needed >= {needed:.4f} (the noise tolerance {tolerances[LEARNED]:.4f} on both "
                "sides of the required margin); choose a preset that trains longer or on more data")
        for seed, figures in entry["per_seed"].items():
            if figures.get(CHANCE) is not None and figures[CHANCE] < figures["required_chance_margin"]:
                needed = figures["required_chance_margin"]
                raise BaselineError(f"strategy {name!r} seed {seed}: test macro-F1 only {figures[CHANCE]:.4f} above "
                                    f"its own predictions on permuted clips (needed {needed:.4f})")
        if entry.get(OWN_EFFECT) is not None and entry[OWN_EFFECT] <= 0:
            raise BaselineError(f"strategy {name!r}: its own parameters do not change the test predictions "
                                f"(effect {entry[OWN_EFFECT]:.3g}): they never step or the forward pass ignores them")
        _check_no_leak(name, entry)


def _check_no_leak(name: str, entry: dict) -> None:
    """A baseline whose own runs score better on test than on training clips beyond their noise would make such a
    gap the norm: refused."""
    for seed, figures in entry["per_seed"].items():
        limit = own_noise_limit(figures)
        if limit is not None and figures[TRAIN_TEST] is not None and figures[TRAIN_TEST] > limit:
            raise BaselineError(f"strategy {name!r} seed {seed}: test macro-F1 {figures[TRAIN_TEST]:.4f} above that "
                                f"of its training subset (at most {limit:.4f}, k_std times the bootstrap std): test "
                                "data leaking into training or the wrong split evaluated; fix that first")


MEASUREMENT = ("{n} seeds ({seeds}) of preset {preset!r}, {runs} runs (per strategy: `runs`), recorded by `python "
               "run_bench.py --preset {preset} --seeds {seeds} --update-baseline`. noise = seed-to-seed sample std "
               "(ddof = 1) pooled over the {pooled} strategies with >= 2 seeds (root of the mean variance); n = the "
               "fewest seeds behind a strategy's mean; "
               "peak_mem_rel = root mean square of "
               "each strategy's std / mean. tolerance = max(k_std * sqrt(1 + 1/n) * noise, floor). Strategy "
               "figures are seed means; required_learned_margin = learned_fraction * mean margin over the "
               "majority class; chance_margin = test macro-F1 minus that of the run's own predictions on permuted "
               "clips (20 permutations), required per run to exceed k_std * the permutations' std; "
               "required_own_params_effect = min(learned_fraction * mean, mean - k_std * "
               "sqrt(1 + 1/n) * own std). train_vs_test = test macro-F1 minus that of the first min(train, test, "
               "256) training clips evaluated like the test split; a run above max(mean, 0) + its tolerance is "
               "SUSPICIOUS; train_vs_test_noise = bootstrap std of that difference over clips (1000 resamples of "
               "each split), k_std times which bounds the gap where a baseline lacks the figure.")
EXACTNESS = {
    "exact": list(EXACT),
    "deterministic_same_seed_software_cpu": [*ACCURACY, LEARNED, CHANCE, OWN_EFFECT, GAIN, *MEMORY],
    "note": "parameter counts and FLOPs depend only on the configuration and are compared exactly; accuracy and "
            "peak memory repeat bit for bit for the same seed on the same CPU model and software (a gate run of a "
            "seed in per_seed is reported as identical or not), and are compared within measured tolerances "
            "because another CPU or library build moves them within the seed noise",
}


def make_baseline(records: list[dict], *, preset: str) -> dict:
    bad = [r["run"]["id"] for r in records if r["run"]["status"] != "ok"]
    if bad:
        raise BaselineError(f"refusing to write a baseline from failed runs: {', '.join(bad)}")
    seeds = sorted({record_row(r)["seed"] for r in records})
    if len(seeds) < 2:
        raise BaselineError("--update-baseline needs at least 2 seeds to measure the noise (e.g. --seeds 0,1,2)")
    settings = {json.dumps(sweep_setting(r["run"]["config"]), sort_keys=True) for r in records}
    if len(settings) != 1:
        raise BaselineError("refusing to write a baseline from runs of different settings (frames, batch size, ...)")
    rows = summaries(records)
    fewest = min(sum(1 for n, _, _ in rows if n == name) for name in {n for n, _, _ in rows})  # seeds behind a mean
    noise, tolerances = _tolerances(rows, fewest)
    strategies = {name: _strategy_entry(rows, name, tolerances, fewest) for name in sorted({n for n, _, _ in rows})}
    check_learnable(strategies, tolerances)
    commit, dirty = git_state()
    env = environment()
    return {"baseline_version": BASELINE_VERSION, "preset": preset, "setting": json.loads(settings.pop()),
            "seeds": seeds,
            "provenance": {"git_commit": commit, "git_dirty": dirty, "code": code_of(records), "torch": env["torch"],
                           "cpu": env["cpu"], "gpu": env["gpu"],
                           "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            "measurement": MEASUREMENT.format(n=len(seeds), seeds=",".join(map(str, seeds)), preset=preset,
                                              runs=len(rows), pooled=sum(e["runs"] >= 2 for e in strategies.values())),
            "exactness": EXACTNESS, "noise": noise, "tolerances": tolerances, "strategies": strategies}


def code_of(records: list[dict]) -> dict:
    """The source digest of the code every record was made by (None: records older than schema version 3). Runs of
    different code are not one measurement: refused."""
    digests = {record_source(r) for r in records}
    if len(digests) > 1:
        shown = ", ".join(sorted(f"{d[:12]}.." if d else "none" for d in digests))
        raise BaselineError(f"refusing to write a baseline from runs made by different code (source sha256 {shown}); "
                            "run the sweep again with --no-resume")
    return {"source_sha256": digests.pop() if digests else None, "covers": list(CODE_COVERS)}


# ---- reading and validating -----------------------------------------------------------------------------------

def read_baseline(path: Path) -> dict:
    """Read and validate a baseline; any problem is one ``BaselineError`` line naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise BaselineError(f"{path}: baseline not found (record one with --update-baseline)")
    try:
        baseline = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BaselineError(f"{path}: unreadable baseline ({error})") from None
    if not isinstance(baseline, dict) or baseline.get("baseline_version") != BASELINE_VERSION:
        found = baseline.get("baseline_version") if isinstance(baseline, dict) else type(baseline).__name__
        raise BaselineError(f"{path}: baseline_version {found!r}, expected {BASELINE_VERSION} (re-record it with "
                            "--seeds 0,1,2 --update-baseline)")
    missing = [key for key in REQUIRED_KEYS if key not in baseline]
    if missing:
        raise BaselineError(f"{path}: missing field(s) {missing}; expected {list(REQUIRED_KEYS)}")
    _validate_numbers(path, baseline)
    return baseline


def _validate_numbers(path: Path, baseline: dict) -> None:
    for key in (*ACCURACY, LEARNED, CHANCE, GAIN, "peak_mem_rel", TRAIN_TEST):
        value = baseline["tolerances"].get(key) if isinstance(baseline["tolerances"], dict) else None
        if key == TRAIN_TEST and value is None:
            continue  # a baseline recorded before the train-vs-test figure: the run's own noise bounds it
        if not _is_number(value) or value < 0:
            raise BaselineError(f"{path}: tolerances.{key} is {value!r}, expected a number >= 0")
    if not isinstance(baseline["strategies"], dict) or not baseline["strategies"]:
        raise BaselineError(f"{path}: strategies is {baseline['strategies']!r}, expected a non-empty object")
    for name, entry in baseline["strategies"].items():
        for key in STRATEGY_KEYS:
            value = entry.get(key) if isinstance(entry, dict) else None
            if not (isinstance(value, str) if key == "signature" else _is_number(value)):
                raise BaselineError(f"{path}: strategies.{name}.{key} is {value!r}, expected "
                                    f"{'a string' if key == 'signature' else 'a number'}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_sweep(baseline: dict, *, preset: str, configs: list[dict], path: Path) -> None:
    """Before the sweep: the baseline must be of this preset and setting (a ``ci`` baseline cannot pass ``smoke``)."""
    if baseline["preset"] != preset:
        raise BaselineError(f"{path}: recorded for preset {baseline['preset']!r}, this sweep is preset {preset!r}")
    for config in configs:
        difference = first_difference(baseline["setting"], sweep_setting(config))
        if difference:
            raise BaselineError(f"{path}: setting differs from this sweep's at {difference}")
        strategy = config["strategy"]["name"]
        recorded = {key: value for key, value in
                    (baseline["strategies"].get(strategy, {}).get("hyperparameters") or {}).items()
                    if value is not None}  # a baseline of records older than a key holds None for it
        now = strategy_hyperparameters(config)
        difference = recorded and first_difference(recorded, {key: now[key] for key in recorded})
        if difference:
            raise BaselineError(f"{path}: {strategy}'s training hyperparameters differ from this sweep's at "
                                f"{difference}; a deliberate change is re-baselined in the same commit")


def write_baseline(path: Path, baseline: dict) -> None:
    write_json_atomic(Path(path), baseline)


# ---- comparing ------------------------------------------------------------------------------------------------

def _lower_bound(metric: str, base: dict, now: dict, tolerances: dict) -> float | None:
    if metric in ACCURACY:
        return base[metric] - tolerances[metric]
    if metric == LEARNED:
        return base["required_learned_margin"]
    if metric == CHANCE:
        return now.get("required_chance_margin")  # the run's own permutation test: no baseline figure needed
    if metric == OWN_EFFECT:
        return base.get("required_own_params_effect")
    if metric == GAIN:
        return base[GAIN] - tolerances[GAIN] if base.get("gain_significant") else None
    return None


def _compare_metric(strategy: str, seed: int, metric: str, base: dict, now: dict, tolerances: dict) -> Verdict:
    old, new = base.get(metric), now.get(metric)
    limit = _lower_bound(metric, base, now, tolerances)
    if metric == GAIN and limit is None:
        return Verdict(strategy, metric, old, new, "n/a", seed)  # no significant gain in the baseline
    if metric in MEMORY and old is not None:
        limit = old * (1 + tolerances["peak_mem_rel"])
    if old is None and new is None:
        return Verdict(strategy, metric, old, new, "ok", seed)
    if metric == CHANCE and new is not None:  # the run's own permutation test, with or without a baseline figure
        return Verdict(strategy, metric, old, new, "NOT LEARNED" if new < limit else "ok", seed, limit)
    if old is None or new is None:
        return Verdict(strategy, metric, old, new, "MISSING", seed, limit)
    if metric in MEMORY:
        lower = old / (1 + tolerances["peak_mem_rel"])  # a drop is a changed measurement too
        verdict = "REGRESSION" if new > limit else ("CHANGED" if new < lower else "ok")
    elif limit is not None:
        failed = "NOT LEARNED" if metric in (LEARNED, CHANCE, OWN_EFFECT) else "REGRESSION"
        much_better = metric in ACCURACY and new > old + tolerances[metric]
        verdict = failed if new < limit else ("SUSPICIOUS" if much_better else "ok")
    elif new == old:
        verdict = "ok"
    else:
        verdict = "changed-config" if base["signature"] != now["signature"] else "REGRESSION"
    return Verdict(strategy, metric, old, new, verdict, seed, limit)


CHECKED = (*ACCURACY, LEARNED, CHANCE, OWN_EFFECT, GAIN, *MEMORY, *EXACT)


def own_noise_limit(now: dict) -> float | None:
    """The largest test-minus-train gap the run's own clip sampling explains: ``K_STD`` bootstrap standard deviations
    of the difference, never below the accuracy floor (None without the figure)."""
    noise = now.get("train_vs_test_noise")
    return None if noise is None else max(K_STD * noise, FLOORS["accuracy_abs"])


def train_test_limit(base: dict, now: dict, tolerances: dict) -> float | None:
    """The bound of the train-vs-test gap: from the baseline's seeds where it holds the figure (its mean gap, where
    above 0, plus the seed tolerance), else from the run's own clip noise (``own_noise_limit``)."""
    if base.get(TRAIN_TEST) is not None and tolerances.get(TRAIN_TEST) is not None:
        return max(base[TRAIN_TEST], 0.0) + tolerances[TRAIN_TEST]
    return own_noise_limit(now)


def _compare_train_test(strategy: str, seed: int, base: dict, now: dict, tolerances: dict) -> Verdict:
    """Test beats train beyond the bound: SUSPICIOUS. No figure: MISSING where the baseline has one, else n/a (a
    record older than the figure)."""
    old, new = base.get(TRAIN_TEST), now.get(TRAIN_TEST)
    limit = train_test_limit(base, now, tolerances)
    if new is None or limit is None:
        return Verdict(strategy, TRAIN_TEST, old, new, "MISSING" if old is not None else "n/a", seed, limit)
    return Verdict(strategy, TRAIN_TEST, old, new, "SUSPICIOUS" if new > limit else "ok", seed, limit)


def same_seed_entry(baseline: dict, strategy: str, seed: int, now: dict) -> dict | None:
    """The baseline's figures of this very seed, where its numeric environment is this run's; else None."""
    stored = baseline["strategies"].get(strategy, {}).get("per_seed", {}).get(str(seed))
    if not stored or stored.get("environment") != now.get("environment"):
        return None
    return stored


def _compare_same_seed(strategy: str, seed: int, metric: str, stored: dict, now: dict) -> Verdict:
    """Tier 1: the same seed in the same numeric environment repeats its figures; both directions fail."""
    old, new = stored.get(metric), now.get(metric)
    if old is None or new is None:
        return Verdict(strategy, f"{metric} (same seed)", old, new, "MISSING", seed)
    if new < old - SAME_SEED_TOLERANCE:
        verdict = "REGRESSION"
    elif new > old + SAME_SEED_TOLERANCE:
        verdict = "SUSPICIOUS"
    else:
        verdict = "ok"
    return Verdict(strategy, f"{metric} (same seed)", old, new, verdict, seed, SAME_SEED_TOLERANCE)


def _compare_run(strategy: str, seed: int, base: dict, now: dict, baseline: dict) -> list[Verdict]:
    stored = same_seed_entry(baseline, strategy, seed, now)
    tier = [_compare_same_seed(strategy, seed, m, stored, now) for m in ACCURACY] if stored else []
    statistical = [m for m in CHECKED if not (stored and m in ACCURACY)]
    tolerances = baseline["tolerances"]
    return tier + [_compare_metric(strategy, seed, m, base, now, tolerances) for m in statistical] + \
        [_compare_train_test(strategy, seed, base, now, tolerances)]


def compare(records: list[dict], baseline: dict) -> list[Verdict]:
    """Every checked metric of every run (strategy, seed) and every baseline strategy, with its verdict."""
    expected = baseline["strategies"]
    ran = {r["run"]["strategy"] for r in records}
    verdicts = [Verdict(s, "(not in this run)", None, None, "MISSING") for s in sorted(set(expected) - ran)]
    for r in sorted((r for r in records if r["run"]["status"] != "ok"), key=lambda r: r["run"]["id"]):
        verdicts.append(Verdict(r["run"]["strategy"], f"(run failed: {r['run']['error']})", None, None, "MISSING",
                                record_row(r)["seed"]))
    for strategy, seed, now in sorted(summaries(records), key=lambda found: (found[0], found[1])):
        if strategy not in expected:
            verdicts.append(Verdict(strategy, "(not in baseline)", None, None, "MISSING", seed))
            continue
        verdicts += _compare_run(strategy, seed, expected[strategy], now, baseline)
    return verdicts


def identical_to_baseline_seeds(records: list[dict], baseline: dict) -> tuple[int, int]:
    """(identical, comparable): runs whose seed the baseline holds, and how many repeat its accuracy exactly."""
    identical = comparable = 0
    for strategy, seed, now in summaries(records):
        stored = baseline["strategies"].get(strategy, {}).get("per_seed", {}).get(str(seed))
        if stored:
            comparable += 1
            identical += all(stored.get(k) == now[k] for k in ACCURACY)
    return identical, comparable


def _delta(v: Verdict) -> str:
    if v.baseline is None or v.now is None:
        return "-"
    if v.metric in MEMORY + EXACT and v.baseline:
        return f"{100.0 * (v.now - v.baseline) / v.baseline:+.2f}%"
    return f"{v.now - v.baseline:+.4f}"


def verdict_table(verdicts: list[Verdict]) -> str:
    rows = [[v.strategy, v.seed, v.metric, v.baseline, v.now, _delta(v), v.limit, v.verdict] for v in verdicts]
    return tabulate(rows, headers=["strategy", "seed", "metric", "baseline (mean)", "now", "delta", "limit",
                                   "verdict"], tablefmt="github", floatfmt=".4f", missingval="-")


REASONS = {  # verdict -> what it usually means, printed with every failure
    "REGRESSION": "worse than the baseline beyond its tolerance",
    "SUSPICIOUS": "much better than the baseline: test data leaking into training, evaluation on the wrong split, "
                  "or an intended change not yet re-baselined",
    "CHANGED": "the measurement moved the other way beyond its tolerance: a changed measurement, not a gain",
    "NOT LEARNED": "the model does not learn what the baseline's does (labels, a parameter group or a path cut off)",
    "MISSING": "no figure to check",
}
CHECK_REASONS = {  # (check, verdict) -> what it means, where a check's failure says more than its verdict's
    (TRAIN_TEST, "SUSPICIOUS"): "test macro-F1 above the same model's macro-F1 on its own training clips beyond the "
                                "noise: test data leaking into training, or evaluation on the wrong split",
}


def reason(v: Verdict) -> str:
    return CHECK_REASONS.get((v.metric, v.verdict), REASONS[v.verdict])


def failure_lines(verdicts: list[Verdict]) -> list[str]:
    return [f"{v.strategy}: {v.metric} {v.verdict} (seed {v.seed}, baseline {_fmt(v.baseline)}, now {_fmt(v.now)}, "
            f"limit {_fmt(v.limit)}, delta {_delta(v)}): {reason(v)}" for v in verdicts if v.failed]


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
