"""Loss barriers (Equation 1) and the barrier set of Algorithm 1.

The barrier sets of several models (every seed of a candidate, every epoch)
along every walk are one jitted call over the consecutive node pairs. Savings
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
measurements). Where the probe splits its head at the group's consumer
(`probe.Split`: BERT's FFN output below the last layer), a step's midpoint
changes the consumer's output by the terms of the neurons the step moves
(2 ceil(log2 l) of l), which replace the consumer's matmul over all l: that
halved TinyBERT's barriers of its first FFN (l = 1536).

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

from manifold_metric import permutations
from manifold_metric.permutations import PermSpec, take
from manifold_metric.probe import Probe

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
  return jax.lax.map(lambda a: loss_fn(interpolate(va, vb, a)), jnp.asarray(alphas, jnp.float32))


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
  """Distinct steps per vmapped iteration when `barrier_sets` is not told.

  Vmapping the head over steps gives every step its own weights: dense layers
  become batched matmuls and convolutions grouped ones, which XLA:CPU runs
  2-8x slower per step than plain ones (benchmarks/README.md). One step's
  head at a usual batch already keeps the CPU busy, so a plain scan (1) is
  fastest there and needs the least memory. Accelerators need more work per
  iteration to fill the device (8 is a guess, not measured).
  """
  return 1 if (platform or jax.default_backend()) == "cpu" else 8


def steps(walks: np.ndarray) -> np.ndarray:
  """sigma_i with permute(sigma_i theta, P_i) = permute(theta, P_{i+1}), per
  pair of consecutive nodes: (..., n + 1, size) walks give (..., n, size)
  gathers sigma_i = P_{i+1}[P_i^-1]."""
  walks = np.asarray(walks)
  return np.take_along_axis(walks[..., 1:, :], np.argsort(walks[..., :-1, :], axis=-1), axis=-1)


def _loop_length(u: int, n: int) -> int:
  """u distinct steps padded to a power of two up to 64, then to a multiple of
  64, at most n: few loop lengths (compilations) per model, and at most 63
  wasted evaluations."""
  return min(n, 1 << (u - 1).bit_length() if u <= 64 else -(-u // 64) * 64)


def distinct_steps(walks: np.ndarray):
  """The distinct steps of each seed's walks, padded to one length.

  Args:
    walks: (S, W, n + 1, size) nodes, W walks per seed.

  Returns:
    (sigmas, inverse): sigmas (S, U, size), seed s's distinct steps first
    (padded with its first); inverse (S, W * n), the row of sigmas[s] that
    step i of walk w of seed s is, at w * n + i.
  """
  sig = steps(walks)
  S, W, n, size = sig.shape
  flat = sig.reshape(S, W * n, size)
  rows = np.concatenate([np.repeat(np.arange(S), W * n)[:, None], flat.reshape(-1, size)], axis=1)
  distinct, inverse = np.unique(rows, axis=0, return_inverse=True)
  seed = distinct[:, 0]
  start = np.searchsorted(seed, np.arange(S))
  count = np.bincount(seed, minlength=S)
  U = _loop_length(int(count.max()), W * n)
  local = np.arange(len(distinct)) - start[seed]
  sigmas = np.repeat(distinct[start, 1:][:, None], U, axis=1)  # each seed's first step
  sigmas[seed, local] = distinct[:, 1:]
  return sigmas.astype(np.int32), (inverse.reshape(S, W * n) - start[:, None]).astype(np.int32)


def barrier_sets(
    probe: Probe,
    spec: PermSpec,
    variables,
    batches,
    walks,
    seed_of=None,
    chunk: int | None = None,
    instance_chunk: int | None = None,
    with_resolution: bool = False,
):
  """|b(theta_i, theta_{i+1})| at alpha = 0.5 along every walk, for several
  models ("instances") at once, exactly 0 where at most the loss's resolution.

  Args:
    probe, spec: the loss as head(stem(x)) and the group permuted.
    variables: the models, stacked on a leading instance axis (I); evaluated
      S (seeds) at a time.
    batches: one batch per seed, stacked on a leading seed axis (S).
    walks: (S, W, n + 1, size) nodes (`walks.seed_walks`).
    seed_of: (I,) the seed (row of batches and walks) of each instance;
      None: instance i is seed i.
    chunk: distinct steps evaluated together (vmapped); peak memory grows with
      about `chunk` heads' activations. None: `default_chunk()`.
    instance_chunk: instances evaluated together (vmapped; vmapping models
      with their own weights has the cost `default_chunk` describes); None:
      `default_chunk()`.
    with_resolution: also return each instance's resolution tau (see the
      module docstring): barriers that agree in exact arithmetic agree in
      float32 to about tau.

  Returns:
    (I, W, n) float32 barriers; with `with_resolution`, also (I,) tau.
  """
  walks = np.asarray(walks)
  if walks.ndim != 4 or walks.shape[2] < 2 or walks.shape[3] != spec.size:
    raise ValueError(
        f"walks must be (seeds, walks, n + 1, {spec.size}) permutations with "
        f"n >= 1, got shape {walks.shape}"
    )
  S, W, n1, _ = walks.shape
  seed_of = np.arange(S) if seed_of is None else np.asarray(seed_of)
  chunk = default_chunk() if chunk is None else chunk
  if chunk < 1 or (instance_chunk is not None and instance_chunk < 1):
    raise ValueError(f"chunk and instance_chunk must be positive, got {chunk}, {instance_chunk}")
  sigmas, inverse = distinct_steps(walks)
  moved = sparse_rows(sigmas) if probe.split is not None else None
  # Instances go in blocks of S (the last padded with instance 0), one call
  # of one compiled program each: the barrier sets of a model at t = 0 (one
  # instance per seed) and of its trained epochs (S per epoch) then compile
  # the same program, which JAX's persistent cache holds for the second job.
  I = len(seed_of)
  order = np.concatenate([np.arange(I), np.zeros(-I % S, int)]).reshape(-1, S)
  sigmas, blocks = jnp.asarray(sigmas), []
  for rows in order:
    blocks.append(
        _instance_barriers(
            probe,
            spec,
            jax.tree.map(lambda a: a[rows], variables),
            batches,
            sigmas,
            jnp.asarray(seed_of[rows], jnp.int32),
            moved,
            chunk,
            chunk if instance_chunk is None else instance_chunk,
        )
    )
  b, tau = (np.concatenate([np.asarray(x[k]) for x in blocks])[:I] for k in (0, 1))
  b = np.take_along_axis(b, inverse[seed_of], axis=1).reshape(I, W, n1 - 1)
  return (b, tau) if with_resolution else b


@functools.partial(jax.jit, static_argnames=("probe", "spec", "chunk", "instance_chunk"))
def _instance_barriers(
    probe: Probe,
    spec: PermSpec,
    variables,
    batches,
    sigmas,
    seed_of,
    moved,
    chunk: int,
    instance_chunk: int,
):
  """_step_barriers of every instance against its seed's batch and steps
  (and their moved neurons, or None), with its resolution."""

  def one(args):
    v, s = args
    batch = jax.tree.map(lambda a: a[s], batches)
    rows = None if moved is None else moved[s]
    return _step_barriers(probe, spec, v, batch, sigmas[s], rows, chunk)

  return jax.lax.map(
      one, (variables, seed_of), batch_size=None if instance_chunk == 1 else instance_chunk
  )


def sparse_rows(sigmas: np.ndarray) -> np.ndarray | None:
  """The neurons each step moves, for a probe with a `Split` head.

  Args:
    sigmas: (..., U, size) steps (`distinct_steps`).

  Returns:
    (..., U, M) indices, the moved neurons of each step first, then unmoved
    ones, M the most any step moves rounded up to a power of two (few
    compilations); None when M exceeds half the group, where the dense
    midpoint costs about as much.
  """
  size = sigmas.shape[-1]
  moved = sigmas != np.arange(size)
  most = max(int(moved.sum(axis=-1).max()), 1)
  M = 1 << (most - 1).bit_length()
  if 2 * M > size:
    return None
  return np.argsort(~moved, axis=-1, kind="stable")[..., :M].astype(np.int32)


def _step_barriers(probe: Probe, spec: PermSpec, variables, batch, sigmas, rows, chunk: int):
  """|b(theta, sigma theta)| at alpha = 0.5 for each row sigma of `sigmas`,
  0 where at most the resolution tau; and tau. rows: None, or each step's
  moved neurons (`sparse_rows`) for the probe's `Split` head."""
  z = probe.stem(variables, batch)

  def one(sigma):
    zm = z if spec.stem_axis is None else 0.5 * (z + take(z, sigma, spec.stem_axis, spec.size))
    return probe.head(_midpoint(spec, variables, sigma), zm, batch)

  # L(theta) is the loop's first step, the identity (its midpoint is theta,
  # bit for bit): the same compiled code as every L(mid), so that a midpoint
  # computed like theta gives exactly L(theta). (Evaluated outside the loop,
  # XLA may fuse and round it differently.)
  identity = jnp.arange(spec.size, dtype=sigmas.dtype)
  sigmas = jnp.concatenate([identity[None], sigmas])
  steps = sigmas
  if rows is not None:
    one = _split_step(probe.split, variables, z, batch)
    steps = (sigmas, jnp.concatenate([identity[None, : rows.shape[-1]], rows]))
  # batch_size=1 would still vmap (over a unit axis); None is the plain scan.
  mids = jax.lax.map(one, steps, batch_size=None if chunk == 1 else chunk)
  end = mids[0]
  b = jnp.abs(mids[1:] - end)
  tau = _resolution(probe, variables, z, batch, end)
  return jnp.where(b <= tau, jnp.zeros_like(b), b), tau


