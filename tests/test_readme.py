"""The README's list of supported NumPy names is the one the tracer accepts, made from the ops."""
import os

import gradc  # noqa: F401  (registers the ops)
from gradc.ops import all_ops
from gradc.trace import (README_BEGIN, README_END, _ufunc_name, supported_markdown,
                         supported_numpy_names)

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def _readme():
    return open(README, encoding="utf-8").read()


def test_readme_supported_list_is_generated_from_the_ops():
    block = _readme().split(README_BEGIN + "\n", 1)[1].split(README_END, 1)[0]
    assert block == supported_markdown(), "the README's supported list is stale: run `make readme`"


def test_readme_lists_every_supported_numpy_name():
    text = _readme()
    missing = [n for n in supported_numpy_names() if f"`{n}`" not in text]
    assert not missing, f"run `make readme`: README.md lacks {missing}"


def test_readme_lists_every_ufunc_an_op_names():
    text = _readme()
    missing = [(op.name, _ufunc_name(u)) for op in all_ops().values() for u in op.ufuncs
               if f"`{_ufunc_name(u)}`" not in text]
    assert not missing, f"run `make readme`: README.md lacks {missing}"
