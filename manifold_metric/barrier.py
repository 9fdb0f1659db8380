"""Loss barriers (Equation 1) and the barrier set of Algorithm 1.

The barrier set is one jitted call over the n consecutive node pairs. Savings
the structure allows: every node is a permutation of theta, so the loss at
both ends is L(theta), computed once; the loss is invariant to the group's
permutations, so the pair (P_i theta, P_{i+1} theta) has the barrier of
(theta, sigma_i theta) with sigma_i = P_{i+1} P_i^-1, and pairs with the same
step sigma_i share one evaluation (few neurons, e.g. two attention heads,
give few distinct steps); the permuted layer's pre-activation is linear in its
weights, so the midpoint's is the mean of the stem output and its gather,
computed once; only the midpoint of the remaining permuted leaves is
materialized, per step, inside the loop. What is left per distinct step is
one evaluation of the probe's head (benchmarks/README.md has the
measurements).

Resolution. A barrier that is 0 in exact arithmetic (two Net2Net replicas at
the expansion, or two dead neurons, swapped: the midpoint computes the same
function) comes out of float32 as 0 or as rounding noise, and one of 1e-9 as 0
or noise too; where lambda sits for small q that decides comparisons
b <= lambda, and with dead neurons in phi* lambda itself is 0. So a computed
barrier is known to the resolution of the loss only, and one at or below

  tau = RESOLUTION * eps * (L(theta) + sum |z * dL/dz|)

is reported as exactly 0 (eps: of the loss's dtype; z: the head's input, so
dL/dz is per example, not summed over the batch). The bracket is, to first
order, how far a relative error eps of the loss and of each entry of z moves
L. eps * L alone is not a resolution: confident models have large logits, and
their noise reached 139 eps * L. Measured on MLP, CNN, ResNet and BERT-FFN
probes at batch 128 with L from 5e-4 to 7.6, the noise of exactly-zero
barriers stayed below 1.5 eps times the bracket; RESOLUTION = 8 leaves a
margin of 5. Costs one forward and backward pass of the head per set.
Nonzero barriers carry rounding of about 1e-7 (up to ~2e-6 at BERT's L of 6),
so a nonzero lambda can still be decided differently from exact arithmetic
when a barrier lies within about tau of it: e.g. when several steps share it
exactly (the same step up to swaps of dead neurons) and the Net2Net copy has
it too, up to the rounding of its weights.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from manifold_metric.models import Probe
from manifold_metric.permutations import PermSpec, take

# tau / (eps * (L + sum |z dL/dz|)): barriers up to tau are reported as 0
# (module docstring).
RESOLUTION = 8.0


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


def _midpoint(spec: PermSpec, variables, step):
  """(theta + sigma theta) / 2 on the group's leaves."""
  flat = traverse_util.flatten_dict(variables, sep="/")
  for path in spec.paths:
    x = flat[path]
    xs = x
    for a in spec.axes:
      if a.path == path:
        xs = take(xs, step, a.axis, spec.size, a.inner)
    flat[path] = 0.5 * (x + xs)
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


def steps(nodes: np.ndarray) -> np.ndarray:
  """sigma_i with permute(sigma_i theta, P_i) = permute(theta, P_{i+1}), per
  pair of consecutive nodes: (n, size) gathers sigma_i = P_{i+1}[P_i^-1]."""
  return np.take_along_axis(nodes[1:], np.argsort(nodes[:-1], axis=1), axis=1)


def _loop_length(u: int, n: int) -> int:
  """u distinct steps padded to a power of two up to 64, then to a multiple of
  64, at most n: few loop lengths (compilations) per model, and at most 63
  wasted evaluations."""
  return min(n, 1 << (u - 1).bit_length() if u <= 64 else -(-u // 64) * 64)


def barrier_set(probe: Probe, spec: PermSpec, variables, batch, nodes,
                chunk: int | None = None) -> jax.Array:
  """|b(theta_i, theta_{i+1})| at alpha = 0.5 for the n pairs of `nodes`,
  exactly 0 where it is at most the loss's resolution (`resolution`).

  nodes: (n + 1, size) permutations (see `permutations.random_walk`).
  chunk: distinct steps evaluated together (vmapped); peak memory grows with
    about `chunk` heads' activations. None: `default_chunk()`.
  """
  nodes = np.asarray(nodes)
  if nodes.ndim != 2 or nodes.shape[0] < 2 or nodes.shape[1] != spec.size:
    raise ValueError(f"nodes must be (n + 1, {spec.size}) permutations with n >= 1, "
                     f"got shape {nodes.shape}")
  chunk = default_chunk() if chunk is None else chunk
  if chunk < 1:
    raise ValueError(f"chunk must be a positive number of pairs, got {chunk}")
  distinct, inverse = np.unique(steps(nodes), axis=0, return_inverse=True)
  u, padded = len(distinct), _loop_length(len(distinct), len(nodes) - 1)
  distinct = np.concatenate([distinct, np.repeat(distinct[:1], padded - u, axis=0)])
  b = _step_barriers(probe, spec, variables, batch, jnp.asarray(distinct, jnp.int32), chunk)
  return b[jnp.asarray(inverse.reshape(-1))]


@functools.partial(jax.jit, static_argnames=("probe", "spec", "chunk"))
def _step_barriers(probe: Probe, spec: PermSpec, variables, batch, sigmas, chunk: int):
  """|b(theta, sigma theta)| at alpha = 0.5 for each row sigma of `sigmas`,
  0 where at most the resolution."""
  z = probe.stem(variables, batch)

  def one(sigma):
    zm = z if spec.stem_axis is None else 0.5 * (z + take(z, sigma, spec.stem_axis, spec.size))
    return probe.head(_midpoint(spec, variables, sigma), zm, batch)

  # L(theta) is the loop's first step, the identity (its midpoint is theta,
  # bit for bit): the same compiled code as every L(mid), so that a midpoint
  # computed like theta gives exactly L(theta). (Evaluated outside the loop,
  # XLA may fuse and round it differently.)
  sigmas = jnp.concatenate([jnp.arange(spec.size, dtype=sigmas.dtype)[None], sigmas])
  # batch_size=1 would still vmap (over a unit axis); None is the plain scan.
  mids = jax.lax.map(one, sigmas, batch_size=None if chunk == 1 else chunk)
  end = mids[0]
  b = jnp.abs(mids[1:] - end)
  return jnp.where(b <= _resolution(probe, variables, z, batch, end), jnp.zeros_like(b), b)


def _resolution(probe: Probe, variables, z, batch, loss, eps=None):
  """RESOLUTION * eps * (|L| + sum |z * dL/dz|) (module docstring), L = `loss`
  at theta, z the stem output. One forward and backward pass of the head.
  eps: the machine epsilon of the loss's dtype unless given."""
  dz = jax.grad(lambda z_: probe.head(variables, z_, batch))(z)
  eps = jnp.finfo(loss.dtype).eps if eps is None else eps
  sensitivity = sum(jnp.sum(jnp.abs(a * g)) for a, g in zip(jax.tree.leaves(z), jax.tree.leaves(dz)))
  return RESOLUTION * eps * (jnp.abs(loss) + sensitivity)


def resolution(probe: Probe, variables, batch, eps=None):
  """tau of `variables` on `batch`: `barrier_set` reports barriers <= tau as 0."""
  z = probe.stem(variables, batch)
  return _resolution(probe, variables, z, batch, probe.head(variables, z, batch), eps)
