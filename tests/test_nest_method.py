"""methods.NeST: the grow-and-prune driver on a small real data set."""

from __future__ import annotations

import pytest
import torch

from torchgrow import data, methods, models
from torchgrow.errors import GrowthInputError
from torchgrow.ops import check_consistent, is_masked

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def digits():
    return data.digits()


def build(seed=0):
    torch.manual_seed(seed)
    model = models.mlp([64, 32, 32, 10], width_mult=0.5)
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def test_growth_adds_and_pruning_removes_active_parameters(digits):
    model, opt = build()
    nest = methods.NeST(
        model,
        opt,
        digits,
        max_grow_rounds=2,
        grow_epochs=2,
        neurons_per_round=2,
        max_prune_rounds=3,
        retrain_epochs=2,
        prune_fraction=0.1,
        tolerance=0.05,
    )
    rows = nest.run()
    phases = [r["phase"] for r in rows]
    assert phases[:3] == ["seed", "grow", "grow"] and "prune" in phases
    grow = [r["parameters"] for r in rows if r["phase"] in ("seed", "grow")]
    assert grow == sorted(grow) and grow[-1] > grow[0]  # growth phase goes up
    assert rows[1]["neurons_added"] == 4 and rows[1]["connections_added"] > 0
    accepted = [r for r in rows if r["phase"] == "prune" and r["accepted"]]
    assert accepted and accepted[-1]["parameters"] < grow[-1]  # pruning goes down
    assert nest.summary()["parameters"] == accepted[-1]["parameters"]
    assert all(is_masked(m) for m in nest.model.modules() if isinstance(m, torch.nn.Linear))
    check_consistent(nest.model, nest.optimizer)


def test_a_rejected_pruning_step_keeps_the_previous_network(digits):
    model, opt = build()
    nest = methods.NeST(
        model,
        opt,
        digits,
        max_grow_rounds=2,
        grow_epochs=6,
        max_prune_rounds=3,
        prune_fraction=0.95,
        retrain_epochs=0,
        tolerance=0.0,
        prune_retries=0,
    )
    rows = nest.run()
    assert [r for r in rows if r["phase"] == "grow"][-1][
        "val_accuracy"
    ] > 0.3  # a trained reference
    last_grow = [r for r in rows if r["phase"] == "grow"][-1]
    prunes = [r for r in rows if r["phase"] == "prune"]
    assert len(prunes) == 1 and not prunes[0]["accepted"]  # the first failing step ends the phase
    assert nest.summary()["parameters"] == last_grow["parameters"]
    assert nest.model is model  # nothing was replaced


def test_target_accuracy_ends_growth(digits):
    model, opt = build()
    nest = methods.NeST(model, opt, digits, target_accuracy=0.0, grow_epochs=1, max_prune_rounds=0)
    rows = nest.run()
    assert [r["phase"] for r in rows] == ["seed"]


@pytest.mark.parametrize(
    "kwargs", [{"val_fraction": 0.0}, {"tolerance": -1}, {"grow_epochs": -1}, {"batch_size": 0}]
)
def test_bad_settings(digits, kwargs):
    model, opt = build()
    with pytest.raises(GrowthInputError):
        methods.NeST(model, opt, digits, **kwargs)


def test_a_rejected_step_is_retried_with_half_the_fraction(digits):
    model, opt = build()
    nest = methods.NeST(
        model,
        opt,
        digits,
        max_grow_rounds=2,
        grow_epochs=6,
        max_prune_rounds=5,
        prune_fraction=0.95,
        retrain_epochs=0,
        tolerance=0.0,
        prune_retries=2,
    )
    rows = [r for r in nest.run() if r["phase"] == "prune"]
    fractions = [r["prune_fraction"] for r in rows]
    assert fractions[:2] == [0.95, 0.475]  # halved after the first rejection
    rejected = [r for r in rows if not r["accepted"]]
    assert len(rejected) <= 3 and (len(rows) == 5 or not rows[-1]["accepted"])


