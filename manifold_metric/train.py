"""Training both tracks with Optax: one epoch loop, one optimizer recipe, one
error for a run that is no longer learning.

What differs between the tracks is how an epoch runs and how a model is
scored. Image classifiers step through minibatches reshuffled from (seed,
epoch) and are scored by validation accuracy. BERT scans one jitted epoch of
token sequences reshuffled and re-masked from (seed, epoch) and is scored by
-log of its validation MLM loss under one fixed masking (Section 4.4). `fit`
runs either with progress and a time estimate, and raises `DivergenceError`
naming the run when the loss is not finite, when it explodes far above that
of a model that knows nothing, or when the run never gets clearly better than
chance.
"""

import functools
import json
import math
import sys
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from manifold_metric import bert, models, text
from manifold_metric.archs import is_lm

DEFAULTS = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "b1": 0.9, "b2": 0.999,
            "batch_size": 512}
OPTIMIZERS = ("adam", "adamw")
# An epoch whose mean minibatch loss exceeds this many times the loss of a
# uniform prediction has exploded: healthy runs stay near or below that loss.
EXPLOSION = 10.0
# A base model must close at least this share of the distance from chance to
# perfect (accuracy 1, or MLM loss 0) at its best epoch; the paper's close most.
MIN_PROGRESS = 0.1


class DivergenceError(RuntimeError):
  """A training run is no longer learning: its loss is not finite, exploded,
  or it never got clearly better than chance."""


def optimizer(hp: dict, total_steps: int | None = None) -> optax.GradientTransformation:
  """The optimizer of a run (Appendix A.2.2).

  Args:
    hp: "optimizer" ("adamw": AdamW with "weight_decay"; "adam": Adam, no
      weight decay), "lr", "b1", "b2", and optionally "warmup": with it the
      learning rate warms up linearly over that many steps from 0, then decays
      to 0 along a cosine at `total_steps`; without it, it is constant.
    total_steps: the schedule's length; needed with "warmup".

  Returns:
    The Optax transformation. Create it once per run: jitted loops are cached
    per optimizer object.
  """
  hp = {**DEFAULTS, **hp}
  lr = hp["lr"]
  if hp.get("warmup") is not None:
    if total_steps is None or not 0 <= hp["warmup"] < total_steps:
      raise ValueError(f"warmup ({hp['warmup']} steps) must be shorter than the schedule "
                       f"(total_steps = {total_steps})")
    lr = optax.warmup_cosine_decay_schedule(0.0, hp["lr"], hp["warmup"], total_steps)
  if hp["optimizer"] == "adam":
    return optax.adam(lr, b1=hp["b1"], b2=hp["b2"])
  if hp["optimizer"] == "adamw":
    return optax.adamw(lr, hp["b1"], hp["b2"], weight_decay=hp["weight_decay"])
  raise ValueError(f"unknown optimizer {hp['optimizer']!r}; expected one of {OPTIMIZERS}")


# ----------------------------------------------------------------- image track


@functools.lru_cache(maxsize=None)
def _image_step(arch_json: str, hp_json: str):
  arch, opt = json.loads(arch_json), optimizer(json.loads(hp_json))
  module = models.build(arch)
  bn = models.has_batch_norm(arch)

  def loss_fn(params, rest, x, y):
    variables = {"params": params, **rest}
    if bn:
      out, new = module.apply(variables, x, train=True, mutable=["batch_stats"])
      return models.cross_entropy(out, y), dict(new)
    return models.cross_entropy(module.apply(variables, x), y), rest

  @jax.jit
  def step(variables, opt_state, x, y):
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}
    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest, x, y)
    updates, opt_state = opt.update(grads, opt_state, params)
    return {"params": optax.apply_updates(params, updates), **rest}, opt_state, loss

  return opt, step


@functools.lru_cache(maxsize=None)
def _predict(arch_json: str):
  module = models.build(json.loads(arch_json))
  return jax.jit(lambda variables, x: jnp.argmax(module.apply(variables, x), -1))


def accuracy(arch: dict, variables, x, y, batch_size: int = 1024) -> float:
  """Accuracy on (x, y) in evaluation mode (BatchNorm running statistics)."""
  predict = _predict(json.dumps(arch, sort_keys=True))
  correct = sum(int(jnp.sum(predict(variables, x[i:i + batch_size]) == y[i:i + batch_size]))
                for i in range(0, len(x), batch_size))
  return correct / len(x)


# -------------------------------------------------------------------- BERT track


@functools.lru_cache(maxsize=32)
def _lm_epoch(arch_json: str, tx: optax.GradientTransformation):
  arch = json.loads(arch_json)
  module = bert.build(arch)
  vocab_size = arch["vocab_size"]

  def loss_fn(params, batch):
    inputs, labels, weights = batch
    return bert.mlm_loss(module.apply({"params": params}, inputs), labels, weights)

  @functools.partial(jax.jit, static_argnames="batch_size")
  def epoch(params, opt_state, seqs, key, batch_size):
    kp, km = jax.random.split(key)
    nb = seqs.shape[0] // batch_size
    order = jax.random.permutation(kp, seqs.shape[0])[:nb * batch_size]

    def step(carry, xs):  # masks batch by batch: the epoch is never materialized
      params, opt_state = carry
      i, rows = xs
      batch = text.mask_tokens(jax.random.fold_in(km, i), seqs[rows], vocab_size)
      loss, grads = jax.value_and_grad(loss_fn)(params, batch)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(
        step, (params, opt_state), (jnp.arange(nb), order.reshape(nb, batch_size)))
    return params, opt_state, losses.sum()

  return epoch


