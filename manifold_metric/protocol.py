"""The paper's protocol (Section 4.1, Appendix A.2) as functions: which
training batch the models of one seed are probed on, which random walk a run
uses, which seed trains a candidate, and the barrier sets, loss curves and
timings computed under them.

Every model of one seed (phi*, and every candidate at every epoch) is probed
on the same batch with the same walk, so their barrier sets differ only
through the model.
"""

import sys
import time

import jax
import numpy as np
import pandas as pd

from manifold_metric import barrier, bert, io, permutations, proxies, text, tracks
from manifold_metric.archs import is_lm

# What each score of Table 4 computes on one checkpoint and one batch.
COMPUTATION = {
    "manifold": "n forward passes of the layers above the permuted one (one per distinct "
                "walk step) plus one full forward pass; no backward",
    "gradnorm": "1 forward + 1 backward (gradient of the loss)",
    "snip": "1 forward + 1 backward (gradient of the loss)",
    "grasp": "1 forward + 1 backward + 1 Hessian-vector product (forward-over-backward)",
    "synflow": "1 forward + 1 backward, gradient of the outputs* (all-ones input, |weights|)",
    "jacov": "1 forward + 1 backward, gradient of the outputs* w.r.t. the input",
}

# Candidates train with another seed than their base, so that the base's
# batch order is not replayed after expansion.
CANDIDATE_SEED_OFFSET = 10_000


def batch_indices(n: int, seed: int, size: int) -> np.ndarray:
  """The sorted indices of the metric batch among n training examples."""
  return np.sort(np.random.default_rng([seed, 1]).permutation(n)[:min(size, n)])


def metric_batch(arch: dict, ds: dict, seed: int, size: int):
  """The single training batch that the manifold metric and the zero-cost
  proxies score every model of one seed on (Section 4.2).

  Args:
    arch: a model of the dataset's track.
    ds: the prepared dataset.
    seed: the study seed.
    size: examples (image track) or sequences (BERT) in the batch.

  Returns:
    (x, y) for images; for BERT `bert.probe_batch` of the sequences masked
    once with a key from the seed.
  """
  if not is_lm(arch):
    idx = batch_indices(len(ds["x_train"]), seed, size)
    return ds["x_train"][idx], ds["y_train"][idx]
  seqs = ds["train"]
  masked = text.mask_tokens(jax.random.key(seed), seqs[batch_indices(len(seqs), seed, size)],
                            arch["vocab_size"])
  return bert.probe_batch(masked)


def walk(seed: int, size: int, n: int):
  """The run's random walk: n + 1 nodes over a group of `size` neurons
  (`permutations.random_walk`), the same for every epoch of a run and for
  every model of one seed that has this group size."""
  return permutations.random_walk(jax.random.key(seed), size, n)


def candidate_seed(seed: int) -> int:
  """The seed a candidate of study seed `seed` trains with."""
  return seed + CANDIDATE_SEED_OFFSET


def barrier_set(arch: dict, variables, ds: dict, *, seed: int, n: int, batch_size: int,
                group: str | None = None, chunk: int | None = None) -> np.ndarray:
  """Algorithm 1's n barriers |b_i| of one model under the seed's batch and walk.

  Args:
    arch, variables: the model.
    ds: the prepared dataset.
    seed: the study seed (batch and walk).
    n: nodes (barriers) to compute.
    batch_size: size of the metric batch.
    group: the neuron group permuted (None: the first layer).
    chunk: see `barrier.barrier_set`.

  Returns:
    (n,) float array. Raises a RuntimeError if a barrier is not finite (a
    diverged model).
  """
  probe, spec = tracks.probe_and_spec(arch, group)
  batch = metric_batch(arch, ds, seed, batch_size)
  b = np.asarray(barrier.barrier_set(probe, spec, variables, batch, walk(seed, spec.size, n),
                                     chunk=chunk))
  if not np.all(np.isfinite(b)):
    raise RuntimeError("non-finite barriers: the model is diverged")
  return b


