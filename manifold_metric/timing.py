"""Table 4: seconds per score on one checkpoint and one batch, and what
each score computes."""

import time

import jax
import numpy as np
import pandas as pd

from manifold_metric import archs, barrier, probe, proxies, tracks, walks

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


def table4_times(
    arch: archs.Arch,
    variables,
    ds: dict,
    *,
    seed: int,
    n: int,
    batch_size: int,
    chunk: int | None = None,
) -> dict[str, float]:
  """Seconds per score on one model and its seed's batch, each after a
  compiling call, in one process: the manifold metric's barrier set (n nodes
  of the paper's walk over the first group) and every zero-cost proxy
  (`proxies.time_proxies`).

  Args:
    arch, variables: one model (not stacked).
    ds: the prepared dataset.
    seed: the seed whose batch and walk are used.
    n: nodes of the walk.
    batch_size: the metric batch.
    chunk: see `barrier.barrier_sets`.
  """
  one = jax.tree.map(lambda a: np.asarray(a)[None], variables)
  batches = tracks.metric_batches(arch, ds, [seed], batch_size)
  times = proxies.time_proxies(arch, one, batches)
  spec = probe.spec(arch)
  walk = walks.seed_walks([seed], spec.size, n)[:, :1]
  run = lambda: barrier.barrier_sets(probe.probe(arch), spec, one, batches, walk, chunk=chunk)
  run()  # compile; returns numpy, so each call waits for the device
  start = time.perf_counter()
  run()
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
  head = (
      f"Seconds per score on one checkpoint right after the largest expansion, one batch "
      f"({', '.join(f'{s}: {b}' for s, b in sizes.batch_size.items())}), n = "
      f"{table.n.iloc[0]} nodes, on {table.device.iloc[0]}; each timed after a compiling "
      "call, in one process. * gradient of the outputs, not of the loss.\n\n"
  )
  tail = (
      "\n\nThe manifold metric took "
      + ", ".join(f"{r:.0f}x" if r >= 1 else f"{r:.2f}x" for r in ratio)
      + " SynFlow's time ("
      + ", ".join(ratio.index)
      + "): it evaluates the network n times, SynFlow once forward and "
      "once backward.\n"
  )
  return head + wide.to_markdown(floatfmt=".4f") + tail
