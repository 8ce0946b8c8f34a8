"""The moe package's tests. run-pytest.sh puts the build tree's python/ on sys.path and
skips (exit 77) when the package was not built; a missing module here is an error."""
import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
