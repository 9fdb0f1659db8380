import os

from hypothesis import settings

# Tests must not grab all memory of a shared GPU if one is present.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# Property tests draw the same examples on every machine, so a CI failure reproduces locally.
settings.register_profile("reproducible", derandomize=True, database=None)
settings.load_profile("reproducible")
