"""Many runs: presets expanded into runs, the sweep, launchers (pool, Slurm, Ray, torchrun), the worker process a
sweep starts for each run, planning and tuning over runs. One run (its data, loop and evaluation) is
``bench/training/``, which imports nothing from here. Kept empty: a worker imports the project's code fresh, from the
checkout bench/runner/boot.py names."""
