"""Predicting the impact of model expansion through the minima manifold."""

import atexit
import gc

# Python's last garbage collection at exit walks every object that JAX,
# pandas and matplotlib created: 0.4-0.5 s of every workflow job
# (benchmarks/README.md). Frozen objects are skipped; the process is ending.
atexit.register(gc.freeze)
