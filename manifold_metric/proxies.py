"""Zero-cost proxy baselines (Section 4.2, Appendix A.2.3) on one training
batch, for every seed's model at once.

As adapted by Abdelfattah et al. (2021) and compared by White et al. (2021):
per-weight scores over the kernels of the dense and conv layers (leaves named
'kernel' under variables['params']), summed over all kernels and layers.
The loss is the probe's (`probe.Probe.loss`) on the metric batch: the cross
entropy of an image classifier (BatchNorm with batch statistics, like the
barrier engine and the PyTorch reference, which scores nets in train mode),
and for BERT the mean cross entropy over the masked positions. BERT's kernels
are the attention query/key/value/out, FFN in/out and MLM dense kernels; the
token embedding (tied to the output projection), the position embeddings,
LayerNorms and biases are not kernels and get no score.

SynFlow and Jacov differentiate the network with respect to its input
(`tracks` `features`): the image, or for BERT the embedding output (the
encoder's input after the embedding LayerNorm), since an all-ones input and
an input Jacobian are undefined for token ids. SynFlow then feeds an all-ones
(1, L, hidden) tensor to the encoder, and Jacov differentiates the summed
logits (all positions) with respect to the embedding output, one row per
sequence.

Each score is one jitted core, vmapped over seeds and compiled once per arch,
so that `time_scores` measures computation, not compilation. A study scores
each model once, so there the cores are compiled for compile time, not run
time (`ONCE`); Table 4 (`time_proxies`) times the default build.
"""

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from manifold_metric import archs, image_models, probe, tracks

JACOV_K = 1e-5  # Mellor et al.'s eigenvalue offset
_BN_EPS = 1e-5  # image_models._bn's epsilon; var = 1 - eps makes eval-mode BN exactly x
NAMES = ("gradnorm", "snip", "grasp", "synflow", "jacov")
# XLA options for a program that runs once: LLVM at -O0 compiles TinyBERT's
# GraSP in 3.7 s instead of 5.7 s, and its one run takes about as long.
ONCE = {"xla_backend_optimization_level": 0}


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
      if k[:-1] in bn_modules
      else v
      for k, v in traverse_util.flatten_dict(variables["params"]).items()
  }
  stats = {
      k: jnp.zeros_like(v) if k[-1] == "mean" else jnp.full_like(v, 1 - _BN_EPS)
      for k, v in stats.items()
  }
  return {
      **variables,
      "params": traverse_util.unflatten_dict(params),
      "batch_stats": traverse_util.unflatten_dict(stats),
  }


@functools.cache
def _cores(arch: archs.Arch, once: bool) -> dict:
  """The jitted score cores of an architecture, each vmapped over seeds;
  compiled with ONCE if `once`."""
  track, loss_of = tracks.of(arch), probe.probe(arch)
  bn = image_models.has_batch_norm(arch) if not archs.is_lm(arch) else False

  def loss(params, variables, batch):
    return loss_of.loss({**variables, "params": params}, batch)

  grad = jax.grad(loss)

  def gradnorm_snip_of(w, g):
    return _kernel_sum(jnp.linalg.norm, g), _kernel_sum(_saliency, w, g)

  def gradnorm_snip(variables, batch):
    w = variables["params"]
    return gradnorm_snip_of(w, grad(w, variables, batch))

  def grasp_of(w, g, variables, batch):
    # Only kernels are pruning weights: a tangent that is zero on the other
    # params makes the kernel block of the jvp output H_kk g_k.
    g = jax.tree_util.tree_map_with_path(lambda p, x: x if _is_kernel(p) else jnp.zeros_like(x), g)
    hg = jax.jvp(lambda w: grad(w, variables, batch), (w,), (g,))[1]
    return _kernel_sum(lambda w, hg: -(w * hg).sum(), w, hg)

  def grasp(variables, batch):
    w = variables["params"]
    return grasp_of(w, grad(w, variables, batch), variables, batch)

  def gradient_scores(variables, batch):
    # GradNorm, SNIP and GraSP from one gradient, in one program: a study
    # scores each model once, and compiles one program instead of two.
    w = variables["params"]
    g = grad(w, variables, batch)
    return (*gradnorm_snip_of(w, g), grasp_of(w, g, variables, batch))

  def synflow(variables, batch):
    # Tanaka et al.: |params|, an all-ones input, R = sum of the logits, in
    # float64 (the caller enables x64) so that R does not overflow.
    shape = track.features(arch, variables, batch).shape[1:]
    variables = jax.tree.map(lambda a: jnp.abs(a.astype(jnp.float64)), variables)
    if bn:  # the reference scores a copy without BatchNorm (bn=False)
      variables = _bn_identity(variables)
    ones = jnp.ones((1, *shape), jnp.float64)
    r = lambda p: track.logits_of_features(arch, {**variables, "params": p}, ones, False).sum()
    w = variables["params"]
    return _kernel_sum(_saliency, w, jax.grad(r)(w))

  def jacobian(variables, batch):
    # Mellor et al.: backward of ones through the logits (train mode, as the
    # reference, so BatchNorm couples the examples), one row per example;
    # sequences do not interact, so the gradient of the summed logits holds
    # each sequence's Jacobian.
    x = track.features(arch, variables, batch)
    f = lambda x: track.logits_of_features(arch, variables, x, bn).sum()
    return jax.grad(f)(x).reshape(x.shape[0], -1)

  return {
      name: jax.jit(jax.vmap(fn), compiler_options=ONCE if once else None)
      for name, fn in dict(
          gradnorm_snip=gradnorm_snip,
          grasp=grasp,
          gradient_scores=gradient_scores,
          synflow=synflow,
          jacobian=jacobian,
      ).items()
  }


