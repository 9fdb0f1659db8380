"""Both tracks behind one interface: image classifiers (MLP, CNN, ResNet18)
and BERT differ in their data, models, neuron groups and expansions. Each
function here serves both, dispatched on the architecture's kind, so that
workflow scripts never branch on the track."""

import jax
import numpy as np

from manifold_metric import bert, data, models, text
from manifold_metric.archs import is_lm


def load_dataset(path) -> dict:
  """A prepared dataset (.npz) of either track.

  Args:
    path: written by `data.save` from `data.load` or `text.prepare`.

  Returns:
    The dataset's arrays; an `io.InputError` names the file if it is missing
    or unreadable.
  """
  keys = text.TEXT_KEYS if "train" in data.npz_keys(path) else data.KEYS
  return data.load_npz(path, keys)


def build_arch(model: dict, ds: dict) -> dict:
  """The architecture of a config `model` entry for a prepared dataset.

  Args:
    model: {"kind": ..., size overrides} (see `archs.sizes`).
    ds: the prepared dataset, which gives the classes or the vocabulary.

  Returns:
    The architecture as plain data, with num_classes, or BERT's vocab_size
    and max_len (the dataset's sequence length).
  """
  sizes = {k: v for k, v in model.items() if k not in ("kind", "preset")}
  if model["kind"] == "bert":
    return bert.arch(model.get("preset", "tinybert"), int(ds["vocab_size"]),
                     max_len=ds["train"].shape[1], **sizes)
  return models.default_arch(model["kind"], ds["num_classes"], **sizes)


def init(arch: dict, key, ds: dict):
  """Fresh variables of `arch` for the dataset's inputs."""
  if is_lm(arch):
    return bert.init(arch, key)
  return models.init(arch, key, ds["x_train"].shape[1:])


def probe_and_spec(arch: dict, group: str | None = None):
  """The (Probe, PermSpec) of a neuron group.

  Args:
    arch: the model.
    group: a name from `models.neuron_groups` / `bert.neuron_groups`; None is
      the metric's default, the first layer (layer 0's FFN for BERT).

  Returns:
    The loss as head(stem(x)) and the group's permutation spec, as
    `barrier.barrier_set` takes them.
  """
  if is_lm(arch):
    group = group or "ffn_0"
    return bert.probe(arch, group), bert.spec(arch, group)
  spec = models.neuron_groups(arch)[group] if group else models.first_group(arch)
  return models.probe(arch), spec


def group_name(arch: dict, group: str | None = None) -> str:
  """The name of the neuron group `probe_and_spec(arch, group)` permutes."""
  if group:
    return group
  return "ffn_0" if is_lm(arch) else next(iter(models.neuron_groups(arch)))


def check_preserved(arch: dict, before: float, after: float, what: str) -> None:
  """Raises a RuntimeError naming `what` unless an expansion kept the
  validation performance: accuracy exactly (the predictions are the same),
  BERT's -log MLM loss to float32 round-off (1e-4 relative)."""
  tol = 1e-4 * abs(before) if is_lm(arch) else 0.0
  if abs(after - before) > tol:
    raise RuntimeError(f"{what} changed the validation performance from {before} to {after}: "
                       "it is not function-preserving")


def param_count(variables) -> int:
  """Trainable parameters of a model: the size baseline every score is
  compared with."""
  return int(sum(np.size(leaf) for leaf in jax.tree.leaves(variables["params"])))
