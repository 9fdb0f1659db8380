import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from manifold_metric import archs, bert, image_models, proxies, text, tracks

MLP = archs.MLP((5,), 3)
CNN = archs.CNN((2, 3), 8, 3)
# One block per stage (halves compile time); stages 1-3 still project.
RESNET = archs.ResNet18((2, 2, 2, 2), ((2,), (2,), (2,), (2,)), 3)


def _setup(arch, shape, batch=6, seed=0):
  """Variables with random (nonzero) leaves everywhere, and a batch, in numpy
  (eager JAX ops would each compile)."""
  shapes = jax.eval_shape(lambda k: image_models.init(arch, k, shape), jax.random.key(0))
  rng = np.random.default_rng(seed)
  v = jax.tree.map(lambda a: 0.5 * rng.standard_normal(a.shape, np.float32), shapes)
  if "batch_stats" in v:
    v["batch_stats"] = jax.tree.map(np.abs, v["batch_stats"])  # valid variances
  x = rng.standard_normal((batch, *shape), np.float32)
  return v, (x, rng.integers(0, arch.num_classes, batch))


def _np(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _stack(*trees):
  """Models or batches stacked over seeds, as the proxies take them."""
  return jax.tree.map(lambda *a: np.stack(a), *trees)


def _one(fn, arch, v, batch):
  """A proxy of one model on one batch: the only seed of a stack of one."""
  out = fn(arch, _stack(v), _stack(batch))
  return tuple(float(o[0]) for o in out) if isinstance(out, tuple) else float(out[0])


def _grad_norm(arch, v, batch):
  return _one(proxies.gradnorm_snip, arch, v, batch)[0]


def _snip(arch, v, batch):
  return _one(proxies.gradnorm_snip, arch, v, batch)[1]


def _grasp(arch, v, batch):
  return _one(proxies.grasp, arch, v, batch)


def _synflow(arch, v, batch):
  return _one(proxies.synflow, arch, v, batch)


def _jacov(arch, v, batch):
  return _one(proxies.jacov, arch, v, batch)


# ------------------------------------------------- two-layer MLP, closed forms


def _mlp_grads(p, x, y):
  """dL/dW1, dL/dW2 of mean softmax cross entropy for relu(x W1 + b1) W2 + b2."""
  w1, b1 = p["hiddens_0"]["kernel"], p["hiddens_0"]["bias"]
  w2, b2 = p["out"]["kernel"], p["out"]["bias"]
  z = x @ w1 + b1
  a = np.maximum(z, 0)
  logits = a @ w2 + b2
  s = np.exp(logits - logits.max(1, keepdims=True))
  s /= s.sum(1, keepdims=True)
  d = (s - np.eye(w2.shape[1])[y]) / len(x)
  return x.T @ ((d @ w2.T) * (z > 0)), a.T @ d


def _mlp_problem():
  v, (x, y) = _setup(MLP, (2, 2, 1))
  p = _np(v["params"])
  return v, (x, y), p, np.asarray(x, np.float64).reshape(len(x), -1), np.asarray(y)


def test_gradnorm_and_snip_match_closed_form():
  v, batch, p, x, y = _mlp_problem()
  g1, g2 = _mlp_grads(p, x, y)
  w1, w2 = p["hiddens_0"]["kernel"], p["out"]["kernel"]
  assert _grad_norm(MLP, v, batch) == pytest.approx(
      np.linalg.norm(g1) + np.linalg.norm(g2), rel=1e-5
  )
  assert _snip(MLP, v, batch) == pytest.approx(
      np.abs(w1 * g1).sum() + np.abs(w2 * g2).sum(), rel=1e-5
  )


def test_grasp_matches_finite_difference_hessian_vector_product():
  v, batch, p, x, y = _mlp_problem()
  g1, g2 = _mlp_grads(p, x, y)

  def shifted(t):  # kernels moved along g; biases fixed (they are not pruned)
    q = {"hiddens_0": dict(p["hiddens_0"]), "out": dict(p["out"])}
    q["hiddens_0"]["kernel"] = p["hiddens_0"]["kernel"] + t * g1
    q["out"]["kernel"] = p["out"]["kernel"] + t * g2
    return _mlp_grads(q, x, y)

  h = 1e-5
  (a1, a2), (b1, b2) = shifted(h), shifted(-h)
  hg1, hg2 = (a1 - b1) / (2 * h), (a2 - b2) / (2 * h)
  w1, w2 = p["hiddens_0"]["kernel"], p["out"]["kernel"]
  terms = np.concatenate([(w1 * hg1).ravel(), (w2 * hg2).ravel()])
  assert np.abs(terms).sum() > 1e-2
  assert _grasp(MLP, v, batch) == pytest.approx(
      -terms.sum(), rel=1e-3, abs=1e-4 * np.abs(terms).sum()
  )


def test_synflow_matches_closed_form():
  # At |params| with an all-ones input every pre-activation is >= 0, so
  # R = (1^T|W1| + |b1|) |W2| 1 + 1^T|b2|, dR/d|W1|_ij = (|W2| 1)_j, dR/d|W2|_jk = z_j.
  v, batch, p, _, _ = _mlp_problem()
  w1, b1 = np.abs(p["hiddens_0"]["kernel"]), np.abs(p["hiddens_0"]["bias"])
  w2 = np.abs(p["out"]["kernel"])
  z = w1.sum(0) + b1
  expected = (w1 * w2.sum(1)[None, :]).sum() + (w2 * z[:, None]).sum()
  assert _synflow(MLP, v, batch) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------ the CNN


def test_cnn_gradient_scores_match_float64_finite_differences():
  v, batch = _setup(CNN, (4, 4, 2))
  p = _np(v["params"])
  kernels = [k for k in p if "kernel" in p[k]]
  assert sorted(kernels) == ["convs_0", "convs_1", "fc", "out"]
  # The batch goes in as arguments: numpy constants closed over under x64
  # poison later float32 calls that get the same arrays (JAX 0.10).
  x, y = batch[0].astype(np.float64), batch[1]
  with jax.enable_x64(True):
    ce = jax.jit(lambda p, x, y: tracks.cross_entropy(image_models.apply(CNN, {"params": p}, x), y))
    loss = lambda p: ce(p, x, y)
    grad = lambda p: _np(jax.jit(jax.grad(ce))(p, x, y))
    g = grad(p)
    # One gradient entry per kernel checked by central differences of the loss.
    for k in kernels:
      e = np.zeros(p[k]["kernel"].shape)
      e.flat[3] = 1e-6
      fd = (
          loss({**p, k: {**p[k], "kernel": p[k]["kernel"] + e}})
          - loss({**p, k: {**p[k], "kernel": p[k]["kernel"] - e}})
      ) / 2e-6
      assert g[k]["kernel"].flat[3] == pytest.approx(float(fd), rel=1e-5, abs=1e-9)
    h = 1e-5
    step = lambda t: {k: {**p[k], "kernel": p[k]["kernel"] + t * g[k]["kernel"]} for k in p}
    gp, gm = grad(step(h)), grad(step(-h))
  hg = {k: (gp[k]["kernel"] - gm[k]["kernel"]) / (2 * h) for k in kernels}
  gradnorm = sum(np.linalg.norm(g[k]["kernel"]) for k in kernels)
  snip = sum(np.abs(p[k]["kernel"] * g[k]["kernel"]).sum() for k in kernels)
  grasp_terms = np.concatenate([np.ravel(p[k]["kernel"] * hg[k]) for k in kernels])
  assert _grad_norm(CNN, v, batch) == pytest.approx(gradnorm, rel=1e-4)
  assert _snip(CNN, v, batch) == pytest.approx(snip, rel=1e-4)
  assert _grasp(CNN, v, batch) == pytest.approx(
      -grasp_terms.sum(), rel=1e-3, abs=1e-4 * np.abs(grasp_terms).sum()
  )


def test_jacov_matches_numpy_finite_difference_jacobian():
  v, batch = _setup(CNN, (4, 4, 2), batch=5)
  x = np.asarray(batch[0], np.float64)
  n, d, h = len(x), x[0].size, 1e-6
  # Row i: d(sum of example i's logits)/dx_i, by central differences.
  eye = np.eye(d).reshape(d, *x.shape[1:]) * h
  stacked = np.concatenate([x[i] + s * eye for i in range(n) for s in (1, -1)])
  with jax.enable_x64(True):
    sums = np.asarray(jax.jit(lambda v, x: image_models.apply(CNN, v, x).sum(1))(_np(v), stacked))
  sums = sums.reshape(n, 2, d)
  jac = (sums[:, 0] - sums[:, 1]) / (2 * h)
  eig = np.linalg.eigvalsh(np.corrcoef(jac))
  expected = -np.sum(np.log(eig + 1e-5) + 1 / (eig + 1e-5))
  assert eig.min() > 1e-3  # well conditioned: float32 vs float64 is comparable
  assert _jacov(CNN, v, batch) == pytest.approx(expected, rel=1e-4)


def test_jacov_is_nan_without_warnings_when_a_jacobian_is_constant():
  v, batch = _setup(MLP, (2, 2, 1))
  v["params"]["hiddens_0"]["bias"] = np.full(5, -100.0, np.float32)  # all ReLUs dead
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert math.isnan(_jacov(MLP, v, batch))


# ------------------------------------------------------- all scores, ResNet


# The CNN case reuses the shapes above, so only SynFlow and Jacov compile anew.
@pytest.mark.parametrize(
    "arch,shape,n", [(CNN, (4, 4, 2), 6), (RESNET, (8, 8, 3), 8)], ids=["cnn", "resnet18"]
)
def test_scores_of_seeds_together_are_each_seeds_alone(arch, shape, n):
  """score_all over two seeds (vmapped): every score finite, GradNorm, SNIP and
  SynFlow positive; and each seed's what scoring it alone gives."""
  (v0, b0), (v1, b1) = _setup(arch, shape, batch=n, seed=0), _setup(arch, shape, batch=n, seed=1)
  scores = proxies.score_all(arch, _stack(v0, v1), _stack(b0, b1))
  assert set(scores) == set(proxies.NAMES)
  for name, values in scores.items():
    assert values.shape == (2,) and np.isfinite(values).all(), (name, values)
  assert (scores["gradnorm"] > 0).all() and (scores["snip"] > 0).all()
  assert (scores["synflow"] > 0).all()
  if arch is RESNET:
    return  # each stack size compiles anew: the CNN covers the comparison
  alone = proxies.score_all(arch, _stack(v1), _stack(b1))
  for name in proxies.NAMES:
    # vmapped matmuls round differently in the last bits; Jacov's log of small
    # eigenvalues amplifies that most.
    assert scores[name][1] == pytest.approx(alone[name][0], rel=1e-4), name
  assert scores["gradnorm"][0] != pytest.approx(scores["gradnorm"][1], rel=1e-3)


def test_synflow_ignores_batch_norm_state_but_not_kernels():
  v, batch = _setup(RESNET, (8, 8, 3), batch=8)
  base = _synflow(RESNET, v, batch)
  other, _ = _setup(RESNET, (8, 8, 3))
  bn = lambda path: any("bn" in getattr(k, "key", "") for k in path)
  # Every BN scale/bias and running statistic replaced by different values.
  swapped = jax.tree_util.tree_map_with_path(
      lambda path, a, b: 3 * b if path[0].key == "batch_stats" or bn(path) else a, v, other
  )
  assert _synflow(RESNET, swapped, batch) == pytest.approx(base, rel=1e-12)
  doubled = {
      **v,
      "params": {
          **v["params"],
          "out": {**v["params"]["out"], "kernel": 2 * v["params"]["out"]["kernel"]},
      },
  }
  assert _synflow(RESNET, doubled, batch) > 1.5 * base


def test_scores_compiled_for_one_run_are_those_compiled_for_speed():
  """The study's build (`proxies.ONCE`) and Table 4's agree to float32 rounding."""
  v, batch = _setup(CNN, (6, 6, 1))
  for fn in (proxies.gradnorm_snip, proxies.grasp, proxies.synflow, proxies.jacov):
    once, fast = (np.asarray(fn(CNN, _stack(v), _stack(batch), once=o)) for o in (True, False))
    np.testing.assert_allclose(once, fast, rtol=1e-5, err_msg=fn.__name__)


def test_study_scores_of_one_gradient_are_each_score_alone():
  """score_all computes GradNorm, SNIP and GraSP in one program from one
  gradient: the scores of their own programs, to float32 rounding."""
  v, batch = _setup(CNN, (6, 6, 1))
  scores = proxies.score_all(CNN, _stack(v), _stack(batch))
  gradnorm, snip = proxies.gradnorm_snip(CNN, _stack(v), _stack(batch))
  grasp = proxies.grasp(CNN, _stack(v), _stack(batch))
  for name, alone in (("gradnorm", gradnorm), ("snip", snip), ("grasp", grasp)):
    np.testing.assert_allclose(scores[name], alone, rtol=1e-5, err_msg=name)


def test_time_proxies_reports_every_proxy():
  v, batch = _setup(MLP, (2, 2, 1))
  times = proxies.time_proxies(MLP, _stack(v), _stack(batch), repeats=2)
  assert set(times) == set(proxies.NAMES)
  assert all(0 < t < 10 for t in times.values())


# ------------------------------------------------------------------------ BERT

# max_len exceeds the sequences' length L = 6: SynFlow's input is (1, L, hidden).
BERT = archs.BERT(layers=1, hidden=4, heads=2, ffn=(6,), vocab_size=13, max_len=8)
BERT_KERNELS = sorted(
    [("layers_0", "attention", n, "kernel") for n in ("query", "key", "value", "out")]
    + [("layers_0", "ffn_in", "kernel"), ("layers_0", "ffn_out", "kernel"), ("mlm_dense", "kernel")]
)


def _probe_batch(mlm):
  """`bert.probe_batches` of one masked batch, without the seed axis."""
  return tuple(a[0] for a in bert.probe_batches(tuple(np.asarray(a)[None] for a in mlm)))


def _bert_setup(n=5, seq_len=6, rate=0.4, seed=0):
  """Random (nonzero) float32 variables, the MLM batch (inputs, labels,
  weights) and its probe_batch, in numpy."""
  shapes = jax.eval_shape(lambda k: bert.init(BERT, k), jax.random.key(0))
  rng = np.random.default_rng(seed)
  v = jax.tree.map(lambda a: 0.5 * rng.standard_normal(a.shape, np.float32), shapes)
  seqs = rng.integers(len(text.SPECIALS), BERT.vocab_size, (n, seq_len))
  mlm = tuple(
      np.asarray(a)
      for a in text.mask_tokens(jax.random.key(1 + seed), seqs, BERT.vocab_size, rate=rate)
  )
  batch = _probe_batch(mlm)
  assert 3 < len(batch[1]) < n * seq_len  # some positions are masked, not all
  return v, mlm, batch


def _kernel_vector(params):
  """The kernels of a flat {path: float64 array} as one vector, and a jnp
  function theta -> params with the kernels replaced by theta's entries."""
  flat = {k: np.asarray(a, np.float64) for k, a in traverse_util.flatten_dict(params).items()}
  keys = sorted(k for k in flat if k[-1] == "kernel")
  assert keys == BERT_KERNELS
  offsets = np.cumsum([0] + [flat[k].size for k in keys])

  def with_kernels(theta, flat):
    new = dict(flat)
    for k, a, b in zip(keys, offsets[:-1], offsets[1:]):
      new[k] = theta[a:b].reshape(flat[k].shape)
    return traverse_util.unflatten_dict(new)

  return np.concatenate([flat[k].ravel() for k in keys]), flat, with_kernels


def _central(f, theta, h):
  """Central differences of f: (m, n) -> (m,) (vectorized) at theta, per entry."""
  e = h * np.eye(theta.size)
  vals = np.asarray(f(np.concatenate([theta + e, theta - e])))
  return (vals[: theta.size] - vals[theta.size :]) / (2 * h)


def test_bert_gradient_scores_match_float64_finite_differences():
  v, (inputs, labels, weights), batch = _bert_setup()
  theta, flat, with_kernels = _kernel_vector(v["params"])
  module = bert.build(BERT)

  def loss(theta, flat, inputs, labels, weights):
    # The full forward pass on all positions; the mean over the masked ones.
    logits = module.apply({"params": with_kernels(theta, flat)}, inputs)
    ce = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[..., None], -1)[..., 0]
    return (ce * weights).sum() / weights.sum()

  args = flat, inputs, labels, weights.astype(np.float64)
  with jax.enable_x64(True):
    losses = jax.jit(jax.vmap(loss, (0, None, None, None, None)))
    g = _central(lambda thetas: losses(thetas, *args), theta, 1e-6)
    # H g: central differences of this loss's (autodiff) gradient along g.
    # (Differences of differences lose too many digits to check GraSP.)
    grad = jax.jit(jax.grad(loss))
    t = 1e-3
    hg = (np.asarray(grad(theta + t * g, *args)) - np.asarray(grad(theta - t * g, *args))) / (2 * t)
  offsets = np.cumsum([0] + [flat[k].size for k in BERT_KERNELS])
  per_kernel = [slice(a, b) for a, b in zip(offsets[:-1], offsets[1:])]
  gradnorm = sum(np.linalg.norm(g[s]) for s in per_kernel)
  grasp_terms = theta * hg
  assert np.abs(grasp_terms).sum() > 1e-2
  with jax.enable_x64(True):  # the proxies in float64 too, so tolerances can be tight
    assert _grad_norm(BERT, _np(v), batch) == pytest.approx(gradnorm, rel=1e-6)
    assert _snip(BERT, _np(v), batch) == pytest.approx(np.abs(theta * g).sum(), rel=1e-6)
    assert _grasp(BERT, _np(v), batch) == pytest.approx(-grasp_terms.sum(), rel=1e-6)


