"""The compiled kernels are cached on disk: a fresh process compiles them once (an empty cache)
and every later process loads them instead. What each pays on its first window is printed
(``pytest -s``); ``python -m rnnlab.bench`` records the same figures."""

import pytest

from rnnlab.bench import engine


@pytest.mark.slow  # three fresh processes, one of them compiling every B = 1 vanilla kernel
def test_a_second_process_loads_the_kernels_instead_of_compiling_them():
    s = engine.startup_figures()
    engine.print_startup(s)
    assert s["cold"]["compiled"] >= 4 and s["cold"]["loaded"] == 0  # forward, head, backward, ...
    # a warm process loads what Python calls: the window (its callees compiled into it) and the
    # update
    assert s["warm"]["compiled"] == 0 and s["warm"]["loaded"] >= 2
    assert s["numpy_cells"]["compiled"] == s["numpy_cells"]["loaded"] == 0  # numba not imported
