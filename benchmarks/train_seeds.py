"""One candidate's training for S seeds: one process, the seeds vmapped in
one program (as the workflow's train_candidate job), against S processes of
one seed each (as the workflow's jobs were before). Both in this one run.

  .venv/bin/python benchmarks/train_seeds.py [--seeds 5] [--epochs 20] [--out result.json]

The candidate is the default study's largest of fmnist-mlp: an MLP whose
hidden layer of 4 is widened to 12, on the 16,000 Fashion-MNIST training
images shipped with the package, AdamW at batch 512 (config/config.yaml).
Each process is timed from its start to its end (the start-up of Python,
JAX and the package included, as a job pays it) and reports its own
compute (compilation and training) apart.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

RUN = r"""
import json, sys, time
start = time.perf_counter()
import jax
from manifold_metric import archs, expansion, tracks, train
ds = tracks.load_dataset(sys.argv[1])
seeds, epochs = json.loads(sys.argv[2]), int(sys.argv[3])
imported = time.perf_counter()
arch = tracks.build_arch({"kind": "mlp", "hidden": [4]}, ds)
phi = tracks.init_seeds(arch, seeds, ds)
arch, theta = expansion.expand_seeds(arch, phi, {"kind": "widen_first", "width": 12}, seeds)
hp = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "b1": 0.9, "b2": 0.999,
      "batch_size": 512}
_, histories = train.fit(arch, theta, ds, hp=hp, seeds=seeds, epochs=epochs, run="benchmark")
print(json.dumps({"import_s": imported - start, "compute_s": time.perf_counter() - imported,
                  "performance": [h[-1]["performance"] for h in histories]}))
"""


def process(npz, seeds, epochs):
  start = time.perf_counter()
  out = subprocess.run(
      [sys.executable, "-c", RUN, npz, json.dumps(seeds), str(epochs)],
      check=True,
      capture_output=True,
      text=True,
  ).stdout
  return {"wall_s": time.perf_counter() - start, **json.loads(out.splitlines()[-1])}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--epochs", type=int, default=20)
  parser.add_argument("--out", default=None, help="also write the figures as JSON here")
  args = parser.parse_args()
  from manifold_metric import data, study

  ds = data.load("fashion_mnist", study.bundled_dir("fashion_mnist"))
  seeds = list(range(args.seeds))
  with tempfile.TemporaryDirectory() as tmp:
    npz = os.path.join(tmp, "fmnist.npz")
    data.save(ds, npz)
    process(npz, [0], 1)  # warms the file system cache: neither side pays for it
    batched = process(npz, seeds, args.epochs)
    separate = [process(npz, [s], args.epochs) for s in seeds]
  wall = sum(p["wall_s"] for p in separate)
  compute = sum(p["compute_s"] for p in separate)
  result = {
      "seeds": args.seeds,
      "epochs": args.epochs,
      "batched": batched,
      "separate": separate,
      "separate_wall_s": wall,
      "separate_compute_s": compute,
      "wall_ratio": batched["wall_s"] / wall,
      "compute_ratio": batched["compute_s"] / compute,
  }
  print(f"{args.seeds} seeds x {args.epochs} epochs of the MLP F(12) on 16,000 images:")
  print(
      f"  one process, seeds vmapped: {batched['wall_s']:6.1f} s wall "
      f"({batched['import_s']:.1f} s start-up, {batched['compute_s']:.1f} s compute)"
  )
  print(
      f"  {args.seeds} processes, one seed each: {wall:6.1f} s wall in all "
      f"({sum(p['import_s'] for p in separate):.1f} s start-up, {compute:.1f} s compute)"
  )
  print(
      f"  ratio batched / separate: wall {result['wall_ratio']:.3f}, "
      f"compute {result['compute_ratio']:.3f}"
  )
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
