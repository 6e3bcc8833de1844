"""Per-frame softmax statistics of CTC logits, in one pass.

The frame-mean exit policies (``entropy``, ``max_posterior``) and the greedy CTC search need,
per encoder frame, only four numbers of the exit's CTC logits z (V of them):

``max``         max_v z(v)
``log_sum``     log sum_v exp(z(v) - max)  (= -log of the largest posterior, >= 0)
``mean_shift``  sum_v p(v) (z(v) - max), p = softmax(z)  (<= 0)
``argmax``      the first v with z(v) = max  (the greedy token; blank wins a tie at index 0)

so that the frame entropy is ``log_sum - mean_shift`` and the largest posterior
``exp(-log_sum)``. :func:`frame_stats` computes them

* on CPU float32, with a small C kernel (``csrc/frame_stats.c``: one read of the logits, no
  (T, V) softmax written and read back, rows split over torch's OpenMP threads), when it has
  been built: ``python -m espnet_early_exit.frame_stats build`` (``tools/setup.sh`` does it;
  it needs a C compiler, ``cc`` or ``$CC``). It is 5-7x faster than the torch ops on a
  (250, 5000) logit matrix, which is what brings the exit policies' overhead down;
* otherwise (no kernel, GPU, other dtypes, or ``EEE_FRAME_STATS=torch``) with torch ops
  (softmax, amax, vecdot, argmax): the same values within float32 rounding.

The kernel is built into ``$EEE_KERNEL_DIR`` (default
``${EEE_CACHE_DIR:-~/.cache/espnet-early-exit}/kernels``), under a name keyed by its source and
flags, so a changed source is rebuilt and never loaded stale; the file appears atomically.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import torch

__all__ = ["FrameStats", "frame_stats", "build_kernel", "kernel_path", "kernel_loaded"]

SOURCE = Path(__file__).resolve().parent / "csrc" / "frame_stats.c"
# -fno-trapping-math lets gcc vectorise the clamp and the float -> int step of exp (10x faster);
# no FP exception is relied on. The OpenMP flag is dropped where the compiler has no OpenMP.
CFLAGS = ["-O3", "-fno-trapping-math", "-fPIC", "-shared"]
OPENMP_FLAGS = ["-fopenmp"]


@dataclass(frozen=True)
class FrameStats:
    """Per-frame statistics (each of shape ``logits.shape[:-1]``); see the module docstring."""

    max: torch.Tensor
    log_sum: torch.Tensor
    mean_shift: torch.Tensor
    argmax: torch.Tensor
    vocab_size: int  # V
    finite: bool = False  # True: log_sum and mean_shift are known to be finite everywhere

    def entropy(self) -> torch.Tensor:
        """Frame entropy in nats: log Z - E_p[z] = log_sum - mean_shift."""
        return self.log_sum - self.mean_shift

    def max_posterior(self) -> torch.Tensor:
        return torch.exp(-self.log_sum)

    def frames(self, row: int, n: int) -> "FrameStats":
        """The first n frames of batch row ``row`` (statistics of a (B, T, V) batch)."""
        return FrameStats(*(x[row, :n] for x in self._tensors()), self.vocab_size, self.finite)

    def rows(self, index: torch.Tensor) -> "FrameStats":
        """The batch rows ``index`` (index_select on dimension 0)."""
        return FrameStats(
            *(x.index_select(0, index) for x in self._tensors()), self.vocab_size, self.finite
        )

    def _tensors(self) -> List[torch.Tensor]:
        return [self.max, self.log_sum, self.mean_shift, self.argmax]


# ------------------------------------------------------------------------------ computing
def frame_stats(logits: torch.Tensor) -> FrameStats:
    """Statistics of every frame of ``logits`` (..., V), V >= 1 (the last dimension)."""
    if logits.dim() < 1 or logits.size(-1) < 1:
        raise ValueError(f"logits must be (..., V) with V >= 1, got {tuple(logits.shape)}")
    lib = _kernel() if _kernel_applies(logits) else None
    if lib is not None:
        stats = _kernel_stats(lib, logits)
        if stats is not None:
            return stats
        # NaN or +inf logits: torch's ops give the reference result (non-finite) for them
    return torch_frame_stats(logits)


def torch_frame_stats(logits: torch.Tensor) -> FrameStats:
    """The same statistics with torch ops (any device and dtype): one softmax pass."""
    m = logits.amax(-1)
    probs = torch.softmax(logits, -1)
    # the most likely token's posterior is exp(max z - log Z): log_sum = -log max p
    log_sum = -probs.amax(-1).log()
    mean_shift = torch.linalg.vecdot(probs, logits) - m
    return FrameStats(m, log_sum, mean_shift, logits.argmax(-1), logits.size(-1))


def _kernel_applies(logits: torch.Tensor) -> bool:
    return (
        logits.device.type == "cpu"
        and logits.dtype == torch.float32
        and logits.numel() > 0
        and os.environ.get("EEE_FRAME_STATS", "") != "torch"
    )


def _kernel_stats(lib, logits: torch.Tensor) -> Optional[FrameStats]:
    """The kernel's statistics, or None where some are not finite (NaN or +inf logits)."""
    z = logits.detach().contiguous()
    V = z.size(-1)
    rows = z.numel() // V
    shape = z.shape[:-1]
    floats = torch.empty((3, *shape), dtype=torch.float32)
    argmax = torch.empty(shape, dtype=torch.int64)
    m, log_sum, mean_shift = floats.unbind(0)
    bad = lib.eee_frame_stats(
        z.data_ptr(), rows, V, m.data_ptr(), log_sum.data_ptr(), mean_shift.data_ptr(),
        argmax.data_ptr(), torch.get_num_threads(),
    )
    if bad:
        return None
    return FrameStats(m, log_sum, mean_shift, argmax, V, finite=True)


