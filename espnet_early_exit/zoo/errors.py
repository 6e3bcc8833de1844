"""The model zoo's errors: one base class, one subclass per way an archive can be refused."""

from __future__ import annotations


class ModelZooError(RuntimeError):
    """A model archive or repository that cannot be packed, loaded or published."""


class CorruptArchiveError(ModelZooError):
    """Not a zip, truncated, or a member whose CRC does not match."""


class UnsafeArchiveError(ModelZooError):
    """A member or a meta.yaml entry that would write or read outside the unpack dir."""


class IncompleteArchiveError(ModelZooError):
    """meta.yaml missing, malformed, or listing files that are not there."""


class UnsafeModelFileError(ModelZooError):
    """A .pth that does not load with ``torch.load(weights_only=True)`` or holds non-tensors."""