def test_grow_patience_ends_growth_that_stopped_helping(digits):
    # zero-valued new connections and no training: the function, and so validation accuracy,
    # never changes; patience 1 stops after the first round that did not improve
    def run(patience):
        model, opt = build()
        nest = methods.NeST(
            model,
            opt,
            digits,
            grow_epochs=0,
            max_grow_rounds=4,
            connection_init="zero",
            grow_patience=patience,
            max_prune_rounds=0,
        )
        return [r["phase"] for r in nest.run()]

    assert run(1) == ["seed", "grow"]
    assert run(None) == ["seed"] + ["grow"] * 4
    model, opt = build()
    with pytest.raises(GrowthInputError, match="grow_patience"):
        methods.NeST(model, opt, digits, grow_patience=0)


def test_unreached_target_measures_the_tolerance_from_the_best_growth_accuracy(digits):
    # zero-valued new connections, no training: every growth round has the seed's accuracy, and
    # an empty pruning step (no connection pruned) keeps it; from the unreached target 1.0 the
    # step would be rejected
    model, opt = build()
    nest = methods.NeST(
        model,
        opt,
        digits,
        target_accuracy=1.0,
        grow_epochs=0,
        max_grow_rounds=1,
        connection_init="zero",
        prune_fraction=1e-9,
        retrain_epochs=0,
        max_prune_rounds=1,
        tolerance=0.0,
    )
    rows = nest.run()
    assert rows[-2]["val_accuracy"] < 1.0  # the target was not reached
    assert rows[-1]["phase"] == "prune" and rows[-1]["accepted"]
    assert rows[-1]["val_accuracy"] == rows[-2]["val_accuracy"]


def test_unreached_target_pruning_may_not_fall_below_the_best_growth_round(digits):
    # with tolerance 0, a pruning step is kept exactly when it keeps the best validation
    # accuracy of the seed and growth rounds (not the last round's)
    model, opt = build()
    nest = methods.NeST(
        model,
        opt,
        digits,
        target_accuracy=1.0,
        grow_epochs=3,
        max_grow_rounds=2,
        prune_fraction=0.9,
        retrain_epochs=0,
        max_prune_rounds=1,
        prune_retries=0,
        tolerance=0.0,
    )
    rows = nest.run()
    best = max(r["val_accuracy"] for r in rows if r["phase"] in ("seed", "grow"))
    prune = rows[-1]
    assert prune["phase"] == "prune"
    assert prune["accepted"] == (prune["val_accuracy"] >= best)


def test_the_default_run_grows_neurons_and_feature_maps(digits):
    # the paper's Policies 1-3 all run out of the box: connections, neurons, and maps on convs
    model, opt = build()
    nest = methods.NeST(model, opt, digits, max_grow_rounds=1, grow_epochs=1, max_prune_rounds=0)
    grow = [r for r in nest.run() if r["phase"] == "grow"]
    assert grow[0]["connections_added"] > 0 and grow[0]["neurons_added"] == 2 * 10
    torch.manual_seed(0)
    conv = models.plain_convnet(blocks=(1, 1), channels=(4, 8), in_channels=1, num_classes=10)
    copt = torch.optim.SGD(conv.parameters(), lr=0.05, momentum=0.9)
    nest = methods.NeST(conv, copt, digits, max_grow_rounds=1, grow_epochs=1, max_prune_rounds=0)
    grow = [r for r in nest.run() if r["phase"] == "grow"]
    assert grow[0]["maps_added"] > 0


def test_compare_nest_grows_neurons_from_the_start_width(tmp_path):
    from torchgrow.compare import CompareConfig
    from torchgrow.compare.jobs import _load_data
    from torchgrow.contenders import CONTENDERS, Context

    cfg = CompareConfig(methods=("nest",), data="digits", budget_epochs=6, width=8, threads=1)
    torch.manual_seed(0)
    out = CONTENDERS["nest"].run(Context(cfg, _load_data(cfg), 0, tmp_path, None))
    assert out.model_name.startswith("MLP 64-8-8-10 sparse seed")
    grows = [e for e in out.events if e["kind"] == "grow"]
    assert grows and all(" 0 neurons" not in e["detail"] for e in grows)