# ------------------------------------------------------------------------- the C kernel
def kernel_dir() -> Path:
    if os.environ.get("EEE_KERNEL_DIR"):
        return Path(os.environ["EEE_KERNEL_DIR"])
    cache = os.environ.get("EEE_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "espnet-early-exit"
    )
    return Path(cache) / "kernels"


def kernel_path(directory: Optional[Path] = None) -> Path:
    """Where the kernel for this source, these flags and this machine type lives."""
    key = hashlib.sha256(
        SOURCE.read_bytes() + repr((CFLAGS, OPENMP_FLAGS, platform.machine())).encode()
    ).hexdigest()[:12]
    return Path(directory or kernel_dir()) / f"frame_stats-{key}.so"


def _compiler() -> str:
    for name in [os.environ.get("CC"), "cc", "gcc", "clang"]:
        if name and shutil.which(name):
            return name
    raise RuntimeError(
        "no C compiler found (tried $CC, cc, gcc, clang); install one (Debian: apt-get install "
        "gcc) or decode without the kernel (torch ops, slower on CPU)"
    )


def build_kernel(directory: Optional[Path] = None, compiler: Optional[str] = None,
                 force: bool = False) -> Path:
    """Compile ``csrc/frame_stats.c`` into :func:`kernel_path` (atomically) and return it.

    Tries with OpenMP first, then without (single-threaded). Raises RuntimeError with the
    compiler's message when both fail.
    """
    target = kernel_path(directory)
    if target.exists() and not force:
        return target
    cc = compiler or _compiler()
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for extra in (OPENMP_FLAGS, []):
        fd, tmp = tempfile.mkstemp(prefix=".frame_stats-", suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [cc, *CFLAGS, *extra, "-o", tmp, str(SOURCE), "-lm"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            os.unlink(tmp)
            raise RuntimeError(f"cannot run the C compiler {cc!r}: {e}") from None
        if proc.returncode == 0:
            os.replace(tmp, target)
            return target
        os.unlink(tmp)
        errors.append(f"$ {' '.join(cmd)}\n{proc.stderr.strip()}")
    raise RuntimeError("building the frame-statistics kernel failed:\n" + "\n".join(errors))


_LIB = None
_LIB_TRIED = False


def _load(path: Path):
    lib = ctypes.CDLL(str(path))
    fn = lib.eee_frame_stats
    fn.restype = ctypes.c_int64
    fn.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
    ]
    return lib


def _kernel():
    """The loaded kernel, or None where it was not built (then torch ops are used)."""
    global _LIB, _LIB_TRIED
    if not _LIB_TRIED:
        _LIB_TRIED = True
        path = kernel_path()
        if path.exists():
            try:
                _LIB = _load(path)
                logging.info("frame statistics: C kernel %s", path)
            except OSError as e:
                logging.warning("frame statistics: cannot load %s (%s); using torch ops", path, e)
        else:
            logging.info(
                "frame statistics: torch ops (the C kernel is not built; "
                "`python -m espnet_early_exit.frame_stats build` makes CPU decoding faster)"
            )
    return _LIB


def use_kernel(path: Optional[Path]) -> None:
    """Load the kernel from ``path`` (None: forget it and use torch ops). For tests/benchmarks."""
    global _LIB, _LIB_TRIED
    _LIB_TRIED = True
    _LIB = None if path is None else _load(Path(path))


def kernel_loaded() -> bool:
    return _kernel() is not None


# ---------------------------------------------------------------------------------- CLI
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m espnet_early_exit.frame_stats",
        description="Build or locate the C kernel of the per-frame CTC softmax statistics.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile the kernel (once per source version)")
    b.add_argument("--force", action="store_true", help="rebuild even if it exists")
    b.add_argument("--dir", type=Path, default=None, help=f"default: {kernel_dir()}")
    sub.add_parser("path", help="print where the kernel is looked for, and whether it exists")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        try:
            path = build_kernel(args.dir, force=args.force)
        except RuntimeError as e:
            print(f"ERROR: {e}", file=sys.stderr)
            return 1
        print(path)
        return 0
    path = kernel_path()
    print(f"{path} ({'built' if path.exists() else 'not built'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
