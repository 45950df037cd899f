"""What a comparison is: :class:`CompareConfig` (flags or a TOML file) and its budget."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import contenders_lm
from .. import data as tg_data
from ..contenders import CONTENDERS, FSDP_CONTENDERS
from ..errors import GrowthInputError

RUN_FILES = ("metrics.csv", "events.jsonl", "result.json")
METRIC_COLUMNS = (
    "epoch",
    "training_flops",
    "parameters",
    "flops_per_example",
    "val_accuracy",
    "val_loss",
    "seconds",
)
GROWTH_KINDS = ("grow", "deepen")

TEXT_DATASETS = {"text_chars": lambda: tg_data.text_chars(context=contenders_lm.CONTEXT)}
"""The text data sets of the gpt family (character-level, fixed splits)."""

FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {
        "data": "fashion_mnist",
        "methods": ("static", "random", "gradmax", "nest", "autogrow", "compnet"),
        "lr": 0.05,
    },
    "gpt": {"data": "text_chars", "methods": tuple(contenders_lm.LM_CONTENDERS), "lr": 2e-3},
}
"""Per model family, the data set, methods and learning rate a comparison defaults to."""
"""Event kinds counted as growth events (pruning and trimming are logged, not counted)."""


@dataclass(frozen=True)
class CompareConfig:
    """The settings of a comparison (everything needed to re-run it exactly).

    Attributes
    ----------
    name : str
        A label for the report.
    model : {"mlp", "gpt"}
        The model family: an MLP classifier grown in width (and by NeST, AutoGrow,
        CompNet), or a character-level GPT grown by the transformer methods.
    data : str, optional
        An offline data set (:func:`torchgrow.data.load`; ``"text_chars"`` for the
        gpt family); default ``"fashion_mnist"`` or ``"text_chars"``.
    methods : tuple of str, optional
        Contender names (:data:`torchgrow.contenders.CONTENDERS`) of the family;
        default all of them.
    seeds : tuple of int
        One run per method and seed.
    budget_epochs : int
        Training epochs every method gets.
    width : int
        Hidden width of the starting networks.
    grow_factor : float
        Width growth ends at ``grow_factor x width``; NeST's seed architecture
        has that width.
    grow_times : int
        Growth steps of the width-growth contenders.
    batch_size : int
        Training batch size.
    lr : float, optional
        SGD learning rate (momentum 0.9) of every method; for the gpt family
        AdamW's peak learning rate. Default 0.05 (mlp) or 2e-3 (gpt).
    val_fraction : float
        Share of the training split held out for validation (decisions and
        curves); test accuracy is only reported.
    train_size, test_size : int, optional
        Random subsets of the data (seeded with 0, the same for all runs).
    threads : int, optional
        ``torch.set_num_threads``.
    epoch_tokens : int, optional
        The gpt family's epoch, in training tokens (default: the training split's
        length); a step trains on ``batch_size x 64`` tokens.
    fsdp : bool
        Under ``torchrun``, shard each run's model with ``fully_shard`` (per layer
        and at the root, :func:`torchgrow.fsdp.shard_layers`) instead of replicating
        it; the mlp family's ``static``, ``random`` and ``gradmax`` only (the others
        edit more of the model than the gathered units), and the runs are not
        resumable (their checkpoints would hold whole models).
    """

    name: str = "compare"
    data: str | None = None
    methods: tuple[str, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    budget_epochs: int = 10
    width: int = 32
    grow_factor: float = 4.0
    grow_times: int = 4
    batch_size: int = 128
    lr: float | None = None
    val_fraction: float = 0.1
    train_size: int | None = None
    test_size: int | None = None
    threads: int | None = None
    model: str = "mlp"
    epoch_tokens: int | None = None
    fsdp: bool = False

    def __post_init__(self) -> None:
        if self.model not in FAMILY_DEFAULTS:
            raise GrowthInputError(
                f"unknown model family {self.model!r}; choose from {sorted(FAMILY_DEFAULTS)}"
            )
        defaults = FAMILY_DEFAULTS[self.model]
        for key in ("data", "methods", "lr"):
            if getattr(self, key) is None:
                object.__setattr__(self, key, defaults[key])
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        unknown = [m for m in self.methods if m not in CONTENDERS]
        if unknown or not self.methods:
            raise GrowthInputError(
                f"unknown methods {unknown} (or none given); choose from {sorted(CONTENDERS)}"
            )
        if len(set(self.methods)) != len(self.methods):
            raise GrowthInputError(f"methods are repeated: {list(self.methods)}")
        other = [m for m in self.methods if CONTENDERS[m].family != self.model]
        if other:
            raise GrowthInputError(
                f"methods {other} grow another model family than {self.model!r}; the "
                f"{self.model} family's are {[n for n, c in CONTENDERS.items() if c.family == self.model]}"
            )
        known = TEXT_DATASETS if self.model == "gpt" else tg_data.DATASETS
        if self.data not in known:
            raise GrowthInputError(
                f"unknown data set {self.data!r} for the {self.model} family; choose from "
                f"{sorted(known)}"
            )
        if self.epoch_tokens is not None and (
            self.model != "gpt" or isinstance(self.epoch_tokens, bool)
            or not isinstance(self.epoch_tokens, int) or self.epoch_tokens < 1
        ):  # fmt: skip
            raise GrowthInputError(
                f"epoch_tokens is a positive int of the gpt family, got {self.epoch_tokens!r} "
                f"for model {self.model!r}"
            )
        if self.model == "gpt" and (self.train_size is not None or self.test_size is not None):
            raise GrowthInputError("train_size and test_size subsample classification data; "
                                   "the gpt family's text has fixed splits")  # fmt: skip
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise GrowthInputError(f"seeds must be distinct and at least one: {self.seeds}")
        for name in ("budget_epochs", "width", "grow_times", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GrowthInputError(f"{name} must be a positive int, got {value!r}")
        if self.budget_epochs < 3:
            raise GrowthInputError(
                f"budget_epochs must be at least 3 (NeST and CompNet split it into phases), "
                f"got {self.budget_epochs}"
            )
        if not self.grow_factor >= 1:
            raise GrowthInputError(f"grow_factor must be >= 1, got {self.grow_factor!r}")
        if not self.lr > 0:
            raise GrowthInputError(f"lr must be > 0, got {self.lr!r}")
        if not 0 < self.val_fraction < 1:
            raise GrowthInputError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        self._check_fsdp()

    def _check_fsdp(self) -> None:
        if self.fsdp is not True and self.fsdp is not False:
            raise GrowthInputError(f"fsdp must be true or false, got {self.fsdp!r}")
        other = [m for m in self.methods if m not in FSDP_CONTENDERS]
        if self.fsdp and other:
            raise GrowthInputError(
                f"fsdp: methods {other} are not run sharded; choose from {list(FSDP_CONTENDERS)}"
            )

    # ------------------------------------------------------------------ TOML
    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (``None`` left out)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_toml(self) -> str:
        """The settings as TOML (read back by :meth:`from_toml`)."""
        lines = ["# torchgrow compare settings: torchgrow compare --config <this file>"]
        for key, value in self.to_dict().items():
            lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CompareConfig:
        """Settings from a dict; unknown keys are an error.

        Parameters
        ----------
        values : dict
            Keys are the attribute names.

        Returns
        -------
        CompareConfig
            The settings.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise GrowthInputError(f"unknown settings {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path) -> CompareConfig:
        """Read settings written by :meth:`to_toml` (or by hand).

        Parameters
        ----------
        path : str or Path
            A TOML file.

        Returns
        -------
        CompareConfig
            The settings.
        """
        try:
            values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no config file at {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise GrowthInputError(f"{path} is not valid TOML: {exc}") from exc
        return cls.from_dict(values)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def parse_budget(text: str) -> int:
    """``"10"``, ``"10ep"`` or ``"10epochs"`` -> 10 training epochs.

    Parameters
    ----------
    text : str
        The ``--budget`` value.

    Returns
    -------
    int
        Epochs.
    """
    t = text.strip().lower()
    for suffix in ("epochs", "epoch", "ep"):
        if t.endswith(suffix):
            t = t[: -len(suffix)]
            break
    else:
        if t.endswith("flops"):
            raise GrowthInputError(
                f"--budget {text}: a training-FLOPs budget is not supported; give epochs "
                "(e.g. --budget 10). Every method gets the same epochs, and the report "
                "compares the training FLOPs each one spent"
            )
    try:
        epochs = int(t)
    except ValueError:
        raise GrowthInputError(
            f"--budget must be a number of epochs like 10, got {text!r}"
        ) from None
    if epochs < 1:
        raise GrowthInputError(f"--budget must be at least 1 epoch, got {text!r}")
    return epochs
