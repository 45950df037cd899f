"""The transformer growth methods (G_stack, MIDAS, MSG, HyperCloning, LEMON) as scheduled runs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from torchgrow import methods, models, ops
from torchgrow.errors import GrowthInputError
from torchgrow.ops.optim_state import check_consistent

VOCAB, CONTEXT = 13, 8


def _model(**kw):
    torch.manual_seed(0)
    base = {"context": CONTEXT, "n_layer": 2, "d_model": 16, "n_head": 2, "d_ff": 32}
    return models.gpt(VOCAB, **{**base, **kw})


def _adamw(model):
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() == 2]
    rest = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.dim() == 2)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=1e-2
    )


def _train(method, steps):
    gen = torch.Generator().manual_seed(1)
    lrs, losses = [], []
    for step in range(steps):
        method.update(step)
        x = torch.randint(0, VOCAB, (4, CONTEXT), generator=gen)
        y = torch.roll(x, -1, dims=1)
        loss = F.cross_entropy(method.model(x).flatten(0, 1), y.flatten())
        method.optimizer.zero_grad()
        loss.backward()
        method.optimizer.step()
        lrs.append(method.optimizer.param_groups[0]["lr"])
        losses.append(float(loss.detach()))
    return lrs, losses


def _example():
    return torch.randint(0, VOCAB, (2, CONTEXT), generator=torch.Generator().manual_seed(2))


def _shape(model):
    parts = ops.find_layout(model)
    b = parts.blocks[0]
    return len(parts.blocks), b.attn.n_head, b.ffn.up.out_features, b.attn.o.out_features


def _decay_group_holds_only_matrices(optimizer, model):
    decay, rest = (g["params"] for g in optimizer.param_groups)
    return all(p.dim() == 2 for p in decay) and all(p.dim() == 1 for p in rest)


def test_msg_grows_ffn_layers_and_heads_through_ramps_keeping_the_function():
    model = _model(n_layer=1, n_head=1, head_dim=8, d_ff=16)
    opt = _adamw(model)
    msg = methods.MSG(model, opt, 100, _example(), d_ff=32, n_head=2, n_layer=4)
    assert msg.event_steps() == [10, 20, 40, 50]
    lrs, losses = _train(msg, 100)
    assert _shape(model) == (4, 2, 32, 16)
    assert [e["event"] for e in msg.log] == [
        "FFN 16->32",
        "layers 1->2",
        "heads 1->2",
        "layers 2->4",
    ]
    for e in msg.log:
        assert e["max_abs_dout"] <= 1e-5, e  # every masked event keeps the function
    assert all(not r.active for r, _ in msg.ramps)  # every ramp finished and folded
    check_consistent(model, msg.optimizer)
    assert msg.optimizer is opt  # carried, never replaced
    assert _decay_group_holds_only_matrices(opt, model)  # copies joined their source's group
    # the linear schedule jumps back to its peak at the first two events only
    peak = 1e-2
    assert lrs[10] == pytest.approx(peak) and lrs[20] == pytest.approx(peak)
    assert lrs[40] < lrs[39] and lrs[50] < lrs[49]
    assert all(math.isfinite(x) for x in losses)


def test_msg_grows_the_hidden_size_too_at_its_official_30_percent():
    model = _model(n_layer=1, d_model=8, n_head=1, head_dim=8, d_ff=16)
    opt = _adamw(model)
    with pytest.raises(GrowthInputError, match="d_model=4 is below"):
        methods.MSG(model, opt, 100, _example(), d_ff=32, n_head=2, n_layer=2, d_model=4)
    msg = methods.MSG(model, opt, 100, _example(), d_ff=32, n_head=2, n_layer=2, d_model=16)
    assert msg.event_steps() == [10, 20, 30, 40]  # no second layer event: 2 layers already
    _, losses = _train(msg, 60)
    assert [e["event"] for e in msg.log] == ["FFN 16->32", "layers 1->2", "hidden 8->16",
                                             "heads 1->2"]  # fmt: skip
    assert all(e["max_abs_dout"] <= 1e-5 for e in msg.log)  # masked norms keep the function
    assert model.tok_emb.weight.shape[1] == 16 and model.blocks[1].norm2.normalized_shape == (16,)
    assert all(not r.active for r, _ in msg.ramps)
    check_consistent(model, msg.optimizer)
    assert _decay_group_holds_only_matrices(opt, model)
    assert all(math.isfinite(x) for x in losses)


def test_msg_interleaves_copies_when_asked_and_refuses_bad_plans():
    model = _model(n_layer=2)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    opt = _adamw(model)
    with pytest.raises(GrowthInputError, match="below"):
        methods.MSG(model, opt, 100, _example(), d_ff=16, n_head=2, n_layer=4)
    with pytest.raises(GrowthInputError, match="ramp"):
        methods.MSG(model, opt, 100, _example(), d_ff=32, n_head=2, n_layer=4, ramp=0.2)
    with pytest.raises(GrowthInputError, match="layer_order"):
        methods.MSG(model, opt, 100, _example(), d_ff=32, n_head=2, n_layer=4, layer_order="x")
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    msg = methods.MSG(model, opt, 60, _example(), d_ff=32, n_head=2, n_layer=3,
                      layer_order="interleave")  # fmt: skip
    assert [e.name for e in msg.events] == ["layers 2->3"]  # nothing else to grow
    first, second = model.blocks[0], model.blocks[1]
    _train(msg, 12)
    msg.update(12)  # the event: [0, 0', 1], each copy right after its source
    assert len(model.blocks) == 3 and model.blocks[0] is first and model.blocks[2] is second
    copy = model.blocks[1].state_dict()
    assert all(torch.equal(copy[k], v) for k, v in first.state_dict().items())
    assert model.blocks[1].attn.q.weight is not first.attn.q.weight


def test_g_stack_repeats_the_stack_with_a_fresh_optimizer_and_a_new_schedule():
    model = _model(n_layer=1)
    opt = _adamw(model)
    gs = methods.GStack(model, opt, 300, _example())
    assert gs.event_steps() == [10]
    lrs, _ = _train(gs, 10)
    gs.update(10)
    assert _shape(model)[0] == 4
    src = model.blocks[0].state_dict()
    for b in model.blocks[1:]:  # layer i copies layer i mod 1
        assert all(torch.equal(b.state_dict()[k], v) for k, v in src.items())
    more, _ = _train(gs, 40)
    lrs[10:] = more[10:]
    assert gs.optimizer is not opt and len(gs.optimizer.param_groups) == 2
    check_consistent(model, gs.optimizer)
    assert _decay_group_holds_only_matrices(gs.optimizer, model)
    assert lrs[9] == pytest.approx(1e-2)  # the base holds its peak before stacking
    assert lrs[10] < 0.2e-2  # the stacked model warms up again
    assert model.blocks[0].attn.q.weight is not model.blocks[1].attn.q.weight


def test_midas_inserts_middle_copies_in_stages_carrying_the_optimizer():
    model = _model(n_layer=1)
    opt = _adamw(model)
    md = methods.MIDAS(model, opt, 100, _example())
    assert md.event_steps() == [5, 15, 30]
    _train(md, 40)
    assert _shape(model)[0] == 4 and md.optimizer is opt
    check_consistent(model, opt)
    assert _decay_group_holds_only_matrices(opt, model)


@pytest.mark.parametrize("snr_db", [None, 10.0])
def test_hypercloning_clones_width_exactly_then_restarts_the_schedule(snr_db):
    model = _model(n_layer=2, d_model=8, n_head=1, head_dim=8, d_ff=16)
    opt = _adamw(model)
    hc = methods.HyperCloning(model, opt, 50, _example(), snr_db=snr_db)
    assert hc.event_steps() == [20]
    lrs, _ = _train(hc, 30)
    assert _shape(model) == (2, 2, 32, 16)
    assert hc.log[0]["max_abs_dout"] <= 1e-5
    assert hc.optimizer is not opt  # fresh: its state counts only the 10 steps since cloning
    assert float(hc.optimizer.state[model.blocks[0].attn.q.weight]["step"]) == 10
    check_consistent(model, hc.optimizer)
    assert lrs[19] < 0.3 * lrs[12]  # the small model's own cosine ran down
    assert lrs[20] < lrs[21]  # and the cloned one warms up again


def test_lemon_doubles_width_and_depth_losslessly_and_rewarms_from_a_tenth():
    model = _model(n_layer=2, d_model=8, n_head=1, head_dim=8, d_ff=16)
    opt = _adamw(model)
    with pytest.raises(GrowthInputError, match="at most 2x"):
        methods.LEMON(model, opt, 100, _example(), n_layer=5)
    lemon = methods.LEMON(model, opt, 100, _example(), n_layer=3)
    lrs, _ = _train(lemon, 45)
    assert _shape(model) == (3, 2, 32, 16)
    assert lemon.log[0]["max_abs_dout"] <= 1e-5
    check_consistent(model, lemon.optimizer)
    assert lrs[40] == pytest.approx(1e-2 * (0.1 + 0.9 / 4))  # udfcosine: from 0.1 of the peak
    assert lrs[43] == pytest.approx(1e-2)


@pytest.mark.parametrize("split", ["comp", "even"])
def test_lemon_split_lets_the_copies_drift_apart(split):
    model = _model(n_layer=1, d_model=8, n_head=2, head_dim=4, d_ff=16)
    lemon = methods.LEMON(model, _adamw(model), 40, _example(), split=split)
    _train(lemon, 30)  # expansion at step 16, then 14 steps at the doubled width
    assert lemon.log[0]["max_abs_dout"] <= 1e-5
    emb = model.tok_emb.weight.detach()
    drift = float((emb[:, :8] - emb[:, 8:]).abs().max())
    assert (drift > 1e-4) if split == "comp" else (drift == 0.0)  # even: copies stay copies


def test_a_policy_reaches_every_edit_of_the_methods_that_carry_the_optimizer():
    model = _model(n_layer=1, n_head=1, head_dim=8, d_ff=16)
    opt = _adamw(model)
    msg = methods.MSG(model, opt, 100, _example(), d_ff=32, n_head=1, n_layer=1,
                      policy=ops.OptimizerPolicy("reset"))  # fmt: skip
    _train(msg, 10)
    msg.update(10)  # the FFN event
    grown = [model.blocks[0].mlp.up.weight, model.blocks[0].mlp.down.weight]
    assert all(p not in msg.optimizer.state for p in grown)  # reset: no state for them
    assert model.tok_emb.weight in msg.optimizer.state  # untouched: kept
    model = _model(n_layer=3)
    opt = _adamw(model)
    midas = methods.MIDAS(model, opt, 100, _example(), stages=(0.1,),
                          policy=ops.OptimizerPolicy("copy"))  # fmt: skip
    _train(midas, 10)
    midas.update(10)  # a copy of the middle block, which starts with its source's moments
    src, new = model.blocks[1], model.blocks[2]
    assert torch.equal(
        opt.state[src.mlp.up.weight]["exp_avg"], opt.state[new.mlp.up.weight]["exp_avg"]
    )
    with pytest.raises(GrowthInputError, match="OptimizerPolicy"):
        methods.MIDAS(model, opt, 100, _example(), policy="copy")


def test_a_schedule_needs_a_real_length():
    model = _model()
    with pytest.raises(GrowthInputError, match="total_steps"):
        methods.GStack(model, _adamw(model), 1, _example())
    assert set(methods.MSG_DESCRIPTION) == {"why", "when", "where", "how"}
