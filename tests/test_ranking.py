"""The ranking before training: candidates by mean M_0 over seeds."""

import numpy as np
import pandas as pd
import pytest

from manifold_metric import metric, ranking


def barriers(values):
  """Epoch-0 barrier sets: {(expansion, seed): array}."""
  return pd.concat([pd.DataFrame({"expansion": e, "seed": s, "epoch": 0,
                                  "node": np.arange(1, len(b) + 1), "barrier": b})
                    for (e, s), b in values.items()], ignore_index=True)


def test_rank_orders_by_mean_m0_with_scores_beside():
  rng = np.random.default_rng(0)
  base = {s: rng.random(100) for s in (0, 1)}
  sets = {("base", s): b for s, b in base.items()}
  sets.update({("small", s): b * 0.9 for s, b in base.items()})   # some edges more
  sets.update({("large", s): b * 0.5 for s, b in base.items()})   # many more
  sets.update({("none", s): b + 1.0 for s, b in base.items()})    # none at all
  scores = pd.DataFrame([{"expansion": e, "seed": s, "epoch": 0, "size": size, "snip": 1.0 + s}
                         for e, size in (("base", 10), ("small", 20), ("large", 40),
                                         ("none", 30)) for s in (0, 1)])
  table = ranking.rank(barriers(sets), scores, 0.4, 100)
  assert table.expansion.tolist() == ["large", "small", "none"]
  assert table["rank"].tolist() == [1, 2, 3]
  want = np.mean([metric.manifold_metric(sets[("large", s)], base[s], 0.4, 100)["M"]
                  for s in (0, 1)])
  assert table.M0[0] == pytest.approx(want)
  assert table.set_index("expansion").loc["none", "M0"] == pytest.approx(-40.0)
  assert table["size"].tolist() == [40, 20, 30] and (table.snip == 1.5).all()
  assert (table.seeds == 2).all()
  md = ranking.markdown(table, "s", 0.4, 100)
  assert md.startswith("# s: candidate expansions ranked") and "| large" in md


def test_rank_needs_phi_star_of_every_seed():
  b = barriers({("base", 0): np.ones(10), ("x", 1): np.ones(10)})
  with pytest.raises(ValueError, match="seed 1"):
    ranking.rank(b, pd.DataFrame(columns=["expansion", "seed", "size"]), 0.4, 10)
