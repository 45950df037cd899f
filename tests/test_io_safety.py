"""Loading a checkpoint never runs code from the file; damaged files get clear errors."""

from __future__ import annotations

import builtins
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import torchgrow
from torchgrow import models
from torchgrow.errors import CheckpointError
from torchgrow.io import fileformat, safety


class Planted:
    """Unpickling this runs ``exec``: what an attacker plants in a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


class OwnNet(nn.Module):
    """A user's own model class (defined in this test module)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x)


def _planted_payload(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"format": "torchgrow-checkpoint", "version": 2, "model": Planted(marker)}, buf)
    return buf.getvalue()


def _saved(tmp_path: Path) -> Path:
    model = models.mlp([4, 3, 2])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return torchgrow.save(tmp_path / "good.pt", model, opt)


@pytest.mark.parametrize("layout", ["torchgrow", "bare torch.save"])
def test_a_planted_pickle_does_not_run(tmp_path, layout):
    marker = tmp_path / "ran.txt"
    payload = _planted_payload(marker)
    path = tmp_path / "evil.pt"
    if layout == "torchgrow":  # a valid header and checksum: the attacker can compute them
        fileformat.write_payload(path, payload)
    else:
        path.write_bytes(payload)
    with pytest.raises(CheckpointError, match=r"builtins\.exec.*trusted=True"):
        torchgrow.load(path)
    assert not marker.exists()


def test_compare_resume_does_not_run_a_planted_checkpoint(tmp_path):
    from torchgrow import compare

    marker = tmp_path / "ran.txt"
    cfg = compare.CompareConfig(
        methods=("static",), data="digits", budget_epochs=3, width=8, seeds=(0,), threads=1
    )
    out = tmp_path / "cmp"
    run = compare.run_dir(out, "static", 0)
    (run / "fit").mkdir(parents=True)
    fileformat.write_payload(run / "fit" / "checkpoint.pt", _planted_payload(marker))
    with pytest.raises(CheckpointError, match="exec"):
        compare.run_compare(cfg, out, progress=False)
    assert not marker.exists()


