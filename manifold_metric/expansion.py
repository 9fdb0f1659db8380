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

import jax
import numpy as np
from flax import traverse_util

from manifold_metric import archs, tracks
from manifold_metric.permutations import PermSpec, blocked


def replication_map(rng: np.random.Generator, old: int, new: int) -> np.ndarray:
  """g: new -> old; identity on the first `old`, random old ones after."""
  if new < old:
    raise ValueError(f"cannot widen {old} neurons to {new}: Net2Net only grows")
  return np.concatenate([np.arange(old), rng.integers(0, old, new - old)]).astype(np.int32)


def shares(rng: np.random.Generator | None, g, old: int, split: str = "random") -> np.ndarray:
  """Per new neuron, its share of the old neuron's outgoing weights."""
  if split not in archs.SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {archs.SPLITS}")
  g = np.asarray(g)
  w = np.ones(g.shape) if split == "uniform" else rng.uniform(0.5, 1.5, g.shape)
  return w / np.bincount(g, w, minlength=old)[g]


def _on_axis(a, ndim: int, axis: int):
  """(seeds, k) per-seed values shaped to broadcast on `axis` of an ndim array."""
  shape = [1] * ndim
  shape[0], shape[axis] = a.shape
  return a.reshape(shape)


def widen(spec: PermSpec, variables, g, f):
  """Widens one neuron group of one model per seed (stacked) to g.shape[1] neurons.

  Args:
    spec: the group.
    variables: the models, stacked on a leading seed axis (numpy).
    g: (seeds, new) replication maps (`replication_map`).
    f: (seeds, new) shares (`shares`), which divide every 'in' (consumer) axis.

  Returns:
    The widened models, stacked.
  """
  flat = traverse_util.flatten_dict(variables, sep="/")
  for a in spec.axes:
    x = np.asarray(flat[a.path])
    # a.axis counts one model's axes; x has the seed axis in front.
    xr, at = blocked(x, a.axis % (x.ndim - 1) + 1, spec.size, a.inner)
    out = np.take_along_axis(xr, _on_axis(g, xr.ndim, at), axis=at)
    if a.role == "in":
      out = out * _on_axis(f, xr.ndim, at).astype(x.dtype)
    flat[a.path] = out.reshape(xr.shape[: at - 1] + (-1,) + xr.shape[at + 2 :])
  return traverse_util.unflatten_dict(flat, sep="/")


def deepen(arch: archs.Arch, variables, *, after: int, count: int = 1):
  """Inserts `count` identity-initialised layers after hidden layer / conv
  `after` (0-based), in every model of a stack (leading seed axis). The
  inserted layer sees a ReLU output x >= 0 and is followed by a ReLU, so
  relu(I x + 0) = x preserves the function."""
  new_arch = archs.deepened(arch, after, count)
  layer = "hiddens" if arch.kind == "mlp" else "convs"
  widths = arch.hidden if arch.kind == "mlp" else arch.channels
  params = dict(variables["params"])
  old = [params.pop(f"{layer}_{i}") for i in range(len(widths))]
  seeds, w = len(np.asarray(old[0]["bias"])), widths[after]
  eye = np.eye(w, dtype=np.float32)
  if arch.kind == "cnn":
    kernel = np.zeros((3, 3, w, w), np.float32)
    kernel[1, 1] = eye
    eye = kernel
  ident = {"kernel": np.repeat(eye[None], seeds, 0), "bias": np.zeros((seeds, w), np.float32)}
  new = old[: after + 1] + [ident] * count + old[after + 1 :]
  params.update({f"{layer}_{i}": p for i, p in enumerate(new)})
  return new_arch, {**variables, "params": params}


