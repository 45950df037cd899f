"""Data sets read from files on the machine: IDX files (Fashion-MNIST from Debian's
``dataset-fashion-mnist``, or MNIST in a folder you name) and CIFAR-10's python pickles, loaded
without running any code they hold."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import Dataset, _images, _labels

__all__ = ["FASHION_MNIST_ROOT", "read_idx", "fashion_mnist", "mnist_folder", "cifar10_folder"]

#: Default location of Debian's ``dataset-fashion-mnist`` package.
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


# IDX type codes: https://yann.lecun.com/exdb/mnist/ (the format description).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed when its name ends in ``.gz``).

    The header is two zero bytes, a type code (``0x08`` for unsigned bytes) and
    the number of dimensions, then each dimension as a big-endian 32-bit
    integer; the data follow. MNIST image files therefore start with the magic
    number 2051 (``0x00000803``) and label files with 2049 (``0x00000801``).

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    numpy.ndarray
        The array, with the shape from the header, in native byte order.

    Raises
    ------
    ValueError
        If the header is malformed or the data length does not match it.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    zero1, zero2, code, ndim = struct.unpack(">BBBB", raw[:4])
    if zero1 != 0 or zero2 != 0 or code not in _IDX_DTYPES or ndim == 0:
        magic = struct.unpack(">I", raw[:4])[0]
        raise ValueError(f"{path}: bad IDX magic number 0x{magic:08X}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: header promises {dims} ({expected} bytes of data), "
            f"file holds {len(raw) - header}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


# (split, kind) -> accepted base names; '.gz' variants are also accepted.
_IDX_NAMES: dict[tuple[str, str], tuple[str, ...]] = {
    ("train", "images"): ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("train", "labels"): ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("test", "images"): ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_idx(root: Path, split: str, kind: str) -> Path | None:
    for folder in (root, root / "raw", root / "MNIST" / "raw"):
        for base in _IDX_NAMES[(split, kind)]:
            for name in (base + ".gz", base):
                if (folder / name).is_file():
                    return folder / name
    return None


def _idx_dataset(root: str | Path, name: str, hint: str) -> Dataset:
    root = Path(root)
    paths = {key: _find_idx(root, *key) for key in _IDX_NAMES}
    missing = [_IDX_NAMES[key][0] + "[.gz]" for key, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(f"{name}: {', '.join(missing)} not found in {root}. {hint}")
    arrays: dict[tuple[str, str], np.ndarray] = {}
    for (split, kind), path in paths.items():
        assert path is not None
        arr = read_idx(path)
        want_ndim = 3 if kind == "images" else 1
        if arr.ndim != want_ndim or arr.dtype != np.uint8:
            raise ValueError(
                f"{path}: expected {want_ndim}-d unsigned-byte {kind} "
                f"(magic {2051 if kind == 'images' else 2049}), got {arr.ndim}-d {arr.dtype}"
            )
        arrays[(split, kind)] = arr
    h, w = arrays[("train", "images")].shape[1:]
    if arrays[("test", "images")].shape[1:] != (h, w):
        raise ValueError(f"{name}: train and test images differ in size")
    return Dataset(
        name=name,
        x_train=_images(arrays[("train", "images")], (1, h, w), 255.0),
        y_train=_labels(arrays[("train", "labels")]),
        x_test=_images(arrays[("test", "images")], (1, h, w), 255.0),
        y_test=_labels(arrays[("test", "labels")]),
        num_classes=10,
        input_shape=(1, h, w),
        task="classification",
    )


def fashion_mnist(root: str | Path = FASHION_MNIST_ROOT) -> Dataset:
    """Fashion-MNIST read from its four gzip IDX files (60,000 train, 10,000 test).

    Parameters
    ----------
    root : str or Path, default ``"/usr/share/datasets/fashion-mnist"``
        Folder holding ``train-images-idx3-ubyte.gz``,
        ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
        ``t10k-labels-idx1-ubyte.gz`` (uncompressed copies also work). The
        default is where Debian's ``dataset-fashion-mnist`` package puts them.

    Returns
    -------
    Dataset
        Inputs of shape ``(1, 28, 28)`` in [0, 1], 10 classes.

    Raises
    ------
    FileNotFoundError
        If the files are not there; the message says how to get them.
    """
    hint = (
        "Install them with `apt-get install dataset-fashion-mnist` (Debian), "
        "or pass root= to a folder holding the four files."
    )
    return _idx_dataset(root, "fashion_mnist", hint)


def mnist_folder(root: str | Path) -> Dataset:
    """MNIST (or any data set in the same layout) read from IDX files in ``root``.

    Parameters
    ----------
    root : str or Path
        Folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each either
        gzip-compressed (``.gz``) or not; the ``train-images.idx3-ubyte``
        spelling and the ``raw/`` and ``MNIST/raw/`` sub-folders are also
        searched. Nothing is downloaded.

    Returns
    -------
    Dataset
        Inputs of shape ``(1, H, W)`` (``(1, 28, 28)`` for MNIST) in [0, 1],
        10 classes.

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    ValueError
        If a file is not a well-formed unsigned-byte IDX file.
    """
    return _idx_dataset(root, "mnist", "Put the four MNIST IDX files there; nothing is downloaded.")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays, and refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays, lists "
                "and bytes, and loading other objects could run code"
            )
        return super().find_class(module, name)


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as fh:
        try:
            batch = _ArrayUnpickler(fh, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise ValueError(f"{path}: not a CIFAR-10 batch ({exc})") from exc
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: not a CIFAR-10 batch (no 'data'/'labels' entries)")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected data of shape (N, 3072), got {data.shape}")
    return data, np.asarray(labels, dtype=np.int64)


def cifar10_folder(root: str | Path) -> Dataset:
    """CIFAR-10 read from the standard python-pickle batches in a local folder.

    The batches are Python pickles; they are read with an unpickler that
    accepts arrays, lists and bytes only, so a planted file cannot run code.

    Parameters
    ----------
    root : str or Path
        Folder holding ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``,
        directly or inside a ``cifar-10-batches-py`` sub-folder (the layout of
        the official ``cifar-10-python.tar.gz``, once extracted).

    Returns
    -------
    Dataset
        Inputs of shape ``(3, 32, 32)`` in [0, 1], 10 classes.

    Raises
    ------
    FileNotFoundError
        If the batches are not found.
    """
    root = Path(root)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for folder in (root, root / "cifar-10-batches-py"):
        if all((folder / n).is_file() for n in names):
            break
    else:
        raise FileNotFoundError(
            f"cifar10: {', '.join(names)} not found in {root} or {root / 'cifar-10-batches-py'}. "
            "Extract the python version of CIFAR-10 (cifar-10-python.tar.gz) there; "
            "nothing is downloaded."
        )
    train = [_load_cifar_batch(folder / n) for n in names[:5]]
    x_te, y_te = _load_cifar_batch(folder / "test_batch")
    x_tr = np.concatenate([b[0] for b in train])
    y_tr = np.concatenate([b[1] for b in train])
    return Dataset(
        name="cifar10",
        x_train=_images(x_tr, (3, 32, 32), 255.0),
        y_train=_labels(y_tr),
        x_test=_images(x_te, (3, 32, 32), 255.0),
        y_test=_labels(y_te),
        num_classes=10,
        input_shape=(3, 32, 32),
        task="classification",
    )
