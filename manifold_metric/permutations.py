"""Permutation specs over Flax variable trees.

A `PermSpec` names every array axis that one group of `size` neurons lives on,
in the spirit of Git Re-Basin's permutation specs. The same spec drives
function-preserving permutations (gather along each axis) and Net2Net widening
(gather with a many-to-one map; consumers also scale), see `expansion.py`.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import traverse_util


@dataclasses.dataclass(frozen=True)
class Axis:
  """One axis of one variable that carries the neuron group.

  path: '/'-joined path into the variables dict, e.g. 'params/convs_0/kernel'.
  axis: the array axis. Its length is outer * size * inner: `outer` > 1 when a
    conv output is flattened into a dense layer (one block per pixel), `inner`
    > 1 when each neuron owns several entries (attention heads own head_dim).
  role: 'out' for the neuron's own weights and statistics, 'in' for weights
    that consume the neuron's activation (Net2Net divides only these).
  """

  path: str
  axis: int
  role: str = "out"
  inner: int = 1


@dataclasses.dataclass(frozen=True)
class PermSpec:
  """A group of `size` neurons, where it lives, and where the model's stem
  output (see `models.Probe`) carries it (`stem_axis`, None if it does not)."""

  size: int
  axes: tuple[Axis, ...]
  stem_axis: int | None = -1

  @property
  def paths(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a.path for a in self.axes))


def blocked(x, axis: int, size: int, inner: int):
  """Reshapes `axis` of x into (outer, size, inner); returns array, group axis."""
  axis = axis % x.ndim
  length = x.shape[axis]
  if length % (size * inner):
    raise ValueError(
        f"axis {axis} of length {length} is not a multiple of " f"group size {size} x inner {inner}"
    )
  shape = x.shape[:axis] + (length // (size * inner), size, inner) + x.shape[axis + 1 :]
  return x.reshape(shape), axis + 1


def take(x, index, axis: int, size: int, inner: int = 1):
  """Gathers the neuron group on `axis` of x by `index` (any length)."""
  xr, gaxis = blocked(x, axis, size, inner)
  out = jnp.take(xr, index, axis=gaxis)
  return out.reshape(x.shape[: axis % x.ndim] + (-1,) + x.shape[axis % x.ndim + 1 :])


def get(variables, path: str):
  return traverse_util.flatten_dict(variables, sep="/")[path]


def check(spec: PermSpec, variables) -> None:
  """Raises a ValueError naming the entry if the spec does not fit the tree."""
  flat = traverse_util.flatten_dict(variables, sep="/")
  for a in spec.axes:
    if a.path not in flat:
      raise ValueError(
          f"permutation spec names '{a.path}', which the model "
          f"does not have; it has {sorted(flat)}"
      )
    blocked(flat[a.path], a.axis, spec.size, a.inner)


@functools.partial(jax.jit, static_argnames="spec")
def permute(spec: PermSpec, variables, perm):
  """Applies one neuron permutation to every axis in the spec."""
  flat = traverse_util.flatten_dict(variables, sep="/")
  for a in spec.axes:
    flat[a.path] = take(flat[a.path], perm, a.axis, spec.size, a.inner)
  return traverse_util.unflatten_dict(flat, sep="/")