def gradnorm_snip(arch: archs.Arch, variables, batches, once: bool = True):
  """(GradNorm, SNIP) per seed: sum over kernels of ||dL/dW||_2 (Frobenius),
  and sum over kernel entries of |w * dL/dw| (Lee et al., 2018).

  Args:
    arch: the architecture.
    variables: one model per seed, stacked.
    batches: each seed's metric batch, stacked (`tracks.metric_batches`);
      so for every score.
    once: compiled for one run (`ONCE`), or for speed; so for every score.
  """
  g, s = _cores(arch, once)["gradnorm_snip"](variables, batches)
  return np.asarray(g, np.float64), np.asarray(s, np.float64)


def grasp(arch: archs.Arch, variables, batches, once: bool = True) -> np.ndarray:
  """Per seed: sum over kernel entries of -w * (H g), g = dL/dw over all
  kernels (Wang et al., 2020)."""
  return np.asarray(_cores(arch, once)["grasp"](variables, batches), np.float64)


def synflow(arch: archs.Arch, variables, batches, once: bool = True) -> np.ndarray:
  """Per seed: sum over kernel entries of |w * dR/dw| at |params| (Tanaka et
  al., 2020).

  R is the sum of the logits of one all-ones input, in float64; for BERT the
  all-ones (1, L, hidden) tensor is the encoder's input in place of the
  embedding output, and R sums the logits of all L positions (every position
  is then the same, so attention is uniform and the query/key kernels score
  0). BatchNorm models are scored without BatchNorm effects, as the
  reference's BN-free copy: every BN layer is set to the identity (running
  mean 0, var 1 - eps, scale 1, bias 0) and applied in eval mode.
  """
  with jax.enable_x64(True):
    return np.asarray(_cores(arch, once)["synflow"](variables, batches), np.float64)


def jacov(arch: archs.Arch, variables, batches, once: bool = True) -> np.ndarray:
  """Per seed: -sum(log(v + k) + 1 / (v + k)) over the eigenvalues v of the
  correlation matrix of the per-example input Jacobians (Mellor et al.,
  2021), k = 1e-5. For BERT the Jacobian of a sequence's summed logits (all
  positions) is taken with respect to its embedding output (L x hidden).

  The Jacobian is jitted; the correlation and eigenvalues are computed in
  float64 numpy as in the reference. NaN for a seed where an example's
  Jacobian is constant (e.g. all its ReLUs are dead): its correlations are
  undefined.
  """
  jac = np.asarray(_cores(arch, once)["jacobian"](variables, batches), np.float64)
  centered = jac - jac.mean(axis=2, keepdims=True)
  norm = np.linalg.norm(centered, axis=2, keepdims=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    unit = centered / norm
  out = np.full(len(jac), math.nan)
  ok = np.isfinite(unit).all(axis=(1, 2))
  if ok.any():
    corr = np.clip(unit[ok] @ unit[ok].transpose(0, 2, 1), -1.0, 1.0)
    v = np.linalg.eigvalsh(corr)
    out[ok] = -np.sum(np.log(v + JACOV_K) + 1.0 / (v + JACOV_K), axis=1)
  return out


def score_all(arch: archs.Arch, variables, batches) -> dict[str, np.ndarray]:
  """Every proxy (NAMES), each an array over seeds, compiled for one run
  (`ONCE`); GradNorm, SNIP and GraSP share one gradient and program."""
  gradnorm, snip, grasp_ = (
      np.asarray(a, np.float64) for a in _cores(arch, True)["gradient_scores"](variables, batches)
  )
  return {
      "gradnorm": gradnorm,
      "snip": snip,
      "grasp": grasp_,
      "synflow": synflow(arch, variables, batches),
      "jacov": jacov(arch, variables, batches),
  }


def time_proxies(arch: archs.Arch, variables, batches, repeats: int = 3) -> dict[str, float]:
  """Mean seconds per call of each proxy after a warm-up (compiling) call,
  each compiled for speed.

  The calls return numpy arrays, so each timing waits for the device.
  GradNorm and SNIP share one gradient: each is charged the shared call.
  """
  calls = {
      "gradnorm": gradnorm_snip,
      "snip": gradnorm_snip,
      "grasp": grasp,
      "synflow": synflow,
      "jacov": jacov,
  }
  times = {}
  for name, fn in calls.items():
    fn(arch, variables, batches, once=False)
    start = time.perf_counter()
    for _ in range(repeats):
      fn(arch, variables, batches, once=False)
    times[name] = (time.perf_counter() - start) / repeats
  return times
