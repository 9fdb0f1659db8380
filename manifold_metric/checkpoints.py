"""Checkpoints on disk (msgpack through flax.serialization), written
atomically (`files.atomic_path`): a killed job never leaves a truncated file
under the real name. A missing, truncated or corrupt checkpoint is an
`InputError` that names the file and says what to do.
"""

import json
import os

import jax
import numpy as np
from flax import serialization

from manifold_metric import archs
from manifold_metric.files import InputError, atomic_path


def save_checkpoint(path, arch, variables, meta: dict | None = None) -> None:
  """One msgpack file: the architecture (`archs.to_dict`), variables, metadata."""
  state = {
      "arch": json.dumps(archs.to_dict(arch)),
      "meta": json.dumps(meta or {}),
      "variables": jax.tree.map(np.asarray, serialization.to_state_dict(variables)),
  }
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(serialization.msgpack_serialize(state))


def load_checkpoint(path):
  """Returns (arch, variables, meta) or raises InputError naming the file."""
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      state = serialization.msgpack_restore(f.read())
    return (
        archs.from_dict(json.loads(state["arch"])),
        state["variables"],
        json.loads(state["meta"]),
    )
  except FileNotFoundError:
    raise InputError(f"checkpoint {path} does not exist") from None
  except Exception as e:  # msgpack raises many types on truncated input
    raise InputError(
        f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: "
        f"{e}); delete it and rerun the workflow to rebuild it"
    ) from e


def model_of(variables, i: int = 0):
  """Model i of variables stacked over models, as numpy arrays (sliced on
  the host: indexing a JAX array compiles a slice per leaf shape)."""
  return jax.tree.map(lambda a: np.asarray(a)[i], variables)


def save_seeds(paths, arch, variables, metas) -> None:
  """Model i of `variables` (stacked over seeds) to paths[i], with metas[i]."""
  variables = jax.device_get(variables)  # one transfer, then numpy slices
  for i, (path, meta) in enumerate(zip(paths, metas)):
    save_checkpoint(path, arch, model_of(variables, i), meta)


def load_stacked(paths):
  """Checkpoints of one architecture stacked on a leading axis.

  Returns:
    (arch, variables stacked in the order of `paths`, metas); an InputError
    names a file that is unreadable or of another architecture.
  """
  loaded = [load_checkpoint(p) for p in paths]
  arch = loaded[0][0]
  for path, (a, _, _) in zip(paths, loaded):
    if a != arch:
      raise InputError(
          f"checkpoint {path} holds {a}, not {arch} like {paths[0]}; delete it "
          "and rerun the workflow to rebuild it"
      )
  return (
      arch,
      jax.tree.map(lambda *v: np.stack(v), *(v for _, v, _ in loaded)),
      [m for _, _, m in loaded],
  )
