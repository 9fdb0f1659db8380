"""Speed of the barrier engine against Algorithm 1 run literally (see README.md).

  .venv/bin/python benchmarks/barrier_speed.py [--n 1000] [--batch 512] [--chunk K]
                                               [--literal-nodes M] [--out result.json]

All three figures come from one process, each after compilation and warm-up:
  a: barrier.barrier_sets on n random-walk nodes (one jitted call over the
     distinct steps);
  b: a Python loop over nodes, each permuting both ends and evaluating
     Equation 1 at alpha = 0.5 (three losses) in one jitted call;
  c: n times one jitted forward pass (the loss) at the batch (the median).
"""

import argparse
import json
import os
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from manifold_metric import archs, barrier, image_models, permutations, probe, walks

SHAPE = (32, 32, 3)


def cpu_seconds():
  """(busy CPU seconds of the whole machine, of this process), to tell how much
  of the CPU other processes took while we measured."""
  try:
    with open("/proc/stat") as f:
      ticks = [int(t) for t in f.readline().split()[1:]]
    machine = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
  except OSError:
    machine = float("nan")
  own = resource.getrusage(resource.RUSAGE_SELF)
  return machine, own.ru_utime + own.ru_stime


def seconds(f, *args):
  start = time.perf_counter()
  out = jax.block_until_ready(f(*args))
  return time.perf_counter() - start, out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--n", type=int, default=1000, help="random-walk steps (pairs)")
  parser.add_argument("--batch", type=int, default=512, help="examples in the batch")
  parser.add_argument(
      "--chunk",
      type=int,
      default=None,
      help="pairs per vmapped step (default: barrier.default_chunk())",
  )
  parser.add_argument(
      "--literal-nodes",
      type=int,
      default=None,
      help="time b on the first M nodes only and scale it to n",
  )
  parser.add_argument(
      "--repeats",
      type=int,
      default=5,
      help="forward passes timed for c before (a), between and after (b)",
  )
  parser.add_argument("--out", default=None, help="also write the figures as JSON here")
  args = parser.parse_args()
  if min(args.n, args.batch, args.repeats, args.literal_nodes or 1, args.chunk or 1) < 1:
    parser.error("--n, --batch, --chunk, --literal-nodes and --repeats must be positive")
  n = args.n
  m = min(n, args.literal_nodes or n)

  arch = archs.with_data(archs.make({"kind": "cnn"}), num_classes=10)
  kv, kx, ky = jax.random.split(jax.random.key(0), 3)
  variables = jax.jit(lambda k: image_models.init(arch, k, SHAPE))(kv)
  batch = (
      jax.random.normal(kx, (args.batch, *SHAPE)),
      jax.random.randint(ky, (args.batch,), 0, arch.num_classes),
  )
  pr, spec = probe.probe(arch), probe.spec(arch)
  nodes = walks.random_walk(0, spec.size, n)
  loss = pr.loss

  # (c) one forward pass, warmed up. Its repeats are spread before, between
  # and after (a) and (b), so that c sees the same machine load as they do
  # (the CPU may be shared); c is n times their median.
  forward = jax.jit(loss)
  seconds(forward, variables, batch)
  forwards = []

  def time_forwards(k):
    forwards.extend(seconds(forward, variables, batch)[0] for _ in range(k))

  wall, cpu = time.perf_counter(), cpu_seconds()
  time_forwards(args.repeats)

  # (a) the engine; its first call compiles.
  # One model (instance) of one seed, one walk: the engine's arrays carry
  # leading instance, seed and walk axes.
  one_model = jax.tree.map(lambda x: x[None], variables)
  one_batch = jax.tree.map(lambda x: x[None], batch)

  def engine():
    return barrier.barrier_sets(
        pr, spec, one_model, one_batch, nodes[None, None], chunk=args.chunk
    )[0, 0]

  first, _ = seconds(engine)
  a, b_engine = seconds(engine)
  distinct = len(np.unique(barrier.steps(nodes), axis=0))
  time_forwards(args.repeats)

  # (b) Algorithm 1 literally: per node, permute both ends, Equation 1 at 0.5.
  @jax.jit
  def node_barrier(va, vb, batch):
    return jnp.abs(barrier.loss_barrier(lambda v: loss(v, batch), va, vb, [0.5])[0])

  permute = jax.jit(permutations.permute, static_argnums=0)
  seconds(
      node_barrier, permute(spec, variables, nodes[0]), permute(spec, variables, nodes[1]), batch
  )
  start, b_literal = time.perf_counter(), []
  for i in range(m):
    va, vb = permute(spec, variables, nodes[i]), permute(spec, variables, nodes[i + 1])
    b_literal.append(node_barrier(va, vb, batch))
  jax.block_until_ready(b_literal)
  b = (time.perf_counter() - start) * n / m
  time_forwards(args.repeats)
  machine, own = (after - before for after, before in zip(cpu_seconds(), cpu))
  others = (machine - own) / ((time.perf_counter() - wall) * os.cpu_count())
  one = statistics.median(forwards)
  c = n * one

  result = {
      "model": "cnn-10 " + "-".join(map(str, arch.channels)) + f"-pool-{arch.dense}",
      "input": list(SHAPE),
      "batch": args.batch,
      "n": n,
      "chunk": barrier.default_chunk() if args.chunk is None else args.chunk,
      "distinct_steps": distinct,
      "a_engine_s": a,
      "b_literal_s": b,
      "b_nodes_timed": m,
      "c_forward_s": c,
      "forward_s": one,
      "a_over_b": a / b,
      "a_over_c": a / c,
      "engine_first_call_s": first,
      # The engine must agree with the literal loop (float32 rounding only).
      "max_abs_diff_a_b": float(jnp.max(jnp.abs(b_engine[:m] - jnp.stack(b_literal)))),
      "device": str(jax.devices()[0]),
      "jax": jax.__version__,
      "cpus": os.cpu_count(),
      "cpu_share_of_other_processes": others,
  }
  scaled = "" if m == n else f" (estimated: {m} nodes timed, scaled to n = {n})"
  print(
      f"device {result['device']} (jax {jax.__version__}), CNN-10 on {args.batch} x "
      f"{'x'.join(map(str, SHAPE))}, n = {n}, chunk = {result['chunk']}"
  )
  print(
      f"(a) engine barrier_sets       {a:9.2f} s   (first call, compiling: {first:.1f} s; "
      f"{distinct} distinct steps of {n})"
  )
  print(f"(b) literal Algorithm 1 loop  {b:9.2f} s{scaled}")
  print(f"(c) n x one forward pass      {c:9.2f} s   ({1e3 * one:.1f} ms each)")
  print(
      f"a/b = {a / b:.3f}   a/c = {a / c:.3f}   "
      f"max |engine - literal| {result['max_abs_diff_a_b']:.1e}"
  )
  print(
      f"other processes took {100 * others:.0f}% of the {os.cpu_count()} cpus while this ran "
      "(if much above 0, every figure is slower than alone, and the ratios are noisier)"
  )
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1, sort_keys=True)


if __name__ == "__main__":
  main()
