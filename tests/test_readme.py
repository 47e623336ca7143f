"""The README's list of supported NumPy names stays in step with what the tracer accepts."""
import os

import gradc  # noqa: F401  (registers the ops)
from gradc.trace import supported_numpy_names

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_readme_lists_every_supported_numpy_name():
    text = open(README, encoding="utf-8").read()
    missing = [n for n in supported_numpy_names() if f"`np.{n}`" not in text]
    assert not missing, f"add these to README.md's 'Supported NumPy' section: {missing}"
