"""Table 4: seconds per score on one checkpoint, and its Markdown."""

import jax
import numpy as np
import pandas as pd

from manifold_metric import archs, data, image_models, proxies, timing


def test_table4_times_every_score_and_says_what_each_computes():
  digits = data.load("digits", limit=200)
  arch = archs.MLP((6,), 10)
  shapes = jax.eval_shape(lambda: image_models.init(arch, jax.random.key(0), (8, 8, 1)))
  rng = np.random.default_rng(0)
  v = jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(s.dtype), shapes)
  times = timing.table4_times(arch, v, digits, seed=0, n=20, batch_size=32)
  assert set(times) == set(timing.COMPUTATION) == {"manifold", *proxies.NAMES}
  assert all(0 < t < 10 for t in times.values()), times
  table = pd.DataFrame(
      [
          {"setting": s, "metric": k, "seconds": t * f, "n": 20, "batch_size": 32, "device": "cpu"}
          for s, f in (("a", 1.0), ("b", 3.0))
          for k, t in times.items()
      ]
  )
  md = timing.table4_markdown(table)
  assert "computation" in md and "no backward" in md and "n = 20 nodes, on cpu" in md
  assert "a: 32, b: 32" in md
  ratio = times["manifold"] / times["synflow"]  # the same in both settings
  text = f"{ratio:.0f}x" if ratio >= 1 else f"{ratio:.2f}x"
  assert f"took {text}, {text} SynFlow's time (a, b)" in md
  rows = [line for line in md.splitlines() if line.startswith("| ")]
  assert [r.split("|")[1].strip() for r in rows[1:]] == list(timing.COMPUTATION)  # in order
  manifold = next(r for r in rows if r.startswith("| manifold"))
  assert f"{times['manifold']:.4f}" in manifold and f"{3 * times['manifold']:.4f}" in manifold
