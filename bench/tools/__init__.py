"""Commands beside the sweep: the paper-scale dry run, the synthetic CLIP pretraining and the CNN reference
learner. The top of the layering: they may use every other room."""
