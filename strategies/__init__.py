"""Fine-tuning strategies: one module per strategy, each registering itself with ``strategies.registry``."""