def barrier_table(checkpoints, ds: dict, *, setting: str, seed: int, n: int, batch_size: int,
                  group: str | None = None, chunk: int | None = None) -> pd.DataFrame:
  """The barrier sets of several checkpoints of one seed, as one table.

  Args:
    checkpoints: (expansion, epoch, path) per checkpoint; expansion "base"
      is phi*.
    ds, seed, n, batch_size, group, chunk: as in `barrier_set`.
    setting: the setting's name, for the table.

  Returns:
    Columns setting, model, expansion, group (the neuron group permuted),
    seed, epoch, node (1..n), barrier.
    Progress and a time estimate go to stderr.
  """
  rows, start = [], time.time()
  checkpoints = list(checkpoints)
  for i, (expansion, epoch, path) in enumerate(checkpoints, 1):
    arch, variables, _ = io.load_checkpoint(path)
    try:
      b = barrier_set(arch, variables, ds, seed=seed, n=n, batch_size=batch_size, group=group,
                      chunk=chunk)
    except RuntimeError as e:
      raise RuntimeError(f"{path}: {e}") from None
    rows.append(pd.DataFrame({"setting": setting, "model": arch["kind"], "expansion": expansion,
                              "group": tracks.group_name(arch, group), "seed": seed,
                              "epoch": epoch, "node": np.arange(1, n + 1), "barrier": b}))
    elapsed = time.time() - start
    print(f"{expansion} epoch {epoch}: n={n} mean |b| {b.mean():.3g} ({elapsed:.0f}s, about "
          f"{elapsed / i * (len(checkpoints) - i):.0f}s left)", file=sys.stderr, flush=True)
  return pd.concat(rows, ignore_index=True)


def loss_curves(arch: dict, variables, ds: dict, *, seed: int, pairs: int, alphas,
                batch_size: int) -> pd.DataFrame:
  """Figure 1's data: the loss on the metric batch along the linear path
  between each of the first `pairs` consecutive nodes of the seed's walk.

  Returns:
    Columns width (the permuted group's size), pair, alpha, loss.
  """
  probe, spec = tracks.probe_and_spec(arch)
  batch = metric_batch(arch, ds, seed, batch_size)
  nodes = walk(seed, spec.size, pairs)
  loss = jax.jit(lambda v: probe.head(v, probe.stem(v, batch), batch))
  alphas = np.asarray(alphas, np.float32)
  rows = []
  for i in range(pairs):
    va, vb = (permutations.permute(spec, variables, nodes[j]) for j in (i + 1, i))
    rows.append(pd.DataFrame({"width": spec.size, "pair": i, "alpha": alphas,
                              "loss": np.asarray(barrier.loss_curve(loss, va, vb, alphas))}))
  return pd.concat(rows, ignore_index=True)


def scores(arch: dict, variables, ds: dict, *, seed: int, batch_size: int) -> dict:
  """The zero-cost proxies of a model on the seed's metric batch, and its
  size (parameter count), the baseline every score is compared with."""
  batch = metric_batch(arch, ds, seed, batch_size)
  return {**proxies.score_all(arch, variables, batch), "size": tracks.param_count(variables)}


def time_scores(arch: dict, variables, ds: dict, *, seed: int, n: int, batch_size: int,
                chunk: int | None = None) -> dict[str, float]:
  """Table 4: seconds per score on one checkpoint and one batch, each after
  a compiling call, in one process: the manifold metric's barrier set (n
  nodes) and every zero-cost proxy (`proxies.time_scores`)."""
  batch = metric_batch(arch, ds, seed, batch_size)
  times = proxies.time_scores(arch, variables, batch)
  probe, spec = tracks.probe_and_spec(arch)
  nodes = walk(seed, spec.size, n)
  run = lambda: barrier.barrier_set(probe, spec, variables, batch, nodes, chunk=chunk)
  run().block_until_ready()  # compile
  start = time.perf_counter()
  run().block_until_ready()
  return {**times, "manifold": time.perf_counter() - start}


def table4_markdown(table: pd.DataFrame) -> str:
  """Table 4 as Markdown: seconds per score and setting, what each score
  computes, and the metric's time as a multiple of SynFlow's (the paper
  reports the metric as the faster one).

  Args:
    table: rows of setting, metric, seconds, n, batch_size, device.
  """
  wide = table.pivot(index="metric", columns="setting", values="seconds")
  wide = wide.loc[[m for m in COMPUTATION if m in wide.index]]
  wide.insert(0, "computation", [COMPUTATION[m] for m in wide.index])
  ratio = wide.loc["manifold", wide.columns[1:]] / wide.loc["synflow", wide.columns[1:]]
  sizes = table.drop_duplicates("setting").set_index("setting")
  head = (f"Seconds per score on one checkpoint right after the largest expansion, one batch "
          f"({', '.join(f'{s}: {b}' for s, b in sizes.batch_size.items())}), n = "
          f"{table.n.iloc[0]} nodes, on {table.device.iloc[0]}; each timed after a compiling "
          "call, in one process. * gradient of the outputs, not of the loss.\n\n")
  tail = ("\n\nThe manifold metric took " + ", ".join(
      f"{r:.0f}x" if r >= 1 else f"{r:.2f}x" for r in ratio) + " SynFlow's time (" +
      ", ".join(ratio.index) + "): it evaluates the network n times, SynFlow once forward and "
      "once backward.\n")
  return head + wide.to_markdown(floatfmt=".4f") + tail
