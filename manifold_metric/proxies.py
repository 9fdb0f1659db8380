"""Zero-cost proxy baselines (Section 4.2, Appendix A.2.3) on one training batch.

As adapted by Abdelfattah et al. (2021) and compared by White et al. (2021):
per-weight scores over the kernels of the dense and conv layers (leaves named
'kernel' under variables['params']), summed over all kernels and layers.
The loss is the model's cross entropy on `batch = (x, y)`; BatchNorm models use
batch statistics (train=True), like the barrier engine and the PyTorch
reference, which scores nets in train mode.

BERT (arch["kind"] == "bert") is scored on the metric's masked-LM batch,
`bert.probe_batch(text.mask_tokens(...))` = (inputs, flat indices of the
masked positions, their labels): the loss of GradNorm, SNIP and GraSP is the
mean cross entropy over the masked positions (as `bert.probe`'s head). Its
kernels are the attention query/key/value/out, FFN in/out and MLM dense
kernels; the token embedding (tied to the output projection), the position
embeddings, LayerNorms and biases are not kernels and get no score.
SynFlow's all-ones input and Jacov's input Jacobian are undefined for token
ids, so both are taken at the embedding output (the encoder's input, after
the embedding LayerNorm): SynFlow feeds an all-ones (1, L, hidden) tensor to
the encoder, and Jacov differentiates the summed logits (all positions) with
respect to `embed(inputs)`, one row per sequence.

Each proxy is a jitted core compiled once per arch (cached on the arch's JSON),
so that `time_scores` measures computation, not compilation. (BERT's
gradient cores also recompile for each new number of masked positions.)
"""

import functools
import json
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from manifold_metric import bert, models

JACOV_K = 1e-5  # Mellor et al.'s eigenvalue offset
_BN_EPS = 1e-5  # models._bn's epsilon; var = 1 - eps makes eval-mode BN exactly x


def _is_kernel(path) -> bool:
  return getattr(path[-1], "key", None) == "kernel"


def _kernel_sum(fn, *trees):
  """sum over kernel leaves of fn(leaf, ...); `trees` share the params structure."""
  leaves = [jax.tree_util.tree_leaves_with_path(t) for t in trees]
  return sum(fn(*(leaf for _, leaf in ls)) for ls in zip(*leaves) if _is_kernel(ls[0][0]))


def _saliency(w, g):
  return jnp.abs(w * g).sum()


def _bn_identity(variables):
  """BatchNorm as the identity in eval mode: mean 0, var 1 - eps, scale 1, bias 0."""
  stats = traverse_util.flatten_dict(variables["batch_stats"])
  bn_modules = {k[:-1] for k in stats}
  params = {
      k: (jnp.ones_like(v) if k[-1] == "scale" else jnp.zeros_like(v))
      if k[:-1] in bn_modules else v
      for k, v in traverse_util.flatten_dict(variables["params"]).items()}
  stats = {k: jnp.zeros_like(v) if k[-1] == "mean" else jnp.full_like(v, 1 - _BN_EPS)
           for k, v in stats.items()}
  return {**variables, "params": traverse_util.unflatten_dict(params),
          "batch_stats": traverse_util.unflatten_dict(stats)}


def _abs64(variables):
  return jax.tree.map(lambda a: jnp.abs(a.astype(jnp.float64)), variables)


def _image_track(arch: dict):
  """(loss, synflow, jacobian) of an image classifier."""
  train = models.has_batch_norm(arch)

  def loss(params, variables, batch):
    x, y = batch
    return models.cross_entropy(
        models.logits(arch, {**variables, "params": params}, x, train), y)

  def synflow(variables, x):
    # Tanaka et al.: |params|, an all-ones input, R = sum of the logits, in
    # float64 (the caller enables x64) so that R does not overflow.
    variables = _abs64(variables)
    if train:  # the reference scores a copy without BatchNorm (bn=False)
      variables = _bn_identity(variables)
    ones = jnp.ones((1, *x.shape[1:]), jnp.float64)
    r = lambda p: models.logits(arch, {**variables, "params": p}, ones, False).sum()
    w = variables["params"]
    return _kernel_sum(_saliency, w, jax.grad(r)(w))

  def jacobian(variables, x):
    # Mellor et al.: backward of ones through the logits (train mode, as the
    # reference, so BatchNorm couples the examples), one row per example.
    f = lambda x: models.logits(arch, variables, x, train).sum()
    return jax.grad(f)(x).reshape(x.shape[0], -1)

  return loss, synflow, jacobian


def _bert_track(arch: dict):
  """(loss, synflow, jacobian) of BERT on batches from `bert.probe_batch`."""
  module = bert.build(arch)

  def embed(variables, ids):
    return module.apply(variables, ids, method="embed")

  def encode(variables, x, positions=None):
    return module.apply(variables, x, positions=positions, method="encode")

  def loss(params, variables, batch):
    ids, positions, labels = batch
    v = {**variables, "params": params}
    return optax.softmax_cross_entropy_with_integer_labels(
        encode(v, embed(v, ids), positions), labels).mean()

  def synflow(variables, ids):
    # As for images, but the all-ones input replaces the embedding output.
    variables = _abs64(variables)
    ones = jnp.ones((1, ids.shape[1], arch["hidden"]), jnp.float64)
    r = lambda p: encode({**variables, "params": p}, ones).sum()
    w = variables["params"]
    return _kernel_sum(_saliency, w, jax.grad(r)(w))

  def jacobian(variables, ids):
    # Sequences do not interact, so the gradient of the summed logits with
    # respect to the embedding output holds each sequence's Jacobian.
    f = lambda x: encode(variables, x).sum()
    return jax.grad(f)(embed(variables, ids)).reshape(ids.shape[0], -1)

  return loss, synflow, jacobian


