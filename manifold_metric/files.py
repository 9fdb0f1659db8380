"""Files without heavy imports: atomic writes and the error that names a
bad input file. The workflow imports this when it parses the Snakefile, so it
must not import JAX or pandas.

Every writer writes to a temporary name in the target's directory and renames
it into place, so a killed job never leaves a truncated file under the real
name.
"""

import contextlib
import os
import tempfile


class InputError(RuntimeError):
  """A file given as input is missing or not what it should be."""


@contextlib.contextmanager
def atomic_path(path):
  """Yields a temporary path beside `path`; renames it to `path` on success."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fd, tmp = tempfile.mkstemp(
      prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=os.path.dirname(path) or "."
  )
  os.close(fd)
  # mkstemp makes the file private (0600); results must get the permissions of
  # any file the user writes (the umask), e.g. group-readable on a cluster.
  umask = os.umask(0o022)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
