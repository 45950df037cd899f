"""The checkpoint file: a header, a checksum and the payload, written atomically.

Layout (format 2)::

    MAGIC (16 bytes) | SHA-256 of the payload (32 bytes) | payload length (8 bytes, big-endian)
    | payload (the bytes of ``torch.save``)

The header lets :func:`read_payload` tell an empty, truncated, foreign or
damaged file apart before anything is unpickled; the checksum catches a
single flipped byte anywhere in the payload. Files of format 1 (a bare
``torch.save`` archive) are still read, without a checksum.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ..errors import CheckpointError

__all__ = ["MAGIC", "read_payload", "write_payload"]

MAGIC = b"\x89torchgrow-ckpt\n"  # 16 bytes; the high first byte keeps text tools away
_DIGEST = 32
_LENGTH = 8
_HEADER = len(MAGIC) + _DIGEST + _LENGTH
_ZIP = b"PK\x03\x04"  # a bare torch.save archive: format 1


def write_payload(path: Path, payload: bytes) -> None:
    """Write ``payload`` under the header to ``path``, atomically.

    The bytes go to a temporary file in the same folder, flushed to disk, then
    renamed over ``path``: a reader sees the old file or the whole new one,
    never a part. The temporary file is removed on any failure.
    """
    if path.is_dir():
        raise CheckpointError(f"cannot save a checkpoint to {path}: it is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(payload).digest()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(MAGIC + digest + len(payload).to_bytes(_LENGTH, "big"))
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_payload(path: Path) -> tuple[bytes, int]:
    """The verified payload of the checkpoint at ``path`` and its format (1 or 2).

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    CheckpointError
        If the file is a directory, empty, not a torchgrow checkpoint,
        truncated, longer than its header says, or damaged (checksum).
    """
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a torchgrow checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    data = path.read_bytes()
    if not data:
        raise CheckpointError(
            f"{path} is empty (0 bytes): not a checkpoint; was its writing interrupted?"
        )
    if data.startswith(_ZIP):
        return data, 1  # an older torchgrow checkpoint, or some other torch.save file
    if not data.startswith(MAGIC[: min(len(data), len(MAGIC))]) or len(data) < len(MAGIC):
        raise CheckpointError(
            f"{path} is not a torchgrow checkpoint: it does not start with torchgrow's header "
            "(write checkpoints with torchgrow.save; a plain state_dict needs a model of the "
            "right architecture and model.load_state_dict)"
        )
    if len(data) < _HEADER:
        raise CheckpointError(
            f"{path} is truncated: {len(data)} bytes, shorter than torchgrow's {_HEADER}-byte "
            "header"
        )
    digest = data[len(MAGIC) : len(MAGIC) + _DIGEST]
    length = int.from_bytes(data[len(MAGIC) + _DIGEST : _HEADER], "big")
    payload = data[_HEADER:]
    if len(payload) < length:
        raise CheckpointError(
            f"{path} is truncated: its payload has {len(payload):,} of {length:,} bytes "
            "(an interrupted copy or download?)"
        )
    if len(payload) > length:
        raise CheckpointError(
            f"{path} is damaged: {len(payload) - length:,} bytes follow the {length:,}-byte "
            "payload its header announces"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(
            f"{path} is damaged: the SHA-256 checksum of its payload does not match the one "
            "stored when it was saved (a changed or flipped byte); nothing was loaded"
        )
    return payload, 2
