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

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from manifold_metric import archs, tracks
from manifold_metric.permutations import PermSpec, scale, take


def replication_map(key, old: int, new: int):
  """g: new -> old; identity on the first `old`, random old ones after."""
  if new < old:
    raise ValueError(f"cannot widen {old} neurons to {new}: Net2Net only grows")
  extra = jax.random.randint(key, (new - old,), 0, old)
  return jnp.concatenate([jnp.arange(old), extra]).astype(jnp.int32)


def shares(key, g, old: int, split: str = "random"):
  """Per new neuron, its share of the old neuron's outgoing weights."""
  if split not in archs.SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {archs.SPLITS}")
  w = (
      jnp.ones(g.shape)
      if split == "uniform"
      else jax.random.uniform(key, g.shape, minval=0.5, maxval=1.5)
  )
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


def deepen(arch: archs.Arch, variables, *, after: int, count: int = 1):
  """Inserts `count` identity-initialised layers after hidden layer / conv
  `after` (0-based). The inserted layer sees a ReLU output x >= 0 and is
  followed by a ReLU, so relu(I x + 0) = x preserves the function."""
  new_arch = archs.deepened(arch, after, count)
  layer = "hiddens" if arch.kind == "mlp" else "convs"
  widths = arch.hidden if arch.kind == "mlp" else arch.channels
  params = dict(variables["params"])
  old = [params.pop(f"{layer}_{i}") for i in range(len(widths))]
  w = widths[after]
  eye = np.eye(w, dtype=np.float32)
  if arch.kind == "cnn":
    kernel = np.zeros((3, 3, w, w), np.float32)
    kernel[1, 1] = eye
    eye = kernel
  ident = {"kernel": jnp.asarray(eye), "bias": jnp.zeros((w,), jnp.float32)}
  new = old[: after + 1] + [ident] * count + old[after + 1 :]
  params.update({f"{layer}_{i}": p for i, p in enumerate(new)})
  return new_arch, {**variables, "params": params}


def expand(arch: archs.Arch, variables, spec: dict, key):
  """Applies an expansion, a sequence of Net2Net steps, to one model.

  Args:
    arch: the base architecture.
    variables: its variables.
    spec: a config expansion entry: {"steps": [...]} or a shorthand
      ({"kind": "widen_first", "width": 16}, {"kind": "widen_all", "factor":
      1.5}, {"kind": "deepen", "after": 2, "count": 1}, BERT's {"kind":
      "widen_ffn", "width": 1024}); optionally "split". See `archs.steps`.
    key: PRNG key; step i widens with keys from fold_in(key, i).

  Returns:
    (new arch, new variables), the same function as before.
  """
  split = spec.get("split", "random")
  for i, step in enumerate(archs.steps(spec, arch)):
    if step["kind"] == "deepen":
      arch, variables = deepen(arch, variables, after=step["after"], count=step.get("count", 1))
      continue
    pairs = archs.step_groups(arch, step)
    for (group, new), k in zip(pairs, jax.random.split(jax.random.fold_in(key, i), len(pairs))):
      variables = widen(tracks.of(arch).neuron_groups(arch)[group], variables, new, k, split)
      arch = archs.widened(arch, group, new)
  return arch, variables


def expand_seeds(arch: archs.Arch, variables, spec: dict, seeds):
  """`expand` of one model per seed (stacked), seed s with key(s).

  Returns:
    (new arch, new variables stacked over seeds).
  """
  new_arch, _ = archs.expanded(arch, spec)
  keys = jax.vmap(jax.random.key)(jnp.asarray(list(seeds)))
  return new_arch, jax.vmap(lambda v, k: expand(arch, v, spec, k)[1])(variables, keys)


def candidates(
    arch: archs.Arch, phi, spec: dict, seeds, ds: dict, hp: dict, performance, what: str
):
  """theta^(0) of every seed: phi* expanded (`expand_seeds`, seed s with
  key(s)), each checked to keep its seed's validation performance.

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