def _split_step(split, variables, z, batch):
  """The loss at the midpoint (theta + sigma theta) / 2 of a step that moves
  the neurons `rows`, from the consumer's output at theta: the midpoint's
  differs by those neurons' terms alone (`probe.Split`), M of them instead
  of the whole group (2 ceil(log2 l) of l = 1536 FFN neurons). Unmoved rows
  are masked to exact zeros, so the identity gives exactly the output at
  theta."""
  zr, carry = split.rows(variables, z, batch)
  y = split.out(variables, zr)
  w = permutations.get(variables, split.kernel)

  def one(step):
    sigma, rows = step
    other = sigma[rows]
    keep = (other != rows).astype(zr.dtype)
    zi, wi = jnp.take(zr, rows, axis=-1), w[rows]
    zm, wm = 0.5 * (zi + jnp.take(zr, other, axis=-1)), 0.5 * (wi + w[other])
    delta = (split.act(zm) * keep) @ wm - (split.act(zi) * keep) @ wi
    return split.rest(variables, carry, y + delta, batch)

  return one


def _resolution(probe: Probe, variables, z, batch, loss, eps=None):
  """RESOLUTION * eps * (|L| + sum |z * dL/dz|) (module docstring), L = `loss`
  at theta, z the stem output. One forward and backward pass of the head.
  eps: the machine epsilon of the loss's dtype unless given."""
  dz = jax.grad(lambda z_: probe.head(variables, z_, batch))(z)
  eps = jnp.finfo(loss.dtype).eps if eps is None else eps
  sensitivity = sum(
      jnp.sum(jnp.abs(a * g)) for a, g in zip(jax.tree.leaves(z), jax.tree.leaves(dz))
  )
  return RESOLUTION * eps * (jnp.abs(loss) + sensitivity)


@functools.partial(jax.jit, static_argnames="probe")
def resolution(probe: Probe, variables, batch, eps=None):
  """tau of `variables` on `batch`: `barrier_sets` reports barriers <= tau as 0."""
  z = probe.stem(variables, batch)
  return _resolution(probe, variables, z, batch, probe.head(variables, z, batch), eps)