@functools.lru_cache(maxsize=None)
def _cores(arch_json: str) -> dict[str, Callable]:
  arch = json.loads(arch_json)
  track = _bert_track if arch["kind"] == "bert" else _image_track
  loss, synflow, jacobian = track(arch)
  grad = jax.grad(loss)

  def loss_grad(variables, batch):
    return grad(variables["params"], variables, batch)

  def grasp(variables, batch):
    # Only kernels are pruning weights: a tangent that is zero on the other
    # params makes the kernel block of the jvp output H_kk g_k.
    w = variables["params"]
    g = grad(w, variables, batch)
    g = jax.tree_util.tree_map_with_path(
        lambda p, x: x if _is_kernel(p) else jnp.zeros_like(x), g)
    hg = jax.jvp(lambda w: grad(w, variables, batch), (w,), (g,))[1]
    return _kernel_sum(lambda w, hg: -(w * hg).sum(), w, hg)

  return {name: jax.jit(fn) for name, fn in dict(
      grad=loss_grad, grasp=grasp, synflow=synflow, jacobian=jacobian).items()}


def _core(arch: dict, name: str) -> Callable:
  return _cores(json.dumps(arch, sort_keys=True))[name]


# GradNorm and SNIP share the arch's compiled gradient (one compile fewer).
_gradnorm = jax.jit(lambda g: _kernel_sum(jnp.linalg.norm, g))
_snip = jax.jit(lambda w, g: _kernel_sum(_saliency, w, g))


def grad_norm(arch: dict, variables, batch) -> float:
  """sum over kernels of ||dL/dW||_2 (Frobenius).

  `batch` is (x, y) for images, `bert.probe_batch`'s triple for BERT (L is
  then the mean cross entropy over the masked positions); so for every score.
  """
  return float(_gradnorm(_core(arch, "grad")(variables, batch)))


def snip(arch: dict, variables, batch) -> float:
  """sum over kernel entries of |w * dL/dw| (Lee et al., 2018)."""
  return float(_snip(variables["params"], _core(arch, "grad")(variables, batch)))


def grasp(arch: dict, variables, batch) -> float:
  """sum over kernel entries of -w * (H g), g = dL/dw over all kernels (Wang et al., 2020)."""
  return float(_core(arch, "grasp")(variables, batch))


def synflow(arch: dict, variables, batch) -> float:
  """sum over kernel entries of |w * dR/dw| at |params| (Tanaka et al., 2020).

  R is the sum of the logits of one all-ones example, in float64; for BERT
  the all-ones (1, L, hidden) tensor is the encoder's input in place of the
  embedding output, and R sums the logits of all L positions (every position
  is then the same, so attention is uniform and the query/key kernels score
  0). BatchNorm
  models are scored without BatchNorm effects, as the reference's BN-free
  copy: every BN layer is set to the identity (running mean 0, var 1 - eps,
  scale 1, bias 0) and applied in eval mode.
  """
  with jax.enable_x64(True):
    return float(_core(arch, "synflow")(variables, batch[0]))


def jacov(arch: dict, variables, batch) -> float:
  """-sum(log(v + k) + 1 / (v + k)) over the eigenvalues v of the correlation
  matrix of the per-example input Jacobians (Mellor et al., 2021), k = 1e-5.
  For BERT the Jacobian of a sequence's summed logits (all positions) is
  taken with respect to its embedding output `embed(inputs)` (L x hidden).

  The Jacobian is jitted; the correlation and eigenvalues are computed in
  float64 numpy as in the reference. NaN if an example's Jacobian is constant
  (e.g. all its ReLUs are dead): its correlations are undefined.
  """
  jac = np.asarray(_core(arch, "jacobian")(variables, batch[0]), np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    corr = np.corrcoef(jac)
  if not np.isfinite(corr).all():
    return math.nan
  v = np.linalg.eigvalsh(corr)
  return float(-np.sum(np.log(v + JACOV_K) + 1.0 / (v + JACOV_K)))


SCORES = {"gradnorm": grad_norm, "snip": snip, "grasp": grasp,
          "synflow": synflow, "jacov": jacov}


def score_all(arch: dict, variables, batch) -> dict[str, float]:
  return {name: fn(arch, variables, batch) for name, fn in SCORES.items()}


def time_scores(arch: dict, variables, batch, repeats: int = 3) -> dict[str, float]:
  """Mean seconds per call of each score after a warm-up (compiling) call.

  The calls return Python floats, so each timing waits for the device.
  """
  times = {}
  for name, fn in SCORES.items():
    fn(arch, variables, batch)
    start = time.perf_counter()
    for _ in range(repeats):
      fn(arch, variables, batch)
    times[name] = (time.perf_counter() - start) / repeats
  return times
