import os

# Tests must not grab all memory of a shared GPU if one is present.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
