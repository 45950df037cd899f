"""Character-level language modelling on text that ships with Python: nothing downloads.

:func:`text_chars` reads the documentation topics bundled inside CPython
(``pydoc_data.topics``: 464,970 characters and 103 symbols under CPython 3.11.7)
and splits them contiguously into train, validation and test parts. Training
batches are random contiguous windows; evaluation uses every non-overlapping
window of a split. The text differs between Python versions, so
:attr:`TextData.source` records the version and a hash of the text.
"""

from __future__ import annotations

import hashlib
import math
import platform
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TextData", "bits_per_char", "text_chars"]

_SPLITS = ("train", "valid", "test")


@dataclass(frozen=True, eq=False)
class TextData:
    """A tokenised text with fixed contiguous splits.

    Attributes
    ----------
    name : str
        ``"text_chars"``.
    vocab : str
        The symbols, sorted; token ``i`` is ``vocab[i]``.
    train, valid, test : Tensor
        Token ids (int64, 1-D) of the three contiguous parts.
    context : int
        Window length of a training or evaluation example.
    source : str
        Where the text came from: Python version, length and a sha256 prefix.
    """

    name: str
    vocab: str
    train: Tensor
    valid: Tensor
    test: Tensor
    context: int
    source: str

    @property
    def vocab_size(self) -> int:
        """Number of distinct symbols."""
        return len(self.vocab)

    def encode(self, text: str) -> Tensor:
        """Token ids of ``text``; raises ``KeyError`` on a symbol outside the vocabulary."""
        index = {c: i for i, c in enumerate(self.vocab)}
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, ids: Tensor) -> str:
        """The text of a 1-D tensor of token ids."""
        return "".join(self.vocab[int(i)] for i in ids)

    def split(self, name: str) -> Tensor:
        """The token ids of split ``"train"``, ``"valid"`` or ``"test"``."""
        if name not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {name!r}")
        return getattr(self, name)

    def windows(self, split: str = "valid") -> tuple[Tensor, Tensor]:
        """Every non-overlapping window of a split: inputs ``(N, context)`` and next-token targets.

        Window ``i`` reads tokens ``[i*context, (i+1)*context)`` and predicts each one's
        successor, so the last window needs one token after it.
        """
        ids = self.split(split)
        n = (len(ids) - 1) // self.context
        x = ids[: n * self.context].view(n, self.context)
        y = ids[1 : n * self.context + 1].view(n, self.context)
        return x, y

    def batches(
        self, batch_size: int, *, seed: int = 0, split: str = "train"
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """An endless stream of random contiguous windows of a split, reproducible from ``seed``.

        Parameters
        ----------
        batch_size : int
            Windows per batch.
        seed : int
            Seed of the window starts (its own generator; global RNGs are untouched).
        split : str
            ``"train"`` (default), ``"valid"`` or ``"test"``.

        Yields
        ------
        (Tensor, Tensor)
            Inputs ``(batch_size, context)`` and targets shifted by one token.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        ids = self.split(split)
        gen = torch.Generator().manual_seed(seed)
        offsets = torch.arange(self.context + 1)
        while True:
            starts = torch.randint(0, len(ids) - self.context, (batch_size,), generator=gen)
            chunk = ids[starts[:, None] + offsets]
            yield chunk[:, :-1], chunk[:, 1:]


def bits_per_char(loss: float) -> float:
    """A mean cross-entropy in nats per character, in bits per character."""
    return loss / math.log(2)


def _topics_text() -> str:
    from pydoc_data import topics

    return "".join(topics.topics.values())


def text_chars(
    *, context: int = 64, valid_fraction: float = 0.05, test_fraction: float = 0.05
) -> TextData:
    """Character-level language modelling on CPython's bundled documentation topics.

    The text is ``"".join(pydoc_data.topics.topics.values())``; the vocabulary is
    its sorted set of characters. The first ``1 - valid_fraction - test_fraction``
    of it is the training part, then the validation part, then the test part
    (contiguous, so no window straddles two parts).

    Parameters
    ----------
    context : int, default 64
        Window length.
    valid_fraction, test_fraction : float, default 0.05
        Shares of the text held out, from its end.

    Returns
    -------
    TextData
        The splits and vocabulary.

    Raises
    ------
    ValueError
        If ``context < 1``, a fraction is negative, or the held-out shares leave no
        training text or a held-out part shorter than one window.
    """
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    if valid_fraction < 0 or test_fraction < 0 or valid_fraction + test_fraction >= 1:
        raise ValueError(
            "valid_fraction and test_fraction must be >= 0 and leave training text, got "
            f"{valid_fraction} and {test_fraction}"
        )
    text = _topics_text()
    vocab = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    n_valid = math.floor(len(ids) * valid_fraction)
    n_test = math.floor(len(ids) * test_fraction)
    n_train = len(ids) - n_valid - n_test
    parts = {"valid": n_valid, "test": n_test}
    for name, n in parts.items():
        if 0 < n <= context:
            raise ValueError(f"the {name} part ({n} characters) is shorter than one window")
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return TextData(
        name="text_chars",
        vocab=vocab,
        train=ids[:n_train],
        valid=ids[n_train : n_train + n_valid],
        test=ids[n_train + n_valid :],
        context=context,
        source=f"pydoc_data.topics, Python {platform.python_version()}, {len(text)} characters, "
        f"sha256 {digest}",
    )
