"""One run: its data, the training loop, evaluation, checkpoints and DDP ranks (``run.run_one``); nothing here knows
of sweeps. Many runs (sweeps, pools, workers, schedulers) live in ``bench/runner/``."""
