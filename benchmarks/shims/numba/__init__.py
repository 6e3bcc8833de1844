"""A stand-in for numba where it is not installed (benchmarks/gpu_check.sh, on the GPU machine).

numba and llvmlite would take most of the check's 64 MiB; ESPnet and librosa import them at
import time (ESPnet's TTS alignments, librosa's helpers) but the check never calls a compiled
function. Here every decorator returns the function unchanged (plain Python), so those imports
work; a real numba is always preferred (gpu_check.sh adds this folder only when numba is absent).
"""

__version__ = "0.0.0+gpu-check-shim"


class _Any:
    """Any attribute, call or index: itself (numba.types.float32[:], numba.config.X, ...)."""

    def __getattr__(self, name):
        return self

    def __getitem__(self, key):
        return self

    def __call__(self, *args, **kwargs):
        return self


def _decorator(*args, **kwargs):
    """``@jit``, ``@jit(...)``, ``@guvectorize([...], "(n)->(n)")``: the function unchanged."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda function: function


jit = njit = vectorize = guvectorize = stencil = generated_jit = cfunc = overload = _decorator
prange = range


def __getattr__(name):
    return _Any()
