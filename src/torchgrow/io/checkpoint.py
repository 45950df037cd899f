"""The checkpoint of a grown model, its optimizer and its grower: what is stored, and how.

A grown model no longer has the architecture its class builds by default, so
a bare ``state_dict`` cannot be loaded back into a freshly built model. A
torchgrow checkpoint therefore stores the model *object* (pickled, together
with its ``state_dict``), the optimizer as its class, defaults, param groups
(parameters by name) and ``state_dict``, the grower as its when/where/how/size
policy objects (pickled) plus :meth:`~torchgrow.Grower.state_dict`, and the
torch random-number-generator state. :mod:`torchgrow.io.safety` says what
loading may import; :mod:`torchgrow.io.fileformat` how the file is laid out.
"""

from __future__ import annotations

import copy
import inspect
import io
import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import CheckpointError
from ..grower import Grower
from .fileformat import read_payload, write_payload
from .safety import resolve_safe_globals

__all__ = ["Checkpoint", "CheckpointError", "save", "load"]

FORMAT = "torchgrow-checkpoint"
VERSION = 2

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Checkpoint:
    """What :func:`load` returns.

    Attributes
    ----------
    model : nn.Module
        The model, with its grown architecture and its weights.
    optimizer : torch.optim.Optimizer or None
        The optimizer rebuilt over ``model``'s parameters (same class, groups,
        order and state), or ``None`` if none was saved.
    grower : Grower or None
        The grower rebuilt over ``model`` and ``optimizer`` (same policies,
        counters and events), or ``None`` if none was saved.
    extra : dict
        The ``extra`` given to :func:`save`.
    rng_state : Tensor
        torch's global (CPU) random-number-generator state at save time. It is
        not restored by :func:`load`; call :meth:`restore_rng`.
    cuda_rng_state : list of Tensor or None
        The CUDA generators' states, when CUDA was initialised at save time.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    grower: Grower | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    rng_state: Tensor | None = None
    cuda_rng_state: list[Tensor] | None = None

    def restore_rng(self) -> None:
        """Set torch's global random-number generators to the saved states."""
        if self.rng_state is not None:
            torch.set_rng_state(self.rng_state)
        if self.cuda_rng_state is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.cuda_rng_state)


# --------------------------------------------------------------------------- model
def _own_parametrized_class(module: nn.Module) -> None:
    """Give a parametrized module a class of its own before a parametrization is removed.

    ``copy.deepcopy`` shares the injected ``Parametrized<Layer>`` class between
    the copy and the original, and removing a parametrization deletes its
    property from that class: without this, the other model would lose its
    parametrized tensor.
    """
    cls = type(module)
    body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, body)


def _strip_parametrizations(model: nn.Module) -> tuple[nn.Module, list[tuple[str, str, list]]]:
    """A picklable version of ``model``.

    PyTorch refuses to pickle parametrized modules (:mod:`torch.nn.utils.parametrize`,
    ``nn.utils.parametrizations.weight_norm``...). Such a model is deep-copied, the copy's
    parametrizations removed (leaving the original tensor in place) and
    recorded, to be registered again by :func:`_restore_parametrizations`.
    Models without parametrizations are returned as they are (no copy).
    """
    if not any(parametrize.is_parametrized(m) for m in model.modules()):
        return model, []
    clone = copy.deepcopy(model)
    specs: list[tuple[str, str, list]] = []
    for name, module in list(clone.named_modules()):
        if not parametrize.is_parametrized(module):
            continue
        _own_parametrized_class(module)  # or the original model would lose its tensor
        for tensor_name in list(module.parametrizations.keys()):
            plist = list(module.parametrizations[tensor_name])
            parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=False)
            specs.append((name, tensor_name, plist))
    return clone, specs


def _restore_parametrizations(model: nn.Module, specs: list[tuple[str, str, list]]) -> None:
    for name, tensor_name, plist in specs:
        module = model.get_submodule(name)
        for p in plist:
            parametrize.register_parametrization(module, tensor_name, p, unsafe=True)


