#!/usr/bin/env python
"""Benchmark CLIP fine-tuning strategies for video pedestrian attribute recognition. See ``--help``."""
import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
