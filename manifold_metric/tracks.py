"""The one place that chooses between the two tracks: image classifiers
(MLP, CNN, ResNet18 on images) and BERT (masked language modelling on text).

`of(arch)` returns the track of an architecture; everything that differs
between the tracks is a method of it: the Flax module, initialisation, the
neuron groups, a training batch and its loss, the validation score, the
single metric batch of a seed, and the loss split as head(stem(x)) that the
barrier engine and the proxies evaluate. The rest of the package calls these
and never branches on the kind.

Batches: (x, y) for images; for BERT, training batches are (inputs, labels,
weights) as `text.mask_tokens` makes them, and probe batches (`metric_batches`)
are (inputs, flat masked positions, their labels, weights) as
`bert.probe_batches` makes them.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from manifold_metric import archs, bert, data, image_models, text


def cross_entropy(logits, labels, weights=None):
  """Mean cross-entropy with integer labels; with `weights`, the weighted mean."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  if weights is None:
    return ce.mean()
  return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def batch_indices(n: int, seed: int, size: int) -> np.ndarray:
  """The sorted indices of a seed's metric batch among n training examples."""
  if size > n:
    raise ValueError(
        f"a metric batch of {size} (config key metric.batch_size, or "
        f"lm.metric_batch_size for BERT) needs at least {size} training "
        f"examples; the data has {n}"
    )
  return np.sort(np.random.default_rng([seed, 1]).permutation(n)[:size])