# --------------------------------------------------------------------------- optimizer
def _param_names(model: nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


def _optimizer_record(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    names = _param_names(model)
    groups = []
    for i, group in enumerate(optimizer.param_groups):
        params = []
        for j, p in enumerate(group["params"]):
            if id(p) not in names:
                raise CheckpointError(
                    f"parameter {j} of optimizer param group {i} (shape {tuple(p.shape)}) is not "
                    "a parameter of the model: torchgrow saves optimizers by parameter name, so "
                    "every optimized tensor must belong to the model"
                )
            params.append(names[id(p)])
        hyper = {k: v for k, v in group.items() if k != "params"}
        groups.append({"params": params, "hyper": hyper})
    return {
        "class": type(optimizer),
        "defaults": dict(optimizer.defaults),
        "groups": groups,
        "state_dict": optimizer.state_dict(),
    }


def _build_optimizer(model: nn.Module, record: dict[str, Any]) -> torch.optim.Optimizer:
    cls = record["class"]
    params = dict(model.named_parameters())
    groups = []
    for i, group in enumerate(record["groups"]):
        missing = [n for n in group["params"] if n not in params]
        if missing:
            raise CheckpointError(
                f"optimizer param group {i} names parameters the loaded model lacks: {missing}"
            )
        groups.append({**group["hyper"], "params": [params[n] for n in group["params"]]})
    accepted = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        kwargs = dict(record["defaults"])
    else:
        kwargs = {k: v for k, v in record["defaults"].items() if k in accepted}
    try:
        optimizer = cls(groups, **kwargs)
    except Exception as exc:
        raise CheckpointError(
            f"could not rebuild the optimizer {cls.__name__} from its saved defaults: {exc}"
        ) from exc
    optimizer.defaults.update(record["defaults"])
    optimizer.load_state_dict(record["state_dict"])
    return optimizer


# --------------------------------------------------------------------------- grower
def _picklable(obj: object) -> bool:
    try:
        pickle.dumps(obj)
    except Exception:
        return False
    return True


def _grower_record(grower: Grower) -> dict[str, Any]:
    policies = {"when": grower.when, "where": grower.where, "how": grower.how, "size": grower.size}
    for name, policy in policies.items():
        if not _picklable(policy):
            raise CheckpointError(
                f"the grower's {name!r} policy {type(policy).__name__} cannot be pickled; "
                "policies must be picklable to be saved"
            )
    return {
        **policies,
        "loss_fn": grower.loss_fn if _picklable(grower.loss_fn) else None,
        "loss_fn_saved": _picklable(grower.loss_fn),
        "measure": grower.measure,
        "unknown_optimizer": grower.unknown_optimizer,
        "description": grower.description,
        "state": grower.state_dict(),
    }


def _build_grower(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    record: dict[str, Any],
    loss_fn: LossFn | None,
) -> Grower:
    grower = Grower(
        model,
        optimizer,
        when=record["when"],
        where=record["where"],
        how=record["how"],
        size=record["size"],
        loss_fn=loss_fn if loss_fn is not None else record["loss_fn"],
        measure=record["measure"],
        unknown_optimizer=record["unknown_optimizer"],
    )
    grower.load_state_dict(record["state"])
    grower.description = record.get("description")
    return grower


# --------------------------------------------------------------------------- public API
def save(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    grower: Grower | None = None,
    *,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of a (possibly grown) model, its optimizer and its grower.

    Parameters
    ----------
    path : str or Path
        The file to write (parent folders are created). It is written to a
        temporary file in the same folder and renamed, so an interrupted save
        leaves the previous file (or none) and no temporary file behind.
    model : nn.Module
        The model. Its object is pickled (its class must be importable, at
        module level of an importable module, when loading), together with its
        ``state_dict``. Masked layers (parametrizations) are supported.
    optimizer : torch.optim.Optimizer, optional
        Saved as its class, ``defaults``, each param group's hyper-parameters
        and parameter *names* (from ``model.named_parameters()``), and its
        ``state_dict``. Every parameter it holds must belong to ``model``.
    grower : Grower, optional
        Saved as its when/where/how/size policy objects (pickled), its loss
        function (when picklable; otherwise pass ``loss_fn`` to :func:`load`)
        and :meth:`~torchgrow.Grower.state_dict`.
    extra : dict, optional
        Anything else to keep (epoch, history...); must be picklable.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    CheckpointError
        If something cannot be saved (an optimized tensor outside the model, an
        unpicklable policy or model, a class defined in ``__main__``, a
        directory as ``path``); nothing is written then.
    """
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"model must be an nn.Module, got {type(model).__name__}")
    if grower is not None and grower.model is not model:
        raise CheckpointError("the grower grows a different model object than the one saved")
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"cannot save a checkpoint to {path}: it is a directory")
    picklable_model, parametrizations = _strip_parametrizations(model)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "torch_version": str(torch.__version__),
        "model": picklable_model,
        "parametrizations": parametrizations,
        "model_state": model.state_dict(),
        "optimizer": None if optimizer is None else _optimizer_record(model, optimizer),
        "grower": None if grower is None else _grower_record(grower),
        "extra": dict(extra) if extra is not None else {},
        "rng_state": torch.get_rng_state(),
        "cuda_rng_state": (
            torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else None
        ),
    }
    buffer = io.BytesIO()
    try:
        torch.save(payload, buffer)
    except (pickle.PicklingError, AttributeError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"could not pickle the checkpoint: {exc}. The model (and the policies, and "
            "anything in extra) must be picklable: defined at module level, no lambdas or "
            "local classes"
        ) from exc
    data = buffer.getvalue()
    in_main = sorted(
        n
        for n in torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
        if n.startswith("__main__.")
    )
    if in_main:
        raise CheckpointError(
            f"cannot save {', '.join(in_main)}: defined in __main__, so only the very script "
            "that saved the checkpoint could load it; move the class into a module and import "
            "it from there"
        )
    write_payload(path, data)
    return path


def _unpickle(
    payload: bytes,
    source: str,
    map_location: str | torch.device | None,
    trusted: bool,
    allow: Iterable[Any],
) -> Any:
    if trusted:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)
    objs = resolve_safe_globals(payload, source, allow)
    try:
        with torch.serialization.safe_globals(objs):
            return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{source} could not be loaded safely: {str(exc).splitlines()[0]}. If you trust "
            "this file, load it with torchgrow.load(path, trusted=True)"
        ) from exc


def load(
    path: str | Path,
    *,
    map_location: str | torch.device | None = "cpu",
    loss_fn: LossFn | None = None,
    trusted: bool = False,
    allow: Iterable[Any] = (),
) -> Checkpoint:
    """Read a checkpoint written by :func:`save`, without running code from the file.

    The file's checksum is verified first, then it is unpickled with
    ``torch.load(weights_only=True)`` and an allow-list: layers of
    ``torch.nn`` and torchgrow, ``torch.optim`` optimizers and torchgrow's
    policies (:mod:`torchgrow.io.safety`). A checkpoint that names other
    classes (a model of your own class) is refused with the names, unless they
    are allowed (``allow`` or :func:`torchgrow.io.add_safe_classes`) or the
    file is ``trusted``.

    Parameters
    ----------
    path : str or Path
        The checkpoint file.
    map_location : str or torch.device, optional
        Where the tensors go (default ``"cpu"``); ``None`` keeps the devices
        they were saved from.
    loss_fn : callable, optional
        The grower's loss function, when it could not be pickled at save time
        (a lambda, a closure); it also overrides a saved one. Without either,
        the rebuilt grower uses its default loss.
    trusted : bool
        Unpickle without restrictions (``weights_only=False``): any code the
        file names can run. Only for files you made or trust.
    allow : iterable of classes or functions
        Your own classes (and functions) the file may name, for this call.

    Returns
    -------
    Checkpoint
        The model, the optimizer rebuilt over its parameters (same class,
        groups, order and state), the grower rebuilt over both, ``extra`` and
        the random-number-generator state (not applied; see
        :meth:`Checkpoint.restore_rng`).

    Raises
    ------
    CheckpointError
        If the file is empty, truncated, damaged (checksum), not a torchgrow
        checkpoint, or names classes that are not allowed; the message names
        the file and what is wrong.
    FileNotFoundError
        If the file does not exist.
    """
    path = Path(path)
    data, _ = read_payload(path)
    payload = _unpickle(data, str(path), map_location, trusted, allow)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a torchgrow checkpoint (write one with torchgrow.save); a plain "
            "state_dict needs a model of the right architecture and model.load_state_dict"
        )
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path} was written by a newer torchgrow (format {payload['version']} > {VERSION})"
        )
    model: nn.Module = payload["model"]
    _restore_parametrizations(model, payload["parametrizations"])
    model.load_state_dict(payload["model_state"])
    optimizer = None
    if payload["optimizer"] is not None:
        optimizer = _build_optimizer(model, payload["optimizer"])
    grower = None
    if payload["grower"] is not None:
        grower = _build_grower(model, optimizer, payload["grower"], loss_fn)
    return Checkpoint(
        model=model,
        optimizer=optimizer,
        grower=grower,
        extra=payload["extra"],
        rng_state=payload["rng_state"],
        cuda_rng_state=payload.get("cuda_rng_state"),
    )
