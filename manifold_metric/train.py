"""Training with Optax: every seed of one architecture in one jitted,
vmapped program, for both tracks.

A run is one model per seed, stacked on a leading seed axis. Each seed keeps
its own initialisation, data order (and BERT's masking), drawn in the
program from key(seed) and the epoch, and its own early stopping: a seed
whose patience ran out stops changing (its updates are masked) while the
others go on. What differs between the tracks (a batch, its loss, the
validation score) comes from `tracks`. `fit` reports progress with a time
estimate, and raises `DivergenceError` naming the run and seed when a loss is
not finite, explodes far above that of a model that knows nothing, or when a
run never gets clearly better than chance.

Vmapping turns each matmul into a batched one, whose float32 accumulation may
differ from a single model's in the last bits; over a run such rounding
differences grow slowly (tests/test_train.py bounds them).
"""

import functools
import math
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from manifold_metric import archs, tracks

DEFAULTS = {
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "b1": 0.9,
    "b2": 0.999,
    "batch_size": 512,
}
OPTIMIZERS = ("adam", "adamw")
# The arguments of optax.adamw that stay constants of the compiled step (the
# weight decay is an input: `optimizer`).
_CONSTANT = ("learning_rate", "b1", "b2", "eps", "eps_root", "mu_dtype", "mask", "nesterov")
# An epoch whose mean minibatch loss exceeds this many times the loss of a
# uniform prediction has exploded: healthy runs stay near or below that loss.
EXPLOSION = 10.0
# A base model must close at least this share of the distance from chance to
# perfect (accuracy 1, or MLM loss 0) at its best epoch; the paper's close most.
MIN_PROGRESS = 0.1
# Candidates train with another seed than their base, so that the base's
# batch order is not replayed after expansion.
CANDIDATE_SEED_OFFSET = 10_000


class DivergenceError(RuntimeError):
  """A training run is no longer learning: its loss is not finite, exploded,
  or it never got clearly better than chance."""


def candidate_seed(seed: int) -> int:
  """The seed a candidate of study seed `seed` trains with."""
  return seed + CANDIDATE_SEED_OFFSET


def optimizer(hp: dict, total_steps: int | None = None) -> optax.GradientTransformation:
  """The optimizer of a run (Appendix A.2.2).

  Args:
    hp: "optimizer" ("adamw": AdamW with "weight_decay"; "adam": Adam, no
      weight decay), "lr", "b1", "b2", and optionally "warmup": with it the
      learning rate warms up linearly over that many steps from 0, then decays
      to 0 along a cosine at `total_steps`; without it, it is constant.
    total_steps: the schedule's length; needed with "warmup".

  Returns:
    The Optax transformation.
  """
  hp = {**DEFAULTS, **hp}
  lr = hp["lr"]
  if hp.get("warmup") is not None:
    if total_steps is None or not 0 <= hp["warmup"] < total_steps:
      raise ValueError(
          f"warmup ({hp['warmup']} steps) must be shorter than the schedule "
          f"(total_steps = {total_steps})"
      )
    lr = optax.warmup_cosine_decay_schedule(0.0, hp["lr"], hp["warmup"], total_steps)
  if hp["optimizer"] not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {hp['optimizer']!r}; expected one of {OPTIMIZERS}")
  # Adam is AdamW with a weight decay of 0 (u + 0 * w = u: the same updates,
  # bit for bit), and the decay is an input of the compiled step, not a
  # constant in it: runs that differ only there compile one program, which
  # their jobs share through JAX's persistent cache (fmnist-mixed-adam and
  # fmnist-mixed train the same architectures).
  decay = hp["weight_decay"] if hp["optimizer"] == "adamw" else 0.0
  return optax.inject_hyperparams(optax.adamw, static_args=_CONSTANT)(
      lr, hp["b1"], hp["b2"], weight_decay=decay
  )