class _Image:
  """MLP, CNN and ResNet18 on images, scored by validation accuracy."""

  name = "image"
  drop_remainder = False  # every training example in every epoch

  def build(self, arch):
    return image_models.build(arch)

  def neuron_groups(self, arch):
    return image_models.neuron_groups(arch)

  def arch(self, model: dict, ds: dict):
    return archs.with_data(archs.make(model), num_classes=ds["num_classes"])

  def init(self, arch, key, ds):
    return image_models.init(arch, key, ds["x_train"].shape[1:])

  def train_data(self, ds):
    return ds["x_train"], ds["y_train"]

  def train_batch(self, arch, train, rows, key):
    x, y = train
    return x[rows], y[rows]

  def train_loss(self, arch, variables, batch):
    """(loss, variables with BatchNorm's running statistics updated)."""
    module, x = self.build(arch), batch[0]
    if image_models.has_batch_norm(arch):
      out, new = module.apply(variables, x, train=True, mutable=["batch_stats"])
      return cross_entropy(out, batch[1]), {**variables, **new}
    return cross_entropy(module.apply(variables, x), batch[1]), variables

  def val_data(self, ds):
    return ds["x_val"], ds["y_val"]

  def evaluate(self, arch, variables, val, hp):
    """Validation accuracy (BatchNorm's running statistics), jittable."""
    x, y = val
    module, bs = self.build(arch), 1024
    nb = -(-len(x) // bs)
    pad = lambda a: jnp.pad(a, [(0, nb * bs - len(a))] + [(0, 0)] * (a.ndim - 1))
    valid = pad(jnp.ones(len(x), bool)).reshape(nb, bs)

    def one(xy):
      xb, yb, ok = xy
      return jnp.sum((jnp.argmax(module.apply(variables, xb), -1) == yb) & ok)

    correct = jax.lax.map(
        one, (pad(x).reshape(nb, bs, *x.shape[1:]), pad(y).reshape(nb, bs), valid)
    )
    acc = correct.sum() / len(x)
    return {"val_acc": acc, "performance": acc}

  def chance(self, arch, ds):
    """(performance of a model that knows nothing, its loss, the best performance)."""
    majority = np.bincount(ds["y_val"]).max() / len(ds["y_val"])
    return float(majority), math.log(arch.num_classes), 1.0

  def preservation_tolerance(self, before: float) -> float:
    return 0.0  # the same function predicts the same classes

  def metric_batches(self, arch, ds, seeds, size):
    idx = np.stack([batch_indices(len(ds["x_train"]), s, size) for s in seeds])
    return ds["x_train"][idx], ds["y_train"][idx]

  def stem(self, arch, group):
    """The group's probe stem: the first layer's pre-activation for every
    group (the engine mixes the other groups' weights into the head)."""
    train = image_models.has_batch_norm(arch)
    return lambda v, batch: image_models.apply(arch, v, batch[0], train=train, method="stem")

  def head(self, arch, group):
    train = image_models.has_batch_norm(arch)
    return lambda v, z, batch: cross_entropy(
        image_models.apply(arch, v, z, train=train, method="head"), batch[1]
    )

  def split(self, arch, group):
    return None  # groups of a few neurons: a midpoint moves most of them

  def features(self, arch, variables, batch):
    """The input the proxies SynFlow and Jacov differentiate: the image."""
    return batch[0]

  def logits_of_features(self, arch, variables, x, train: bool):
    return image_models.apply(arch, variables, x, train=train)


class _LM:
  """BERT on token sequences, scored by -log of the validation MLM loss under
  one fixed masking (Section 4.4)."""

  name = "lm"
  drop_remainder = True  # fixed-size batches; the schedule counts them

  def build(self, arch):
    return bert.build(arch)

  def neuron_groups(self, arch):
    return bert.neuron_groups(arch)

  def arch(self, model: dict, ds: dict):
    return archs.with_data(
        archs.make(model), vocab_size=ds["vocab_size"], max_len=ds["train"].shape[1]
    )

  def init(self, arch, key, ds):
    return bert.init(arch, key)

  def train_data(self, ds):
    return ds["train"]

  def train_batch(self, arch, train, rows, key):
    return text.mask_tokens(key, train[rows], arch.vocab_size)

  def train_loss(self, arch, variables, batch):
    """The MLM loss, evaluated at the masked positions only (`bert.masked_positions`)."""
    inputs, labels, weights = batch
    positions, w = bert.masked_positions(weights, bert.mask_capacity(weights.size))
    logits = self.build(arch).apply(variables, inputs, positions)
    return bert.mlm_loss(logits, labels.reshape(-1)[positions], w), variables

  def val_data(self, ds):
    return ds["val"]

  def evaluate(self, arch, variables, val, hp):
    """-log of the mean MLM loss over every masked position of the
    validation sequences, masked once with key 0 (the same masks for every
    epoch and model), jittable. As in training, only the masked positions
    are projected onto the vocabulary (`bert.masked_positions`): TinyBERT's
    validation takes 55-60% less time than over every position."""
    module, bs, n = self.build(arch), hp["eval_batch_size"], val.shape[0]
    nb = -(-n // bs)
    inputs, labels, weights = text.mask_tokens(jax.random.key(0), val, arch.vocab_size)
    pad = lambda a: jnp.pad(a, ((0, nb * bs - n), (0, 0))).reshape(nb, bs, -1)
    capacity = bert.mask_capacity(bs * val.shape[1])

    def one(batch):  # padded rows have weight 0
      i, l, w = batch
      positions, pw = bert.masked_positions(w, capacity)
      logits = module.apply(variables, i, positions)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, l.reshape(-1)[positions])
      return jnp.sum(ce * pw), jnp.sum(pw)

    total, count = jax.lax.map(one, (pad(inputs), pad(labels), pad(weights)))
    loss = total.sum() / jnp.maximum(count.sum(), 1.0)
    return {"val_loss": loss, "performance": -jnp.log(loss)}

  def chance(self, arch, ds):
    # Performance is -log(loss): chance is a uniform prediction's loss, log V.
    chance_loss = math.log(arch.vocab_size)
    return -math.log(chance_loss), chance_loss, math.inf

  def preservation_tolerance(self, before: float) -> float:
    return 1e-4 * abs(before)  # float32 round-off of a loss over many positions

  def metric_batches(self, arch, ds, seeds, size):
    seqs = ds["train"]
    rows = np.stack([batch_indices(len(seqs), s, size) for s in seeds])
    return bert.probe_batches(_mask_seeds(jnp.asarray(list(seeds)), seqs[rows], arch.vocab_size))

  def stem(self, arch, group):
    module = self.build(arch)
    if group.startswith("ffn_"):
      layer = int(group.split("_")[1])
      return lambda v, batch: module.apply(v, batch[0], layer=layer, method="stem")
    return lambda v, batch: module.apply(v, batch[0], method="embed")

  def head(self, arch, group):
    module = self.build(arch)
    if group.startswith("ffn_"):
      layer = int(group.split("_")[1])
      logits = lambda v, z, batch: module.apply(
          v, z, batch[0], layer=layer, positions=batch[1], method="head"
      )
    else:  # heads_0: the whole encoder above the embedding
      logits = lambda v, z, batch: module.apply(v, z, positions=batch[1], method="encode")
    return lambda v, z, batch: cross_entropy(logits(v, z, batch), batch[2], batch[3])

  def split(self, arch, group):
    """An FFN group's head at its FFN output (`probe.Split`'s fields); None
    for the heads, and for the last layer's FFN, which runs at the masked
    positions only: there the split saved nothing (TinyBERT, FFN 1536)."""
    layer = int(group.removeprefix("ffn_")) if group.startswith("ffn_") else None
    if layer in (None, arch.layers - 1):
      return None
    module = self.build(arch)
    return dict(
        rows=lambda v, z, batch: module.apply(
            v, z, batch[0], layer=layer, positions=batch[1], method="ffn_rows"
        ),
        act=bert.gelu,
        out=lambda v, z: module.apply(v, z, layer=layer, method="ffn_out"),
        kernel=f"params/layers_{layer}/ffn_out/kernel",
        rest=lambda v, r, y, batch: cross_entropy(
            module.apply(v, r, y, layer, positions=batch[1], method="after_ffn"),
            batch[2],
            batch[3],
        ),
    )

  def features(self, arch, variables, batch):
    """The embedding output: SynFlow's all-ones input and Jacov's input
    Jacobian are undefined for token ids."""
    return self.build(arch).apply(variables, batch[0], method="embed")

  def logits_of_features(self, arch, variables, x, train: bool):
    return self.build(arch).apply(variables, x, method="encode")


@functools.partial(jax.jit, static_argnames="vocab_size")
def _mask_seeds(seeds, rows, vocab_size: int):
  """Each seed's sequences masked once with key(seed)."""
  keys = jax.vmap(jax.random.key)(seeds)
  return jax.vmap(lambda k, r: text.mask_tokens(k, r, vocab_size))(keys, rows)


IMAGE, LM = _Image(), _LM()


def of(arch: archs.Arch):
  """The track of an architecture."""
  return LM if archs.is_lm(arch) else IMAGE


def of_dataset(ds: dict):
  """The track of a prepared dataset."""
  return LM if "train" in ds else IMAGE


def load_dataset(path) -> dict:
  """A prepared dataset (.npz) of either track.

  Args:
    path: written by `data.save` from `data.load` or `text.prepare`.

  Returns:
    The dataset's arrays; a `files.InputError` names the file if it is missing
    or unreadable.
  """
  keys = text.TEXT_KEYS if "train" in data.npz_keys(path) else data.KEYS
  return data.load_npz(path, keys)


def metric_batches(arch: archs.Arch, ds: dict, seeds, size: int):
  """The single training batch of each seed that the manifold metric and the
  zero-cost proxies score every model of that seed on (Section 4.2),
  stacked over seeds: every model of one seed (phi*, and every candidate at
  every epoch) is probed on the same batch.

  Args:
    arch: a model of the dataset's track.
    ds: the prepared dataset.
    seeds: the study seeds.
    size: examples (image track) or sequences (BERT) in a batch.

  Returns:
    (x, y) for images, `bert.probe_batches` for BERT (the sequences masked
    once with key(seed)); each array with a leading seed axis.

  Raises:
    ValueError: when the training set has fewer than `size` examples.
  """
  return of(arch).metric_batches(arch, ds, [int(s) for s in seeds], size)


def build_arch(model: dict, ds: dict) -> archs.Arch:
  """The architecture of a config `model` entry for a prepared dataset (its
  classes, or its vocabulary and sequence length)."""
  return of_dataset(ds).arch(model, ds)


def init_seeds(arch: archs.Arch, seeds, ds: dict):
  """Fresh variables of `arch`, one model per seed (from key(seed)), stacked
  on a leading seed axis."""
  keys = jax.vmap(jax.random.key)(jnp.asarray(list(seeds)))
  return jax.jit(jax.vmap(lambda k: of(arch).init(arch, k, ds)))(keys)


def hashable(hp: dict) -> tuple:
  """Hyperparameters as a cache key."""
  return tuple(sorted(hp.items()))


@functools.lru_cache(maxsize=32)
def _scorer(arch: archs.Arch, hp_items: tuple):
  hp = dict(hp_items)
  return jax.jit(jax.vmap(lambda v, val: of(arch).evaluate(arch, v, val, hp), in_axes=(0, None)))


def val_scores(arch: archs.Arch, variables, val, hp: dict) -> dict:
  """Each seed's validation scores as arrays over seeds: "performance" and
  val_acc or val_loss (`val` from `track.val_data`)."""
  return jax.device_get(_scorer(arch, hashable(hp))(variables, val))


def validate(arch: archs.Arch, variables, ds: dict, hp: dict) -> list[dict]:
  """Each seed's validation record: "performance" (A(theta): accuracy, or
  -log of the validation MLM loss for BERT), and val_acc or val_loss.

  Args:
    arch: the architecture.
    variables: one model per seed, stacked.
    ds: the prepared dataset.
    hp: the run's hyperparameters (BERT: "eval_batch_size").
  """
  out = val_scores(arch, variables, of(arch).val_data(ds), hp)
  return [{k: float(v[i]) for k, v in out.items()} for i in range(len(out["performance"]))]


def check_preserved(arch: archs.Arch, before, after, what: str, seeds) -> None:
  """Raises a RuntimeError naming `what` and the seed unless an expansion
  kept each seed's validation performance: accuracy exactly (the predictions
  are the same), BERT's -log MLM loss to float32 round-off (1e-4 relative)."""
  for seed, b, a in zip(seeds, before, after):
    if abs(a - b) > of(arch).preservation_tolerance(b):
      raise RuntimeError(
          f"{what}, seed {seed}, changed the validation performance from {b} "
          f"to {a}: it is not function-preserving"
      )


def param_count(variables) -> int:
  """Trainable parameters of one model: the size baseline every score is
  compared with."""
  return int(sum(np.size(leaf) for leaf in jax.tree.leaves(variables["params"])))
