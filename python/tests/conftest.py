import itertools
import os

import pytest

_counter = itertools.count()


@pytest.fixture
def tag():
    """A fresh tag per call: event tags are process-unique and never released (R1.2)."""
    pid = os.getpid()
    return lambda name="t": f"py-{name}-{pid}-{next(_counter)}"
