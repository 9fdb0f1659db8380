"""Net2Net expansions (Chen et al., 2016), function-preserving.

Widening a neuron group replicates old neurons: every 'out' axis of the
group's spec is gathered (weights, biases and BatchNorm parameters and
statistics copied per replica) and every 'in' (consumer) axis is gathered and
divided among the replicas. Division happens only at the consumer. With
split='random' the shares of a neuron's replicas are random positive
fractions summing to one instead of 1/count: the function is still preserved
exactly, but replicas receive different gradients, so training can use them
(with equal shares they would stay copies of each other forever).
"""

import copy
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from manifold_metric import bert, models
from manifold_metric.permutations import PermSpec, scale, take

SPLITS = ("uniform", "random")


def replication_map(key, old: int, new: int):
  """g: new -> old; identity on the first `old`, random old ones after."""
  if new < old:
    raise ValueError(f"cannot widen {old} neurons to {new}: Net2Net only grows")
  extra = jax.random.randint(key, (new - old,), 0, old)
  return jnp.concatenate([jnp.arange(old), extra]).astype(jnp.int32)


def shares(key, g, old: int, split: str = "random"):
  """Per new neuron, its share of the old neuron's outgoing weights."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  w = (jnp.ones(g.shape) if split == "uniform"
       else jax.random.uniform(key, g.shape, minval=0.5, maxval=1.5))
  return w / jax.ops.segment_sum(w, g, num_segments=old)[g]


@functools.partial(jax.jit, static_argnames=("spec", "new", "split"))
def widen(spec: PermSpec, variables, new: int, key, split: str = "random"):
  """Widens one neuron group from spec.size to `new` neurons."""
  kg, ks = jax.random.split(key)
  g = replication_map(kg, spec.size, new)
  f = shares(ks, g, spec.size, split)
  flat = traverse_util.flatten_dict(variables, sep="/")
  for a in spec.axes:
    x = take(flat[a.path], g, a.axis, spec.size, a.inner)
    flat[a.path] = scale(x, f, a.axis, a.inner) if a.role == "in" else x
  return traverse_util.unflatten_dict(flat, sep="/")


def widen_first(arch: dict, variables, key, *, width=None, factor=None,
                split: str = "random"):
  """Widens the first layer (hidden units, first conv, or ResNet stem stage)."""
  name, spec = next(iter(models.neuron_groups(arch).items()))
  new = target_width(spec.size, width, factor)
  return _resized(arch, name, new), widen(spec, variables, new, key, split)


def widen_all(arch: dict, variables, key, *, factor: float, split: str = "random"):
  """Widens every neuron group (every conv / hidden layer) by `factor`."""
  groups = models.neuron_groups(arch)
  for k, (name, spec) in zip(jax.random.split(key, len(groups)), groups.items()):
    new = target_width(spec.size, None, factor)
    variables = widen(spec, variables, new, k, split)
    arch = _resized(arch, name, new)
  return arch, variables


def deepen(arch: dict, variables, *, after: int, count: int = 1):
  """Inserts `count` identity-initialised layers after hidden layer / conv
  `after` (0-based). The inserted layer sees a ReLU output x >= 0 and is
  followed by a ReLU, so relu(I x + 0) = x preserves the function."""
  kind = arch["kind"]
  if kind not in ("mlp", "cnn"):
    raise ValueError(f"deepening is defined for mlp and cnn, not {kind!r}")
  key = "hidden" if kind == "mlp" else "channels"
  widths = list(arch[key])
  if not 0 <= after < len(widths):
    raise ValueError(f"deepen.after = {after} is outside 0..{len(widths) - 1}")
  layer = "hiddens" if kind == "mlp" else "convs"
  params = dict(variables["params"])
  old = [params.pop(f"{layer}_{i}") for i in range(len(widths))]
  w = widths[after]
  eye = np.eye(w, dtype=np.float32)
  if kind == "cnn":
    kernel = np.zeros((3, 3, w, w), np.float32)
    kernel[1, 1] = eye
    eye = kernel
  ident = {"kernel": jnp.asarray(eye), "bias": jnp.zeros((w,), jnp.float32)}
  new = old[:after + 1] + [ident] * count + old[after + 1:]
  params.update({f"{layer}_{i}": p for i, p in enumerate(new)})
  arch = copy.deepcopy(arch)
  arch[key] = widths[:after + 1] + [w] * count + widths[after + 1:]
  return arch, {**variables, "params": params}


def widen_ffn(arch: dict, variables, key, *, width=None, factor=None,
              split: str = "random"):
  """Widens the FFN of every layer of a BERT to `width` or by `factor`.

  Args:
    arch: a BERT architecture (`bert.arch`).
    variables: its variables.
    key: PRNG key for the replicas and shares.
    width, factor: exactly one; the new width of each layer's FFN is `width`
      or ceil(old width * factor).
    split: "random" or "uniform" shares of the replicas.

  Returns:
    (new arch, new variables), the same function as before.
  """
  groups = bert.neuron_groups(arch)
  arch = copy.deepcopy(arch)
  for i, k in enumerate(jax.random.split(key, arch["layers"])):
    group = groups[f"ffn_{i}"]
    arch["ffn"][i] = target_width(group.size, width, factor)
    variables = widen(group, variables, arch["ffn"][i], k, split)
  return arch, variables


def expand(arch: dict, variables, spec: dict, key):
  """Applies an expansion described as plain data (the config's entries).

  Args:
    arch: the base architecture.
    variables: its variables.
    spec: {"kind": "widen_first", "width": 16} or {"kind": "widen_first",
      "factor": 2}, {"kind": "widen_all", "factor": 1.5}, {"kind": "deepen",
      "after": 2, "count": 1}, or BERT's {"kind": "widen_ffn", "width": 1024};
      optionally "split".
    key: PRNG key (widening only).

  Returns:
    (new arch, new variables), the same function as before.
  """
  kind = spec["kind"]
  split = spec.get("split", "random")
  if kind == "widen_first":
    return widen_first(arch, variables, key, width=spec.get("width"),
                       factor=spec.get("factor"), split=split)
  if kind == "widen_all":
    return widen_all(arch, variables, key, factor=spec["factor"], split=split)
  if kind == "deepen":
    return deepen(arch, variables, after=spec["after"], count=spec.get("count", 1))
  if kind == "widen_ffn":
    return widen_ffn(arch, variables, key, width=spec.get("width"),
                     factor=spec.get("factor"), split=split)
  raise ValueError(f"unknown expansion kind {kind!r}; expected widen_first, "
                   "widen_all, deepen or widen_ffn")


def target_width(size: int, width, factor) -> int:
  """The new width of a group of `size`: `width`, or ceil(size * factor)."""
  if (width is None) == (factor is None):
    raise ValueError("give exactly one of width or factor")
  new = int(width) if width is not None else int(math.ceil(size * factor - 1e-9))
  if new < size:
    raise ValueError(f"target width {new} is smaller than the current {size}")
  return new


def _resized(arch: dict, group: str, new: int) -> dict:
  """The architecture with neuron group `group` at width `new`."""
  arch = copy.deepcopy(arch)
  if arch["kind"] in ("mlp", "cnn"):
    arch["hidden" if arch["kind"] == "mlp" else "channels"][int(group.rsplit("_", 1)[1])] = new
  elif group.startswith("stage_"):
    arch["stages"][int(group.split("_")[1])] = new
  else:  # blocks_<b>_mid
    b = int(group.split("_")[1])
    per = [len(m) for m in arch["mids"]]
    s = int(np.searchsorted(np.cumsum(per), b, side="right"))
    arch["mids"][s][b - sum(per[:s])] = new
  return arch
