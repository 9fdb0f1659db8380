import numpy as np
import pytest

from manifold_metric import metric


def test_manifold_size_counts_edges_below_threshold():
  b = np.array([0.1, 0.5, 0.2, 0.9, 0.05])
  assert metric.manifold_size(b, 0.2, 5) == 3 / 5
  assert metric.manifold_size(b, 0.2, 2) == 1 / 2  # prefix of n


def test_threshold_is_quantile_of_base_prefix():
  base = np.arange(1000, dtype=float)
  assert metric.threshold(base, 0.4, 1000) == pytest.approx(np.quantile(base, 0.4))
  assert metric.threshold(base, 0.5, 100) == pytest.approx(49.5)


def test_metric_is_difference_in_percent():
  rng = np.random.default_rng(0)
  base = rng.uniform(size=1000)
  cand = base * 0.5  # every barrier halved: more edges under the same lambda
  r = metric.manifold_metric(cand, base, 0.4, 1000)
  assert r["lambda"] == pytest.approx(np.quantile(base, 0.4))
  assert r["m_base"] == pytest.approx(0.4, abs=1e-3)
  assert r["m"] == pytest.approx(np.mean(cand <= r["lambda"]))
  assert r["M"] == pytest.approx(100 * (r["m"] - r["m_base"]))
  assert r["M"] > 30
  assert metric.manifold_metric(base, base, 0.4, 1000)["M"] == 0


def test_grid_uses_prefixes_of_one_set():
  rng = np.random.default_rng(1)
  base, cand = rng.uniform(size=1000), rng.uniform(size=1000)
  rows = metric.grid(cand, base)
  assert len(rows) == len(metric.Q_GRID) * len(metric.N_GRID)
  for r in rows:
    assert r == metric.manifold_metric(cand[:r["n"]], base[:r["n"]], r["q"], r["n"])


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, 1.5])
def test_q_outside_unit_interval_is_rejected(q):
  with pytest.raises(ValueError, match="q must lie in"):
    metric.threshold(np.ones(10), q, 10)


def test_n_larger_than_computed_is_named():
  with pytest.raises(ValueError, match="n = 20 barriers asked for, but only 10"):
    metric.manifold_size(np.ones(10), 0.5, 20)
