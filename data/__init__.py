"""Attribute schemas, the synthetic video PAR dataset, real MARS / Duke loaders and frame sampling."""
