"""Loss barriers (Equation 1) and the barrier set of Algorithm 1.

The barrier set is one jitted call over all n consecutive node pairs. Savings
the structure allows: every node is a permutation of theta, so the loss at
both ends is L(theta), computed once; the permuted layer's pre-activation is
linear in its weights, so the midpoint's is the mean of two gathers of the
stem output, computed once; only the midpoint of the remaining permuted
leaves is materialized, per pair, inside the loop. What is left per pair is
one evaluation of the probe's head, which the engine cannot split further
(benchmarks/README.md has the measurements).
"""

import functools

import jax
import jax.numpy as jnp
from flax import traverse_util

from manifold_metric.models import Probe
from manifold_metric.permutations import PermSpec, take


def interpolate(va, vb, alpha):
  """alpha * va + (1 - alpha) * vb, leaf by leaf."""
  return jax.tree.map(lambda a, b: alpha * a + (1 - alpha) * b, va, vb)


def loss_barrier(loss_fn, va, vb, alphas):
  """Equation 1 along a grid: L(mix) - [a L(va) + (1 - a) L(vb)] per alpha.

  loss_fn(variables) -> scalar. Returns an array shaped like `alphas`; its max
  is the barrier b(va, vb) over the grid, its value at 0.5 the midpoint one.
  """
  alphas = jnp.asarray(alphas, jnp.float32)
  la, lb = loss_fn(va), loss_fn(vb)
  path = jax.lax.map(lambda a: loss_fn(interpolate(va, vb, a)), alphas)
  return path - (alphas * la + (1 - alphas) * lb)


def loss_curve(loss_fn, va, vb, alphas):
  """Loss along the linear path from vb (alpha=0) to va (alpha=1)."""
  return jax.lax.map(lambda a: loss_fn(interpolate(va, vb, a)),
                     jnp.asarray(alphas, jnp.float32))


def _midpoint(spec: PermSpec, variables, pa, pb):
  flat = traverse_util.flatten_dict(variables, sep="/")
  for path in spec.paths:
    x = flat[path]
    xa, xb = x, x
    for a in spec.axes:
      if a.path == path:
        xa = take(xa, pa, a.axis, spec.size, a.inner)
        xb = take(xb, pb, a.axis, spec.size, a.inner)
    flat[path] = 0.5 * (xa + xb)
  return traverse_util.unflatten_dict(flat, sep="/")


def default_chunk(platform: str | None = None) -> int:
  """Pairs per vmapped step when `barrier_set` is not told.

  Vmapping the head over pairs gives every pair its own weights: dense layers
  become batched matmuls and convolutions grouped ones, which XLA:CPU runs
  2-8x slower per pair than plain ones (benchmarks/README.md). One pair's
  head at a usual batch already keeps the CPU busy, so a plain scan (1) is
  fastest there and needs the least memory. Accelerators need more work per
  step to fill the device (8 is a guess, not measured).
  """
  return 1 if (platform or jax.default_backend()) == "cpu" else 8


@functools.partial(jax.jit, static_argnames=("probe", "spec", "chunk"))
def barrier_set(probe: Probe, spec: PermSpec, variables, batch, nodes,
                chunk: int | None = None):
  """|b(theta_i, theta_{i+1})| at alpha = 0.5 for the n pairs of `nodes`.

  nodes: (n + 1, size) permutations (see `permutations.random_walk`).
  chunk: pairs evaluated together (vmapped); peak memory grows with about
    `chunk` heads' activations. None: `default_chunk()`.
  """
  if nodes.ndim != 2 or nodes.shape[0] < 2 or nodes.shape[1] != spec.size:
    raise ValueError(f"nodes must be (n + 1, {spec.size}) permutations with n >= 1, "
                     f"got shape {nodes.shape}")
  chunk = default_chunk() if chunk is None else chunk
  if chunk < 1:
    raise ValueError(f"chunk must be a positive number of pairs, got {chunk}")
  z = probe.stem(variables, batch)
  end = probe.head(variables, z, batch)

  def one(pair):
    pa, pb = pair
    zm = z if spec.stem_axis is None else 0.5 * (
        take(z, pa, spec.stem_axis, spec.size) + take(z, pb, spec.stem_axis, spec.size))
    return probe.head(_midpoint(spec, variables, pa, pb), zm, batch)

  # batch_size=1 would still vmap (over a unit axis); None is the plain scan.
  mids = jax.lax.map(one, (nodes[:-1], nodes[1:]), batch_size=None if chunk == 1 else chunk)
  return jnp.abs(mids - end)