@functools.lru_cache(maxsize=32)
def _lm_evaluator(arch_json: str):
  arch = json.loads(arch_json)
  module = bert.build(arch)
  vocab_size = arch["vocab_size"]

  @functools.partial(jax.jit, static_argnames="batch_size")
  def evaluate(params, seqs, key, batch_size):
    n = seqs.shape[0]
    nb = -(-n // batch_size)
    inputs, labels, weights = text.mask_tokens(key, seqs, vocab_size)

    def pad(x):  # padded rows get weight 0
      x = jnp.pad(x, ((0, nb * batch_size - n), (0, 0)))
      return x.reshape(nb, batch_size, -1)

    def one(batch):
      inputs, labels, weights = batch
      ce = optax.softmax_cross_entropy_with_integer_labels(
          module.apply({"params": params}, inputs), labels)
      return jnp.sum(ce * weights), jnp.sum(weights)

    total, count = jax.lax.map(one, (pad(inputs), pad(labels), pad(weights)))
    return total.sum() / jnp.maximum(count.sum(), 1.0)

  return evaluate


def mlm_loss(arch: dict, variables, seqs, key, batch_size: int) -> float:
  """Mean MLM loss over all masked positions of `seqs` masked with `key`
  (pass a fixed key so that every evaluation sees the same masks)."""
  loop = _lm_evaluator(json.dumps(arch, sort_keys=True))
  return float(loop(variables["params"], jnp.asarray(seqs), key, batch_size=batch_size))


def lm_val_loss(arch: dict, variables, ds: dict, hp: dict) -> float:
  """Validation MLM loss with one fixed masking (key 0), so that every epoch
  and model is scored on the same masked tokens."""
  return mlm_loss(arch, variables, ds["val"], jax.random.key(0), hp["eval_batch_size"])


# ------------------------------------------------------------------ both tracks


def performance(arch: dict, variables, ds: dict, hp: dict) -> float:
  """A(theta): validation accuracy, or -log(validation MLM loss) for BERT."""
  if is_lm(arch):
    return -math.log(lm_val_loss(arch, variables, ds, hp))
  return accuracy(arch, variables, ds["x_val"], ds["y_val"])


class _Track(NamedTuple):
  state: tuple                 # (variables, optimizer state)
  epoch: Callable              # (t, state) -> (state, sum of the epoch's minibatch losses)
  steps: int                   # minibatches per epoch
  evaluate: Callable           # variables -> record of the epoch's scores, with "performance"
  chance_loss: float           # the loss of a uniform prediction
  chance: float                # the performance of a model that knows nothing
  perfect: float               # the best performance there is


def _image_track(arch, variables, ds, hp, seed) -> _Track:
  opt, step = _image_step(json.dumps(arch, sort_keys=True), json.dumps(hp, sort_keys=True))
  x, y, bs = ds["x_train"], ds["y_train"], hp["batch_size"]

  def epoch(t, state):
    variables, opt_state = state
    order = np.random.default_rng([seed, t]).permutation(len(x))
    losses = []
    for i in range(0, len(x), bs):
      idx = order[i:i + bs]
      variables, opt_state, loss = step(variables, opt_state, x[idx], y[idx])
      losses.append(loss)
    return (variables, opt_state), jnp.sum(jnp.stack(losses))

  def evaluate(v):
    acc = accuracy(arch, v, ds["x_val"], ds["y_val"])
    return {"val_acc": acc, "performance": acc}

  majority = np.bincount(ds["y_val"]).max() / len(ds["y_val"])
  return _Track((variables, opt.init(variables["params"])), epoch, -(-len(x) // bs), evaluate,
                math.log(ds["num_classes"]), float(majority), 1.0)


def _lm_track(arch, variables, ds, hp, seed, epochs) -> _Track:
  seqs, bs = ds["train"], hp["batch_size"]
  steps = len(seqs) // bs
  if steps == 0:
    raise ValueError(f"{len(seqs)} training sequences do not fill one batch of {bs}")
  tx = optimizer(hp, total_steps=epochs * steps)
  loop = _lm_epoch(json.dumps(arch, sort_keys=True), tx)

  def epoch(t, state):
    key = jax.random.fold_in(jax.random.key(seed), t)
    params, opt_state, total = loop(state[0]["params"], state[1], jnp.asarray(seqs), key,
                                    batch_size=bs)
    return ({**state[0], "params": params}, opt_state), total

  def evaluate(v):
    loss = lm_val_loss(arch, v, ds, hp)
    return {"val_loss": loss, "performance": -math.log(loss)}

  # Performance is -log(loss): chance is a uniform prediction's loss, log V.
  chance_loss = math.log(arch["vocab_size"])
  return _Track((variables, tx.init(variables["params"])), epoch, steps, evaluate,
                chance_loss, -math.log(chance_loss), math.inf)


def _progress(best: float, track: _Track) -> float:
  """Share of the way from chance to perfect that `best` has come."""
  if math.isfinite(track.perfect):
    return (best - track.chance) / (track.perfect - track.chance)
  # MLM performance is -log(loss): measure in loss, from log V down to 0.
  return 1.0 - math.exp(-best) / track.chance_loss


def fit(arch: dict, variables, ds: dict, *, hp: dict, seed: int, epochs: int, run: str,
        patience: int | None = None, min_progress: float | None = None,
        on_epoch: Callable[[int, dict, dict], None] | None = None):
  """Trains a model of either track with a fresh optimizer.

  Args:
    arch, variables: the model (plain-data architecture and Flax variables).
    ds: a prepared dataset (`data.load` or `text.prepare`).
    hp: the run's optimizer and batch settings (see `optimizer`; BERT also
      "eval_batch_size").
    seed: batches are reshuffled (and BERT's re-masked) from (seed, epoch).
    epochs: at most this many epochs.
    run: the run's name, in progress lines and errors.
    patience: stop once the performance has not improved for this many
      epochs, and return the best epoch's variables; None: train all epochs
      and return the last.
    min_progress: if given, the best epoch must have closed this share of
      the distance from chance to perfect (accuracy 1, MLM loss 0).
    on_epoch: called as on_epoch(t, variables, record) after every epoch.

  Returns:
    (variables, history): the returned model, and one record per epoch with
    epoch, train_loss_sum (SoTL-E), performance, and val_acc or val_loss.

  Raises:
    DivergenceError: naming `run`, when an epoch's loss is not finite or
      exceeds EXPLOSION times a uniform prediction's, or when the best epoch
      closed less than `min_progress` of the distance from chance to perfect.
  """
  hp = {**DEFAULTS, **hp}
  track = (_lm_track(arch, variables, ds, hp, seed, epochs) if is_lm(arch)
           else _image_track(arch, variables, ds, hp, seed))
  state, history, best = track.state, [], None
  start = time.time()
  for t in range(1, epochs + 1):
    state, loss_sum = track.epoch(t, state)
    loss_sum = float(loss_sum)
    mean = loss_sum / track.steps
    if not math.isfinite(loss_sum):
      raise DivergenceError(f"{run}: training diverged at epoch {t} (loss sum {loss_sum}); "
                            "lower the learning rate for this run")
    if mean > EXPLOSION * track.chance_loss:
      raise DivergenceError(
          f"{run}: training loss exploded at epoch {t}: mean minibatch loss {mean:.4g}, more "
          f"than {EXPLOSION:g} times a uniform prediction's ({track.chance_loss:.3g}); lower "
          "the learning rate for this run")
    record = {"epoch": t, "train_loss_sum": loss_sum, **track.evaluate(state[0])}
    history.append(record)
    if best is None or record["performance"] > best[1]["performance"]:
      best = (state[0], record)
    elapsed = time.time() - start
    print(f"[{run}] epoch {t}/{epochs} loss_sum {loss_sum:.4f} performance "
          f"{record['performance']:.4f} ({elapsed:.0f}s, at most "
          f"{elapsed / t * (epochs - t):.0f}s left)", file=sys.stderr, flush=True)
    if on_epoch is not None:
      on_epoch(t, state[0], record)
    if patience is not None and t - best[1]["epoch"] >= patience:
      break
  if min_progress is not None and _progress(best[1]["performance"], track) < min_progress:
    raise DivergenceError(
        f"{run}: not learning: the best epoch ({best[1]['epoch']}) reached performance "
        f"{best[1]['performance']:.4f}, against {track.chance:.4f} for chance; check the "
        "learning rate and the data")
  return (best[0] if patience is not None else state[0]), history


def fit_base(arch: dict, variables, ds: dict, *, hp: dict, base: dict, seed: int, run: str):
  """Trains the base model phi* (Section 4.1).

  Args:
    arch, variables, ds, hp, seed, run: as in `fit`.
    base: {"max_epochs", "patience"}: until the performance has not improved
      for `patience` epochs (image models, early stopping), phi* the best
      epoch; or {"epochs"}: that many epochs (BERT), phi* the last.

  Returns:
    (phi*, history, A(phi*)), the last the performance of phi*.

  Raises:
    DivergenceError: as `fit`, and when phi* is not clearly better than
      chance (MIN_PROGRESS): nothing should be expanded from it.
  """
  if "patience" in base:
    phi, history = fit(arch, variables, ds, hp=hp, seed=seed, epochs=base["max_epochs"],
                       run=run, patience=base["patience"], min_progress=MIN_PROGRESS)
    return phi, history, max(h["performance"] for h in history)
  phi, history = fit(arch, variables, ds, hp=hp, seed=seed, epochs=base["epochs"], run=run,
                     min_progress=MIN_PROGRESS)
  return phi, history, history[-1]["performance"]