def test_damaged_files_give_clear_errors(tmp_path):
    good = _saved(tmp_path).read_bytes()
    cases = {
        "empty": (b"", "is empty"),
        "random": (bytes(range(256)) * 4, "not a torchgrow checkpoint"),
        "text": (b"hello, this is not a checkpoint\n", "not a torchgrow checkpoint"),
        "header only": (good[:40], "truncated"),
        "truncated": (good[: len(good) // 2], "truncated"),
        "trailing bytes": (good + b"\x00\x01", "bytes follow"),
        "flipped byte": (
            good[: len(good) // 2]
            + bytes([good[len(good) // 2] ^ 0x01])
            + good[len(good) // 2 + 1 :],
            "checksum",
        ),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.pt"
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match=message) as info:
            torchgrow.load(path)
        assert str(path) in str(info.value), name
    torch.save({"weight": torch.zeros(2)}, tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not a torchgrow checkpoint"):
        torchgrow.load(tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        torchgrow.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        torchgrow.load(tmp_path / "missing.pt")


def test_the_checksum_covers_every_payload_byte(tmp_path):
    good = _saved(tmp_path).read_bytes()
    header = len(fileformat.MAGIC) + 32 + 8
    for pos in (header, header + 1000, len(good) - 1):
        data = bytearray(good)
        data[pos] ^= 0x80
        path = tmp_path / f"flip{pos}.pt"
        path.write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match="checksum"):
            torchgrow.load(path)


def test_an_older_bare_checkpoint_still_loads_safely(tmp_path):
    good = _saved(tmp_path).read_bytes()
    bare = tmp_path / "v1.pt"
    bare.write_bytes(good[len(fileformat.MAGIC) + 40 :])  # format 1: the torch.save archive
    ckpt = torchgrow.load(bare)
    assert isinstance(ckpt.optimizer, torch.optim.SGD)


def test_own_classes_need_to_be_allowed_or_trusted(tmp_path):
    torch.manual_seed(0)
    model = OwnNet()
    path = torchgrow.save(tmp_path / "own.pt", model)
    name = f"{OwnNet.__module__}.OwnNet"
    with pytest.raises(CheckpointError, match=rf"{name}.*allow=\[MyNet"):
        torchgrow.load(path)
    x = torch.randn(5, 3)
    for ckpt in (torchgrow.load(path, allow=[OwnNet]), torchgrow.load(path, trusted=True)):
        assert type(ckpt.model) is OwnNet
        assert torch.equal(ckpt.model(x), model(x))
    with pytest.raises(CheckpointError):  # allow= held for that call only
        torchgrow.load(path)
    torchgrow.io.add_safe_classes(OwnNet)
    try:
        assert type(torchgrow.load(path).model) is OwnNet
    finally:
        safety._USER_ALLOWED.pop(name)
    with pytest.raises(CheckpointError, match="module level"):
        torchgrow.io.add_safe_classes(lambda x: x)


def test_every_torchgrow_model_family_loads_on_the_safe_path(tmp_path):
    required = {
        "mlp": {"widths": [4, 3, 2]},
        "residual_mlp": {"in_features": 16},
        "gpt": {"vocab_size": 16, "n_layer": 2, "d_model": 32},
    }
    for name, build in models.MODELS.items():
        model = build(**required.get(name, {}))
        ckpt = torchgrow.load(torchgrow.save(tmp_path / f"{name}.pt", model))
        assert type(ckpt.model) is type(model), name
        for (k, a), (_, b) in zip(
            model.state_dict().items(), ckpt.model.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), (name, k)


def test_objects_are_judged_by_their_own_module_not_the_name_they_are_reached_by():
    # torchgrow.io.checkpoint imports pickle: "torchgrow.io.checkpoint.pickle.loads" reaches
    # pickle.loads, which the policy refuses whatever name led to it
    import pickle

    assert safety._resolve("torchgrow.io.checkpoint.pickle.loads") is pickle.loads
    assert not safety._allowed_by_default(pickle.loads)
    assert not safety._allowed_by_default(safety._resolve("torchgrow.io.fileformat.os.replace"))
    assert safety._resolve("os.system") is None  # nothing outside torch/torchgrow is imported
    assert safety._resolve("torchgrow.models.CifarResNet") is models.CifarResNet  # an alias
    assert safety._resolve("torch.nn.modules.linear.Linear") is nn.Linear
    assert not safety._allowed_by_default(torchgrow.save)  # a torchgrow function that writes


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    model = models.mlp([4, 3, 2])
    path = torchgrow.save(tmp_path / "a.pt", model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]
    before = path.read_bytes()
    bad = models.mlp([4, 3, 2])
    bad.hook = lambda x: x  # unpicklable
    with pytest.raises(CheckpointError, match="could not pickle"):
        torchgrow.save(path, bad)
    assert path.read_bytes() == before  # the old checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]
    with pytest.raises(CheckpointError, match="is a directory"):
        torchgrow.save(tmp_path, model)


def test_a_class_defined_in_main_is_refused_at_save(tmp_path):
    script = textwrap.dedent(
        f"""
        import torch, torchgrow
        from torchgrow.errors import CheckpointError

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(2, 2)

        try:
            torchgrow.save({str(tmp_path / "main.pt")!r}, Net())
        except CheckpointError as exc:
            print("refused:", exc)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "refused:" in res.stdout and "__main__.Net" in res.stdout, res.stdout
    assert "move the class into a module" in res.stdout
    assert not any(tmp_path.iterdir())


def test_masked_models_and_growers_load_on_the_safe_path(tmp_path):
    from torchgrow.ops import apply_input_mask, apply_mask

    torch.manual_seed(0)
    model = models.lenet5(activation="relu1")
    apply_mask(model.fc1, torch.rand_like(model.fc1.weight) > 0.5)
    apply_input_mask(model.conv2, (torch.rand(20, 12, 12) > 0.3).float())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    grower = torchgrow.methods.GradMax(model, opt, layers=["conv1"], seed=0)
    ckpt = torchgrow.load(torchgrow.save(tmp_path / "masked.pt", model, opt, grower))
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(ckpt.model(x), model(x))
    assert type(ckpt.grower.how) is type(grower.how)
