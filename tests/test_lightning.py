"""Growth inside a Lightning Trainer: grow mid-training, checkpoint, load in a fresh process,
resume, same numbers (torchgrow.integrations.lightning)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

L = pytest.importorskip("lightning.pytorch")

import lightning_worker as w  # noqa: E402
import torch  # noqa: E402

from torchgrow import Grower, GrowthInputError  # noqa: E402
from torchgrow.integrations.lightning import CHECKPOINT_KEY, GrowthCallback  # noqa: E402
from torchgrow.when import Every  # noqa: E402

HERE = Path(__file__).parent


def _resume_in_fresh_process(root: Path, ckpt: Path, epochs: int, module: str = "Net") -> dict:
    out = root / "resumed.pt"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    code = "import sys, lightning_worker as w; w.resume(*sys.argv[1:])"
    args = [str(root / "resume"), str(ckpt), str(epochs), str(out), module]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Three epochs of 8 steps; the grower fires at steps 5, 10 and 15."""
    root = tmp_path_factory.mktemp("lightning")
    L.seed_everything(0, verbose=False)
    model = w.Net()
    fit = w.trainer(str(root), epochs=3)
    fit.fit(model, w.loader())
    return root, model, fit


def test_the_callback_grows_with_lightnings_optimizer_and_scheduler(run):
    root, model, fit = run
    grow = fit.callbacks[0]
    assert [e.step for e in grow.events] == [5, 10, 15]
    assert model.net[0].out_features == 4 + 3 * 2 and model.net[2].in_features == 10
    assert all(e.max_abs_delta < 1e-5 for e in grow.events)  # GradMax keeps the function
    opt = fit.optimizers[0]
    assert grow.grower.optimizer is opt
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {
        id(p) for p in model.parameters()
    }
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)  # the scheduler still steps
    metrics = (root / "logs" / "version_0" / "metrics.csv").read_text()
    header = metrics.splitlines()[0].split(",")
    assert {"torchgrow/params", "torchgrow/units_added", "torchgrow/max_abs_delta"} <= set(header)


def test_a_grown_checkpoint_loads_back(run):
    root, model, _ = run
    last = root / "ckpt" / "last.ckpt"
    raw = torch.load(last, weights_only=True)
    assert isinstance(raw[CHECKPOINT_KEY], bytes) and len(raw[CHECKPOINT_KEY]) < 20_000
    loaded = w.Net.load_from_checkpoint(last)
    assert loaded.net[0].weight.shape == (10, 10)
    x = torch.randn(16, 10)
    model.eval()
    loaded.eval()
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("module", ["Net", "PlainNet"])
def test_resuming_in_a_fresh_process_gives_the_same_numbers(run, module):
    """Resume from the end of epoch 1 (after the first growth step, before the second)."""
    root, model, fit = run
    ckpt = root / "ckpt" / "epoch=0-step=8.ckpt"
    got = _resume_in_fresh_process(root, ckpt, epochs=3, module=module)
    assert got["steps"] == 24 and got["events"] == 3
    assert got["lr"] == pytest.approx(fit.optimizers[0].param_groups[0]["lr"])
    want = model.state_dict()
    assert got["state"].keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got["state"][k], want[k], rtol=0, atol=1e-6, msg=k)


def test_growth_waits_for_the_optimizer_step_when_accumulating(tmp_path):
    L.seed_everything(0, verbose=False)
    model = w.Net()
    fit = w.trainer(str(tmp_path), epochs=1, accumulate=2)
    fit.fit(model, w.loader(accumulate=2))
    grow = fit.callbacks[0]
    assert fit.global_step == 8 and grow.grower.state.step == 8
    assert [e.step for e in grow.events] == [5]


def test_a_grower_over_another_optimizer_is_refused(tmp_path):
    model = w.Net()
    other = torch.optim.SGD(model.parameters(), lr=0.1)
    fit = L.Trainer(
        default_root_dir=str(tmp_path),
        max_epochs=1,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        callbacks=[GrowthCallback(Grower(model.net, other, when=Every(5)))],
    )
    with pytest.raises(GrowthInputError, match="does not hold the optimizer Lightning built"):
        fit.fit(model, w.loader())
    with pytest.raises(GrowthInputError, match="needs a Grower or a function"):
        GrowthCallback(3)