def steps_per_epoch(arch: archs.Arch, n: int, batch_size: int) -> int:
  """Minibatches per epoch of n examples (BERT drops the last partial one)."""
  if tracks.of(arch).drop_remainder:
    return n // batch_size
  return -(-n // batch_size)


@functools.lru_cache(maxsize=32)
def _program(arch: archs.Arch, hp_items: tuple, n: int, total_steps: int):
  """The jitted, vmapped epoch, validation and bookkeeping of a run."""
  hp = dict(hp_items)
  track, tx, bs = tracks.of(arch), optimizer(hp, total_steps), hp["batch_size"]
  full, rest = n // bs, (0 if track.drop_remainder else n % bs)

  def step(carry, batch):
    variables, opt_state = carry
    params = variables["params"]
    rest_vars = {k: v for k, v in variables.items() if k != "params"}

    def loss_fn(p):
      return track.train_loss(arch, {"params": p, **rest_vars}, batch)

    (loss, new_vars), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return ({**new_vars, "params": optax.apply_updates(params, updates)}, opt_state), loss

  def epoch(variables, opt_state, train, key):
    kp, km = jax.random.split(key)
    order = jax.random.permutation(kp, n)

    def scan_step(carry, xs):  # batches are drawn inside: the epoch is never materialized
      i, rows = xs
      return step(carry, track.train_batch(arch, train, rows, jax.random.fold_in(km, i)))

    carry, losses = jax.lax.scan(
        scan_step, (variables, opt_state), (jnp.arange(full), order[: full * bs].reshape(full, bs))
    )
    total = losses.sum()
    if rest:
      rows = order[full * bs :]
      carry, loss = step(carry, track.train_batch(arch, train, rows, jax.random.fold_in(km, full)))
      total = total + loss
    return carry[0], carry[1], total

  @jax.jit
  def run_epoch(variables, opt_state, train, keys, active):
    new_v, new_s, total = jax.vmap(epoch, in_axes=(0, 0, None, 0))(
        variables, opt_state, train, keys
    )
    return _select(active, new_v, variables), _select(active, new_s, opt_state), total

  init = jax.jit(jax.vmap(lambda v: tx.init(v["params"])))
  return run_epoch, init


@jax.jit
def _select(mask, new, old):
  """Per seed (leading axis), `new` where mask else `old`."""
  return jax.tree.map(
      lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old
  )


def _progress(best: float, chance: float, chance_loss: float, perfect: float) -> float:
  """Share of the way from chance to perfect that `best` has come."""
  if math.isfinite(perfect):
    return (best - chance) / (perfect - chance)
  # MLM performance is -log(loss): measure in loss, from log V down to 0.
  return 1.0 - math.exp(-best) / chance_loss


def fit(
    arch: archs.Arch,
    variables,
    ds: dict,
    *,
    hp: dict,
    seeds: Sequence[int],
    epochs: int,
    run: str,
    patience: int | None = None,
    min_progress: float | None = None,
    on_epoch: Callable[[int, dict, list], None] | None = None,
):
  """Trains one model per seed, all seeds at once, with a fresh optimizer.

  Args:
    arch: the architecture (the same for every seed).
    variables: one model per seed, stacked on a leading axis.
    ds: a prepared dataset (`data.load` or `text.prepare`).
    hp: the run's optimizer and batch settings (see `optimizer`; BERT also
      "eval_batch_size").
    seeds: seed s's batches are reshuffled (and BERT's re-masked) from
      key(s) and the epoch.
    epochs: at most this many epochs.
    run: the run's name; progress lines and errors say "<run> seed <s>".
    patience: a seed stops once its performance has not improved for this
      many epochs, and its best epoch's model is returned; None: train every
      epoch and return the last.
    min_progress: if given, every seed's best epoch must have closed this
      share of the distance from chance to perfect (accuracy 1, MLM loss 0).
    on_epoch: called as on_epoch(t, variables, records) after every epoch,
      records[i] the epoch's record of seed i, or None for a seed that has
      stopped.

  Returns:
    (variables, histories): the returned models (stacked), and per seed one
    record per epoch it trained, with epoch, train_loss_sum (SoTL-E),
    performance, and val_acc or val_loss.

  Raises:
    DivergenceError: naming the run and seed, when an epoch's loss or
      validation performance is not finite, when its loss exceeds EXPLOSION
      times a uniform prediction's, or when a seed's best epoch closed less
      than `min_progress` of the distance from chance to perfect.
  """
  hp, seeds = {**DEFAULTS, **hp}, list(seeds)
  track = tracks.of(arch)
  train_data, val = jax.device_put((track.train_data(ds), track.val_data(ds)))
  n = len(jax.tree.leaves(train_data)[0])
  nsteps = steps_per_epoch(arch, n, hp["batch_size"])
  if nsteps == 0:
    raise ValueError(f"{n} training examples do not fill one batch of {hp['batch_size']}")
  run_epoch, init = _program(arch, tracks.hashable(hp), n, epochs * nsteps)
  chance, chance_loss, perfect = track.chance(arch, ds)
  base_keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
  state, opt_state = variables, init(variables)
  best, best_record = variables, [None] * len(seeds)
  active = np.ones(len(seeds), bool)
  histories = [[] for _ in seeds]
  start = time.time()
  for t in range(1, epochs + 1):
    keys = jax.vmap(lambda k: jax.random.fold_in(k, t))(base_keys)
    state, opt_state, totals = run_epoch(state, opt_state, train_data, keys, jnp.asarray(active))
    scores = tracks.val_scores(arch, state, val, hp)
    totals = np.asarray(totals, np.float64)
    records = [None] * len(seeds)
    improved = np.zeros(len(seeds), bool)
    for i, seed in enumerate(seeds):
      if not active[i]:
        continue
      name, total = f"{run} seed {seed}", float(totals[i])
      if not math.isfinite(total):
        raise DivergenceError(
            f"{name}: training diverged at epoch {t} (loss sum {total}); "
            "lower the learning rate for this run"
        )
      if total / nsteps > EXPLOSION * chance_loss:
        raise DivergenceError(
            f"{name}: training loss exploded at epoch {t}: mean minibatch loss "
            f"{total / nsteps:.4g}, more than {EXPLOSION:g} times a uniform prediction's "
            f"({chance_loss:.3g}); lower the learning rate for this run"
        )
      records[i] = {
          "epoch": t,
          "train_loss_sum": total,
          **{k: float(v[i]) for k, v in scores.items()},
      }
      if not math.isfinite(records[i]["performance"]):
        raise DivergenceError(
            f"{name}: validation performance is {records[i]['performance']} at epoch {t} "
            "while its training loss is finite; check the validation split (e.g. token "
            "ids beyond the vocabulary) and the learning rate"
        )
      histories[i].append(records[i])
      if best_record[i] is None or records[i]["performance"] > best_record[i]["performance"]:
        improved[i], best_record[i] = True, records[i]
    if patience is not None:
      best = _select(jnp.asarray(improved), state, best)
    elapsed = time.time() - start
    perf = " ".join(f"{r['performance']:.4f}" if r else "stopped" for r in records)
    print(
        f"[{run}] epoch {t}/{epochs} performance per seed {perf} ({elapsed:.0f}s, at most "
        f"{elapsed / t * (epochs - t):.0f}s left)",
        file=sys.stderr,
        flush=True,
    )
    if on_epoch is not None:
      on_epoch(t, state, records)
    if patience is not None:
      active &= np.array([t - b["epoch"] < patience for b in best_record])
      if not active.any():
        break
  if min_progress is not None:
    for seed, b in zip(seeds, best_record):
      if _progress(b["performance"], chance, chance_loss, perfect) < min_progress:
        raise DivergenceError(
            f"{run} seed {seed}: not learning: the best epoch ({b['epoch']}) reached "
            f"performance {b['performance']:.4f}, against {chance:.4f} for chance; check the "
            "learning rate and the data"
        )
  return (best if patience is not None else state), histories


def run_log(history: list[dict], base_performance: float) -> list[dict]:
  """A candidate run's per-epoch log as `gain.gains` reads it: epoch 0 is
  the expanded model, whose performance is A(phi*) (the expansion preserves
  it, checked when expanding), then the records of `fit`. Every record has
  the same keys (val_acc, or BERT's val_loss = exp(-A))."""
  first = {"epoch": 0, "train_loss_sum": math.nan, "performance": base_performance}
  if "val_acc" in history[0]:
    first["val_acc"] = base_performance
  if "val_loss" in history[0]:
    first["val_loss"] = math.exp(-base_performance)
  return [first, *history]


def fit_base(arch: archs.Arch, variables, ds: dict, *, hp: dict, base: dict, seeds, run: str):
  """Trains the base models phi* of every seed (Section 4.1).

  Args:
    arch, variables, ds, hp, seeds, run: as in `fit`.
    base: {"max_epochs", "patience"}: until the performance has not improved
      for `patience` epochs (image models, early stopping), phi* the best
      epoch; or {"epochs"}: that many epochs (BERT), phi* the last.

  Returns:
    (phi* stacked, histories, A(phi*) per seed).

  Raises:
    DivergenceError: as `fit`, and when a phi* is not clearly better than
      chance (MIN_PROGRESS): nothing should be expanded from it.
  """
  stops = "patience" in base
  phi, histories = fit(
      arch,
      variables,
      ds,
      hp=hp,
      seeds=seeds,
      epochs=base["max_epochs"] if stops else base["epochs"],
      run=run,
      patience=base.get("patience"),
      min_progress=MIN_PROGRESS,
  )
  # Early stopping returns each seed's best epoch; a fixed count, its last.
  return (
      phi,
      histories,
      [
          max(h["performance"] for h in hist) if stops else hist[-1]["performance"]
          for hist in histories
      ],
  )