def test_bert_synflow_matches_float64_finite_differences():
  # R = sum of the encoder's logits (all L positions) for an all-ones
  # embedding output, at |params|; dR/dw by central differences.
  v, (inputs, _, _), batch = _bert_setup()
  absolute = jax.tree.map(np.abs, v["params"])
  theta, flat, with_kernels = _kernel_vector(absolute)
  module = bert.build(BERT)
  ones = np.ones((1, inputs.shape[1], BERT.hidden))

  def r(theta, flat, ones):
    return module.apply({"params": with_kernels(theta, flat)}, ones, method="encode").sum()

  with jax.enable_x64(True):
    rs = jax.jit(jax.vmap(r, (0, None, None)))
    dr = _central(lambda thetas: rs(thetas, flat, ones), theta, 1e-6)
  assert _synflow(BERT, v, batch) == pytest.approx(np.abs(theta * dr).sum(), rel=1e-7)


def test_bert_jacov_matches_numpy_finite_difference_jacobian():
  v, (inputs, _, _), batch = _bert_setup()
  module = bert.build(BERT)
  v64 = _np(v)
  h = 1e-6
  with jax.enable_x64(True):
    e = np.asarray(jax.jit(lambda v, ids: module.apply(v, ids, method="embed"))(v64, inputs))
    n, d = len(e), e[0].size
    # Row i: d(sum of sequence i's logits)/d(its embedding output), by central
    # differences; every perturbed sequence is encoded on its own row.
    eye = np.eye(d).reshape(d, *e.shape[1:]) * h
    stacked = np.concatenate([e[i] + s * eye for i in range(n) for s in (1, -1)])
    sums = jax.jit(lambda v, x: module.apply(v, x, method="encode").sum((1, 2)))(v64, stacked)
  sums = np.asarray(sums).reshape(n, 2, d)
  jac = (sums[:, 0] - sums[:, 1]) / (2 * h)
  eig = np.linalg.eigvalsh(np.corrcoef(jac))
  expected = -np.sum(np.log(eig + 1e-5) + 1 / (eig + 1e-5))
  assert eig.min() > 1e-3  # well conditioned
  with jax.enable_x64(True):
    assert _jacov(BERT, v64, batch) == pytest.approx(expected, rel=1e-6)


