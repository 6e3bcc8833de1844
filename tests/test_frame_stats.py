"""Per-frame CTC softmax statistics: the C kernel and the torch ops against a float64 reference."""

import math
import os
import stat

import pytest
import torch

from espnet_early_exit import frame_stats as fs
from espnet_early_exit.frame_stats import FrameStats, build_kernel, frame_stats, torch_frame_stats


def _have_cc() -> bool:
    try:
        fs._compiler()  # the lookup build_kernel uses
    except RuntimeError:
        return False
    return True


HAVE_CC = _have_cc()


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """The kernel built from this checkout's source into a fresh directory, then loaded."""
    if not HAVE_CC:
        pytest.skip("no C compiler: the kernel cannot be built here (torch ops are used)")
    path = build_kernel(tmp_path_factory.mktemp("kernels"))
    fs.use_kernel(path)
    yield path
    fs.use_kernel(None)
    fs._LIB_TRIED = False  # back to the default lookup for later tests


def reference(logits: torch.Tensor):
    """max, log_sum, mean_shift, entropy (nats), argmax from float64 log-posteriors."""
    z = logits.double()
    m = z.amax(-1)
    lp = torch.log_softmax(z, -1)
    p = lp.exp()
    plogp = torch.where(p > 0, p * lp, torch.zeros_like(p))
    log_sum = torch.logsumexp(z - m.unsqueeze(-1), -1)
    zs = torch.where(p > 0, z - m.unsqueeze(-1), torch.zeros_like(z))
    return m, log_sum, (p * zs).sum(-1), -plogp.sum(-1), z.argmax(-1)


def check(stats: FrameStats, logits: torch.Tensor, tol: float):
    m, log_sum, mean_shift, entropy, argmax = reference(logits)
    assert stats.vocab_size == logits.size(-1)
    assert stats.max.shape == logits.shape[:-1] and stats.argmax.dtype == torch.int64
    assert torch.equal(stats.max.double(), m)
    assert torch.allclose(stats.log_sum.double(), log_sum, atol=tol, rtol=0)
    assert torch.allclose(stats.mean_shift.double(), mean_shift, atol=tol, rtol=tol)
    assert torch.allclose(stats.entropy().double(), entropy, atol=tol, rtol=tol)
    assert torch.allclose(stats.max_posterior().double(), (-log_sum).exp(), atol=tol, rtol=0)
    assert torch.equal(stats.argmax, argmax)


@pytest.mark.parametrize("scale", [0.01, 1.0, 5.0, 60.0])
@pytest.mark.parametrize("shape", [(40, 6), (3, 70, 5000), (17, 130), (1, 2)])
def test_kernel_and_torch_ops_match_float64(kernel, shape, scale):
    torch.manual_seed(1)
    logits = torch.randn(*shape) * scale
    logits[..., ::4, 0] += 3 * scale  # blank-dominated frames
    check(frame_stats(logits), logits, 2e-5)  # the kernel (float32, CPU)
    check(torch_frame_stats(logits), logits, 5e-5)


def test_kernel_edge_values(kernel):
    z = torch.randn(6, 300)
    z[0, 17:] = -math.inf  # p = 0 for most tokens: no NaN, the p log p = 0 rule
    z[1, :] = 4.0  # uniform: entropy log V, every token a tie -> the first (0)
    z[2, 5] = z[2, 250] = 50.0  # tie of two maxima far from the rest
    z[3, 299] = 1e4  # one certain token at the end of the row (last, partial block)
    z[4] = -z[4] * 1e3  # extremely peaky, many exp underflows
    stats = frame_stats(z)
    check(stats, z, 2e-5)
    assert stats.argmax[1] == 0 and stats.argmax[2] == 5 and stats.argmax[3] == 299
    assert stats.entropy()[1].item() == pytest.approx(math.log(300), abs=1e-5)
    assert bool(torch.isfinite(stats.entropy()).all())
    assert stats.finite  # the kernel checked every row (no per-call torch checks needed)
    # torch ops give NaN where a frame has -inf logits (0 * -inf): the policies then use
    # the exact rule on log-posteriors; the kernel needs no such fallback
    ref = torch_frame_stats(z)
    assert not ref.finite and not bool(torch.isfinite(ref.entropy()).all())