def expand_seeds(arch: archs.Arch, variables, spec: dict, seeds):
  """Applies an expansion, a sequence of Net2Net steps, to one model per seed.

  Numpy on the host: an expansion gathers and scales a few arrays once, so
  it needs no compilation (jitted, its random draws alone took seconds to
  compile per candidate and job).

  Args:
    arch: the base architecture.
    variables: one model per seed, stacked on a leading axis.
    spec: a config expansion entry: {"steps": [...]} or a shorthand
      ({"kind": "widen_first", "width": 16}, {"kind": "widen_all", "factor":
      1.5}, {"kind": "deepen", "after": 2, "count": 1}, BERT's {"kind":
      "widen_ffn", "width": 1024}); optionally "split". See `archs.steps`.
    seeds: the seed of each model: widening group j in step i of seed s
      draws its replicas and shares from numpy's generator [s, i, j], so a
      seed's expansion does not depend on the other seeds.

  Returns:
    (new arch, new variables stacked over seeds), the same functions as before.
  """
  split, seeds = spec.get("split", "random"), [int(s) for s in seeds]
  variables = jax.tree.map(np.asarray, variables)
  for i, step in enumerate(archs.steps(spec, arch)):
    if step["kind"] == "deepen":
      arch, variables = deepen(arch, variables, after=step["after"], count=step.get("count", 1))
      continue
    for j, (group, new) in enumerate(archs.step_groups(arch, step)):
      spec_j = tracks.of(arch).neuron_groups(arch)[group]
      rngs = [np.random.default_rng([s, i, j]) for s in seeds]
      g = np.stack([replication_map(r, spec_j.size, new) for r in rngs])
      f = np.stack([shares(r, gs, spec_j.size, split) for r, gs in zip(rngs, g)])
      variables = widen(spec_j, variables, g, f)
      arch = archs.widened(arch, group, new)
  return arch, variables


def expand(arch: archs.Arch, variables, spec: dict, seed: int):
  """`expand_seeds` of one model (unstacked) with seed `seed`.

  Returns:
    (new arch, new variables), the same function as before.
  """
  one = jax.tree.map(lambda a: np.asarray(a)[None], variables)
  new_arch, stacked = expand_seeds(arch, one, spec, [seed])
  return new_arch, jax.tree.map(lambda a: a[0], stacked)


def candidates(
    arch: archs.Arch, phi, spec: dict, seeds, ds: dict, hp: dict, performance, what: str
):
  """theta^(0) of every seed: phi* expanded (`expand_seeds`), each checked.

  Each seed's expansion must keep its seed's validation performance.

  Args:
    arch: phi*'s architecture.
    phi: phi* of every seed, stacked.
    spec: the config's expansion entry.
    seeds: the seeds, in the order of `phi`.
    ds: the prepared dataset.
    hp: the track's hyperparameters (for BERT's evaluation batch).
    performance: A(phi*) per seed, as its checkpoint records it.
    what: names the expansion in the error.

  Returns:
    (the expanded architecture, theta^(0) stacked over seeds).

  Raises:
    RuntimeError: naming `what` and the seed if an expansion is not
      function-preserving.
  """
  new_arch, theta = expand_seeds(arch, phi, spec, seeds)
  after = [r["performance"] for r in tracks.validate(new_arch, theta, ds, hp)]
  tracks.check_preserved(arch, performance, after, what, seeds)
  return new_arch, theta


def setting_candidates(
    arch: archs.Arch, phi, metas, expansions: dict, seeds, ds: dict, hp: dict, setting: str
) -> dict:
  """theta^(0) of every seed for each of a setting's expansions (`candidates`).

  Args:
    arch, phi, seeds, ds, hp: as in `candidates`.
    metas: phi*'s checkpoint metadata per seed (its "performance" is A(phi*)).
    expansions: the config's expansion entries by name.
    setting: the setting's name, for errors ("expansion <name> of <setting>").

  Returns:
    {name: (the expanded architecture, theta^(0) stacked over seeds)}.
  """
  performance = [m["performance"] for m in metas]
  return {
      e: candidates(arch, phi, spec, seeds, ds, hp, performance, f"expansion {e} of {setting}")
      for e, spec in expansions.items()
  }
