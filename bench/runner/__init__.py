"""Runs: presets expanded into runs, the sweep, launchers (pool, Slurm, Ray, torchrun), the worker process and the
one training loop. Kept empty: a worker imports the project's code fresh, from the checkout bench/runner/boot.py
names."""