def test_nan_logits_fall_back_to_torch_ops(kernel):
    z = torch.randn(4, 50)
    z[2, 7] = math.nan
    stats = frame_stats(z)
    ref = torch_frame_stats(z)
    assert not stats.finite  # the kernel counted the bad row and handed over to torch ops
    assert torch.isnan(stats.log_sum[2]) and torch.isnan(ref.log_sum[2])
    assert torch.equal(stats.argmax, ref.argmax)


def test_threads_views_and_dtypes(kernel):
    torch.manual_seed(2)
    z = torch.randn(2, 90, 700) * 4
    one = frame_stats(z)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = frame_stats(z)
    finally:
        torch.set_num_threads(n)
    for a, b in zip(one._tensors(), single._tensors()):
        assert torch.equal(a, b)  # rows are independent: the thread split changes nothing
    # a non-contiguous view, float64 (torch ops) and grad-requiring logits all work
    view = z.transpose(0, 1)
    check(frame_stats(view), view, 2e-5)
    check(frame_stats(z.double()), z, 1e-9)
    check(frame_stats(z.clone().requires_grad_()), z, 2e-5)


def test_batch_row_and_frame_selection(kernel):
    z = torch.randn(3, 8, 20)
    stats = frame_stats(z)
    part = stats.frames(1, 5)
    assert torch.equal(part.log_sum, stats.log_sum[1, :5]) and part.vocab_size == 20
    rows = stats.rows(torch.tensor([2, 0]))
    assert torch.equal(rows.argmax, stats.argmax[[2, 0]])


def test_torch_fallback_switch(kernel, monkeypatch):
    z = torch.randn(5, 30)
    monkeypatch.setenv("EEE_FRAME_STATS", "torch")
    assert fs._kernel_applies(z) is False
    monkeypatch.delenv("EEE_FRAME_STATS")
    assert fs._kernel_applies(z) is True
    assert fs._kernel_applies(z.double()) is False


def test_build_is_keyed_by_source_and_atomic(tmp_path, kernel):
    first = build_kernel(tmp_path)
    assert first.exists() and first.name.startswith("frame_stats-")
    assert build_kernel(tmp_path) == first  # built once
    mtime = first.stat().st_mtime_ns
    assert build_kernel(tmp_path, force=True) == first and first.stat().st_mtime_ns >= mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporaries left


def test_build_errors_are_clear(tmp_path, monkeypatch):
    broken = tmp_path / "badcc"
    broken.write_text("#!/bin/sh\necho 'badcc: cannot compile' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(RuntimeError, match="frame-statistics kernel failed(.|\n)*badcc: cannot"):
        build_kernel(tmp_path / "k", compiler=str(broken))
    assert list((tmp_path / "k").iterdir()) == []  # nothing half-written
    with pytest.raises(RuntimeError, match="cannot run the C compiler"):
        build_kernel(tmp_path / "k2", compiler=str(tmp_path / "missing-cc"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(RuntimeError, match="no C compiler found"):
        fs._compiler()


def test_bad_shape():
    with pytest.raises(ValueError, match=r"logits must be \(\.\.\., V\)"):
        frame_stats(torch.zeros(4, 0))


def test_cli_path_and_build(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EEE_KERNEL_DIR", str(tmp_path))
    assert fs.main(["path"]) == 0
    assert "not built" in capsys.readouterr().out
    if HAVE_CC:
        assert fs.main(["build"]) == 0
        built = capsys.readouterr().out.strip()
        assert built == str(fs.kernel_path()) and os.path.exists(built)
        assert fs.main(["path"]) == 0
        assert "(built)" in capsys.readouterr().out
