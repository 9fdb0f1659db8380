import os

import pytest
from hypothesis import settings

# Tests must not grab all memory of a shared GPU if one is present.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# Property tests draw the same examples on every machine, so a CI failure reproduces locally.
settings.register_profile("reproducible", derandomize=True, database=None)
settings.load_profile("reproducible")


@pytest.fixture(scope="session")
def small_study(tmp_path_factory):
  """The small study (tests/workflow_config.yaml) built once per session;
  tests that change it work on a copy (`tests.workflow.copy_project`)."""
  from tests.workflow import make_project, snakemake

  project = make_project(tmp_path_factory.mktemp("small-study"))
  snakemake(project)
  return project
