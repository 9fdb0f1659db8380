"""Barrier sets of checkpoints under the protocol, as tables.

Every model of a seed is probed on that seed's batch along that seed's walks,
for every neuron group of the base model phi* (the group a deepened candidate
calls by another name is followed through the expansion's lineage). One call
of the engine per (architecture, group) covers every seed and epoch.
"""

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from manifold_metric import archs, barrier, permutations, probe, tracks, walks


@dataclasses.dataclass(frozen=True)
class Models:
  """Models of one architecture: instance i is the model of seed
  seeds[seed_of[i]] at `epochs[i]`, variables stacked over instances."""

  expansion: str
  arch: archs.Arch
  variables: object
  seed_of: np.ndarray
  epochs: np.ndarray
  lineage: dict  # the base's group name -> this model's


def table(
    models: list[Models],
    ds: dict,
    *,
    setting: str,
    seeds,
    groups,
    n: int,
    batch_size: int,
    chunk: int | None = None,
    instance_chunk: int | None = None,
) -> pd.DataFrame:
  """Algorithm 1's n barriers |b_i| of every model, group and walk.

  Args:
    models: the models (phi* is expansion "base").
    ds: the prepared dataset.
    setting: the setting's name, for the table.
    seeds: the study seeds; batches and walks of seed s come from s.
    groups: the base's groups to permute (names in phi*).
    n: nodes (barriers) per walk.
    batch_size: size of the metric batch.
    chunk, instance_chunk: see `barrier.barrier_sets`.

  Returns:
    Columns setting, model, expansion, group (the base's name of the group
    permuted), walk, seed, epoch, node (1..n), barrier, resolution (the
    model's tau, `barrier.barrier_sets`). Progress and a time estimate go to
    stderr.

  Raises:
    RuntimeError: naming the model when a barrier is not finite (a diverged
      model).
  """
  seeds = np.asarray(list(seeds))
  batches = tracks.metric_batches(models[0].arch, ds, seeds, batch_size)
  rows, start, done, total = [], time.time(), 0, len(models) * len(groups)
  for m in models:
    for group in groups:
      name = m.lineage[group]
      spec = probe.spec(m.arch, name)
      b, tau = barrier.barrier_sets(
          probe.probe(m.arch, name),
          spec,
          m.variables,
          batches,
          walks.seed_walks(seeds, spec.size, n),
          m.seed_of,
          chunk,
          instance_chunk,
          with_resolution=True,
      )
      if not np.all(np.isfinite(b)):
        i = int(np.argwhere(~np.isfinite(b))[0][0])
        raise RuntimeError(
            f"{m.expansion} seed {seeds[m.seed_of[i]]} epoch {m.epochs[i]}: "
            "non-finite barriers: the model is diverged"
        )
      I, W, _ = b.shape
      rows.append(
          pd.DataFrame(
              {
                  "setting": setting,
                  "model": m.arch.kind,
                  "expansion": m.expansion,
                  "group": group,
                  "walk": np.tile(np.repeat(walks.WALKS, n), I),
                  "seed": np.repeat(seeds[m.seed_of], W * n),
                  "epoch": np.repeat(m.epochs, W * n),
                  "node": np.tile(np.arange(1, n + 1), I * W),
                  "barrier": b.reshape(-1),
                  "resolution": np.repeat(tau, W * n),
              }
          )
      )
      done += 1
      elapsed = time.time() - start
      print(
          f"{m.expansion} {group} ({I} models, n={n}): mean |b| {b.mean():.3g} "
          f"({elapsed:.0f}s, about {elapsed / done * (total - done):.0f}s left)",
          file=sys.stderr,
          flush=True,
      )
  return pd.concat(rows, ignore_index=True)


def loss_curves(
    arch: archs.Arch, variables, ds: dict, *, seeds, pairs: int, alphas, batch_size: int
) -> pd.DataFrame:
  """Figure 1's data: the loss on each seed's metric batch along the linear
  path between each of the first `pairs` consecutive nodes of the seed's
  walk (the paper's, first group), for every seed's model at once.

  Args:
    arch, variables: one model per seed, stacked.
    ds: the prepared dataset.
    seeds: the seeds, in the order of `variables`.
    pairs: consecutive node pairs per seed.
    alphas: the points of the path (0: node i, 1: node i + 1).
    batch_size: the metric batch.

  Returns:
    Columns seed, width (the permuted group's size), pair, alpha, loss.
  """
  seeds, alphas = list(seeds), np.asarray(alphas, np.float32)
  spec, loss = probe.spec(arch), probe.probe(arch).loss
  batches = tracks.metric_batches(arch, ds, seeds, batch_size)
  nodes = walks.seed_walks(seeds, spec.size, pairs)[:, 0]

  @jax.jit
  def curves(v, batch, nodes):
    def pair(a, b):
      return barrier.loss_curve(
          lambda w: loss(w, batch),
          permutations.permute(spec, v, a),
          permutations.permute(spec, v, b),
          alphas,
      )

    return jax.vmap(pair)(nodes[1:], nodes[:-1])

  out = np.asarray(jax.vmap(curves)(variables, batches, jnp.asarray(nodes)))  # (S, pairs, A)
  S, P, A = out.shape
  return pd.DataFrame(
      {
          "seed": np.repeat(seeds, P * A),
          "width": spec.size,
          "pair": np.tile(np.repeat(np.arange(P), A), S),
          "alpha": np.tile(alphas, S * P),
          "loss": out.reshape(-1),
      }
  )
