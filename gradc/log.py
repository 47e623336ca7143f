"""GRADC_LOG: what gradc says on stderr while it works (GRADC_LOG=compiles: each compile, why,
and where the time went)."""
import os
import sys


def enabled(topic):
    """Whether GRADC_LOG (a comma-separated list) names `topic`."""
    return topic in os.environ.get("GRADC_LOG", "").split(",")


def log(message):
    print(f"gradc: {message}", file=sys.stderr, flush=True)


def log_compile(what, source, why, kernels, timings):
    """The GRADC_LOG=compiles line of one compile: `timings` in seconds by stage name."""
    if enabled("compiles"):
        spent = ", ".join(f"{stage} {seconds * 1e3:.0f} ms" for stage, seconds in timings.items())
        log(f"compiled {what} at {source}: {why}; {kernels} kernels; {spent}")
