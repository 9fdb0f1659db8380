"""Training image models with Optax: base models to early stopping, expanded
candidates for T more epochs, with per-epoch training-loss sums (SoTL-E)."""

import functools
import json
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from manifold_metric import bert, models

DEFAULTS = {"lr": 1e-3, "weight_decay": 1e-4, "b1": 0.9, "b2": 0.999, "batch_size": 512}


class DivergenceError(RuntimeError):
  """Training produced a non-finite loss."""


def optimizer(hp: dict) -> optax.GradientTransformation:
  """AdamW as in the paper (lr 1e-3, weight decay 1e-4, betas 0.9/0.999)."""
  hp = {**DEFAULTS, **hp}
  return optax.adamw(hp["lr"], hp["b1"], hp["b2"], weight_decay=hp["weight_decay"])


@functools.lru_cache(maxsize=None)
def _step(arch_json: str, hp_json: str):
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
  """Validation accuracy in evaluation mode (BatchNorm running statistics)."""
  predict = _predict(json.dumps(arch, sort_keys=True))
  correct = sum(int(jnp.sum(predict(variables, x[i:i + batch_size]) == y[i:i + batch_size]))
                for i in range(0, len(x), batch_size))
  return correct / len(x)


def _loop(state, epoch_fn, evaluate, *, epochs: int, run: str, on_epoch):
  """The epoch loop shared by both tracks, with progress and a time estimate.

  epoch_fn(t, state) -> (state, sum of the epoch's minibatch losses);
  evaluate(state) -> dict with "performance"; on_epoch(t, variables, record),
  where variables = state[0], may return True to stop. A non-finite loss
  raises DivergenceError naming `run`, before anything of that epoch is
  passed on.
  """
  start = time.time()
  for t in range(1, epochs + 1):
    state, loss_sum = epoch_fn(t, state)
    loss_sum = float(loss_sum)
    if not np.isfinite(loss_sum):
      raise DivergenceError(f"{run}: training diverged at epoch {t} (loss sum "
                            f"{loss_sum}); lower the learning rate for this run")
    record = {"epoch": t, "train_loss_sum": loss_sum, **evaluate(state)}
    elapsed = time.time() - start
    print(f"[{run}] epoch {t}/{epochs} loss_sum {loss_sum:.4f} performance "
          f"{record['performance']:.4f} ({elapsed:.0f}s, at most "
          f"{elapsed / t * (epochs - t):.0f}s left)", file=sys.stderr, flush=True)
    if on_epoch(t, state[0], record):
      break


def run_epochs(arch: dict, variables, data: dict, *, hp: dict, seed: int, epochs: int,
               run: str, on_epoch: Callable[[int, dict, dict], bool | None]):
  """Trains an image model for up to `epochs` epochs with a fresh optimizer.

  Batches are reshuffled every epoch from seed, so runs are reproducible. The
  record passed to on_epoch holds train_loss_sum (SoTL-E), val_acc and
  performance (= val_acc).
  """
  hp = {**DEFAULTS, **hp}
  opt, step = _step(json.dumps(arch, sort_keys=True), json.dumps(hp, sort_keys=True))
  x, y = data["x_train"], data["y_train"]
  bs = hp["batch_size"]

  def epoch_fn(t, state):
    variables, opt_state = state
    order = np.random.default_rng([seed, t]).permutation(len(x))
    losses = []
    for i in range(0, len(x), bs):
      idx = order[i:i + bs]
      variables, opt_state, loss = step(variables, opt_state, x[idx], y[idx])
      losses.append(loss)
    return (variables, opt_state), jnp.sum(jnp.stack(losses))

  def evaluate(state):
    acc = accuracy(arch, state[0], data["x_val"], data["y_val"])
    return {"val_acc": acc, "performance": acc}

  _loop((variables, opt.init(variables["params"])), epoch_fn, evaluate, epochs=epochs,
        run=run, on_epoch=on_epoch)


def lm_val_loss(arch: dict, variables, data: dict, hp: dict) -> float:
  """Validation MLM loss with one fixed masking (key 0), so that every epoch
  and model is scored on the same masked tokens."""
  return bert.evaluate(arch, variables, data["val"], jax.random.key(0), hp["eval_batch_size"])


def run_lm_epochs(arch: dict, variables, data: dict, *, hp: dict, seed: int, epochs: int,
                  run: str, on_epoch: Callable[[int, dict, dict], bool | None]):
  """Trains a BERT for `epochs` epochs: Adam, warmup then cosine decay over
  exactly these epochs. The record holds train_loss_sum, val_loss and
  performance = -log(val_loss), evaluated with one fixed masking."""
  seqs, bs = data["train"], hp["batch_size"]
  tx = bert.make_optimizer(total_steps=epochs * bert.steps_per_epoch(len(seqs), bs),
                           lr=hp["lr"], warmup=hp["warmup"], b1=hp["b1"], b2=hp["b2"])

  def epoch_fn(t, state):
    variables, opt_state, total = bert.train_epoch(arch, tx, *state, seqs, seed=seed,
                                                   epoch=t, batch_size=bs, run=run)
    return (variables, opt_state), total

  def evaluate(state):
    loss = lm_val_loss(arch, state[0], data, hp)
    return {"val_loss": loss, "performance": float(bert.performance(loss))}

  _loop((variables, bert.init_optimizer(tx, variables)), epoch_fn, evaluate, epochs=epochs,
        run=run, on_epoch=on_epoch)


def fit_base(arch: dict, variables, data: dict, *, hp: dict, seed: int, max_epochs: int,
             patience: int, run: str):
  """Trains until validation accuracy has not improved for `patience` epochs.

  Returns the best variables (phi*) and the per-epoch history.
  """
  history, best = [], {"acc": -1.0, "variables": variables}

  def on_epoch(t, v, record):
    history.append(record)
    if record["val_acc"] > best["acc"]:
      best.update(acc=record["val_acc"], variables=v, epoch=t)
    return t - best["epoch"] >= patience

  run_epochs(arch, variables, data, hp=hp, seed=seed, epochs=max_epochs, run=run,
             on_epoch=on_epoch)
  return best["variables"], history
