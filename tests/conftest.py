"""Shared fixtures: a private gradc cache directory for the whole test session, and every
compiled program's memory plan checked against the loads of its generated code
(gradc/codegen/program.py `verify_plan`)."""
import os

import pytest

os.environ["GRADC_CHECK_PLAN"] = "1"


@pytest.fixture(scope="session", autouse=True)
def gradc_cache_dir(tmp_path_factory):
    """Point gradc's disk cache (generated modules, Numba's cache) at a session temp dir, so the
    tests neither read nor pollute the user's ~/.cache/gradc. gradc reads the variable each time
    it writes a module, so setting it before the first compile is enough."""
    path = tmp_path_factory.mktemp("gradc-cache")
    old = os.environ.get("GRADC_CACHE_DIR")
    os.environ["GRADC_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GRADC_CACHE_DIR", None)
    else:
        os.environ["GRADC_CACHE_DIR"] = old
