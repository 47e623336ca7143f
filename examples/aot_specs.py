"""Example arguments for `gradc compile` (ahead of time), one function per compiled module.

`make kernels` compiles the examples' loss functions with these into `kernels/` (see the
Makefile and kernels/README.md). Each function returns the arguments its loss takes, as a
tuple, with `Spec(shape, dtype)` placeholders: only shapes and dtypes matter to the compiler.
The loss functions themselves live in the examples; the shapes here are the ones the examples
train with (their default sizes and minibatch of 32).
"""
import numpy as np

from gradc.aot import Spec

from digits_cnn import CHANNELS
from digits_mlp import HIDDEN
from linear_regression import N_FEATURES, N_SAMPLES

BATCH = 32  # the digits examples' default minibatch


def linear_regression_args():
    """loss(params, x, y) of examples/linear_regression.py: the full batch of 256 samples."""
    params = {"w": Spec((N_FEATURES, 1), np.float32), "b": Spec((1,), np.float32)}
    return params, Spec((N_SAMPLES, N_FEATURES), np.float32), Spec((N_SAMPLES, 1), np.float32)


def digits_mlp_args():
    """loss(params, x, y) of examples/digits_mlp.py: 64-128-10, a minibatch of 32 images."""
    params = {"W1": Spec((64, HIDDEN)), "b1": Spec((HIDDEN,)),
              "W2": Spec((HIDDEN, 10)), "b2": Spec((10,))}
    return params, Spec((BATCH, 64), np.float32), Spec((BATCH,), np.int64)


def digits_cnn_args():
    """loss(params, x, y) of examples/digits_cnn.py: conv 3x3 x16, pool, dense; 32 images."""
    params = {"conv_w": Spec((CHANNELS, 1, 3, 3)), "conv_b": Spec((CHANNELS,)),
              "W": Spec((CHANNELS * 4 * 4, 10)), "b": Spec((10,))}
    return params, Spec((BATCH, 1, 8, 8), np.float32), Spec((BATCH,), np.int64)