@pytest.fixture(scope="module")
def tinybert_problem():
  """The tinybert preset (2 layers, hidden 128, FFN 512) at BERT's initialization
  (drawn in numpy: compiling Flax's is slow), two seeds, each on a metric batch of
  8 sequences of 32 tokens from a 200-word vocabulary."""
  arch = archs.with_data(archs.make({"kind": "bert"}), vocab_size=200, max_len=32)
  shapes = jax.eval_shape(lambda: bert.init(arch, jax.random.key(0)))
  models, batches = [], []
  for seed in (0, 1):
    rng = np.random.default_rng(seed)

    def draw(path, s):
      name = jax.tree_util.keystr(path)
      if "scale" in name:
        return np.ones(s.shape)
      return np.zeros(s.shape) if "bias" in name else rng.normal(0, 0.02, s.shape)

    models.append(
        jax.tree_util.tree_map_with_path(lambda p, s: np.asarray(draw(p, s), s.dtype), shapes)
    )
    seqs = rng.integers(len(text.SPECIALS), 200, (8, 32))
    batches.append(text.mask_tokens(jax.random.key(seed), seqs, 200))
  batch = bert.probe_batches(tuple(np.stack(a) for a in zip(*batches)))
  return arch, _stack(*models), batch


def test_bert_scores_finite(tinybert_problem):
  arch, v, batch = tinybert_problem
  scores = proxies.score_all(arch, v, batch)
  assert set(scores) == set(proxies.NAMES)
  for name, values in scores.items():
    assert values.shape == (2,) and np.isfinite(values).all(), (name, values)
  assert (scores["gradnorm"] > 0).all() and (scores["snip"] > 0).all()
  assert (scores["synflow"] > 0).all()


def test_bert_scores_of_seeds_together_are_each_seeds_alone():
  """Seeds mask different numbers of positions: stacked, the probe batch of the
  one with fewer is padded at weight 0, which changes none of its scores."""
  setups = [_bert_setup(seed=0), _bert_setup(seed=1)]
  batch = bert.probe_batches(tuple(np.stack(a) for a in zip(setups[0][1], setups[1][1])))
  i = int(np.argmin([len(b[1]) for _, _, b in setups]))  # the padded one
  v, _, alone_batch = setups[i]
  assert batch[1].shape[1] > len(alone_batch[1])
  together = proxies.score_all(BERT, _stack(setups[0][0], setups[1][0]), batch)
  alone = proxies.score_all(BERT, _stack(v), _stack(alone_batch))
  for name in proxies.NAMES:
    assert together[name][i] == pytest.approx(alone[name][0], rel=1e-4), name
  assert together["gradnorm"][0] != pytest.approx(together["gradnorm"][1], rel=1e-3)


def test_bert_time_proxies_reports_every_proxy(tinybert_problem):
  times = proxies.time_proxies(*tinybert_problem, repeats=1)
  assert set(times) == set(proxies.NAMES)
  assert all(0 < t < 10 for t in times.values()), times
