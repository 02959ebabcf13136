"""Runs: presets expanded into runs, the sweep, launchers (pool, Slurm, Ray, torchrun), the worker process and the
one training loop. Kept empty: the sweep's fork server imports ``bench.runner.preload`` and must find no project
module preloaded, so workers import the project's code fresh."""
