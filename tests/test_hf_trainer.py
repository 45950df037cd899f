"""Growth inside a Hugging Face Trainer (torchgrow.integrations.hf): a tiny Llama built from a
config grows its FFNs during Trainer.train(), a checkpoint of the grown model resumes with the
same numbers, and accelerate's optimizer wrapper is carried."""

from __future__ import annotations

import pydoc_data.topics

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import torch  # noqa: E402

from torchgrow import Grower, GrowthInputError  # noqa: E402
from torchgrow.errors import CheckpointError  # noqa: E402
from torchgrow.how import Random  # noqa: E402
from torchgrow.integrations.hf import (  # noqa: E402
    ARCHITECTURE_FILE,
    GrowthCallback,
    causal_lm_loss,
    restore_checkpoint,
    unwrap_optimizer,
)
from torchgrow.size import Units  # noqa: E402
from torchgrow.when import Every  # noqa: E402
from torchgrow.where import AllAtOnce  # noqa: E402

SEQ = 32


def _text_dataset(n: int = 64) -> list[dict[str, torch.Tensor]]:
    """Chunks of CPython's documentation text as byte ids (a real corpus, nothing downloaded)."""
    text = "".join(pydoc_data.topics.topics.values()).encode("ascii", "ignore")
    ids = torch.tensor(list(text[: n * SEQ]), dtype=torch.long).clamp(max=127).view(n, SEQ)
    return [{"input_ids": row, "labels": row.clone()} for row in ids]


def _model() -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=SEQ, tie_word_embeddings=True,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def _grower(model, optimizer) -> Grower:
    """Random fan-in, zero fan-out on every FFN (the function is kept; the new units train)."""
    ffns = [f"model.layers.{i}.mlp.gate_proj" for i in range(2)]
    return Grower(
        model, optimizer, when=Every(4, times=2), where=AllAtOnce(ffns),
        how=Random(zero_side="out", seed=0), size=Units(8),
    )  # fmt: skip


def _trainer(model, out, steps: int = 12) -> transformers.Trainer:
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=8,
        learning_rate=3e-3, warmup_steps=0, lr_scheduler_type="linear", save_strategy="steps",
        save_steps=6, logging_steps=2, report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
        dataloader_num_workers=0,
    )  # fmt: skip
    return transformers.Trainer(
        model=model, args=args, train_dataset=_text_dataset(), callbacks=[GrowthCallback(_grower)]
    )


def _callback(trainer) -> GrowthCallback:
    return next(c for c in trainer.callback_handler.callbacks if isinstance(c, GrowthCallback))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    model = _model()
    trainer = _trainer(model, out)
    trainer.train()
    return out, model, trainer


def test_the_trainer_grows_the_ffns_with_its_own_optimizer(run):
    out, model, trainer = run
    grow = _callback(trainer)
    assert [e.step for e in grow.events][:1] == [4] and {e.step for e in grow.events} == {4, 8}
    assert model.model.layers[0].mlp.up_proj.out_features == 64 + 2 * 8
    assert all(e.max_abs_delta < 1e-5 for e in grow.events)  # zero fan-out: same function
    wrapped = trainer.optimizer
    assert type(wrapped).__name__ == "AcceleratedOptimizer"
    assert grow.grower.optimizer is unwrap_optimizer(wrapped)
    held = {id(p) for g in wrapped.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters()}  # the wrapper sees the grown parameters
    assert model.lm_head.weight is model.model.embed_tokens.weight
    logged = [r for r in trainer.state.log_history if "torchgrow/params" in r]
    assert [r["step"] for r in logged] == [4, 8]
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert losses[-1] < losses[0] - 0.5  # it trained


def test_a_grown_checkpoint_resumes_with_the_same_numbers(run):
    out, model, trainer = run
    folder = out / "checkpoint-6"
    assert (folder / ARCHITECTURE_FILE).exists()
    fresh = _model()
    assert "model" in restore_checkpoint(fresh, folder)
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight
    resumed = _trainer(fresh, out / "resumed")
    resumed.train(resume_from_checkpoint=str(folder))
    grow = _callback(resumed)
    assert grow.grower.state.step == 12 and [e.step for e in grow.grower.events][-1] == 8
    want = model.state_dict()
    got = fresh.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-5, msg=k)


def test_the_loss_and_refusals():
    out = _model()(torch.arange(8).view(1, 8))
    labels = torch.arange(8).view(1, 8)
    want = torch.nn.functional.cross_entropy(out.logits[0, :-1], labels[0, 1:])
    torch.testing.assert_close(causal_lm_loss(out, labels), want)
    with pytest.raises(GrowthInputError, match="function"):
        GrowthCallback(Grower(_model(), when=Every(1)))
    with pytest.raises(GrowthInputError, match="no torch.optim.Optimizer"):
        unwrap_optimizer(object())


class _NamesAKernelFunction(torch.nn.Module):
    """Pickles as a call of the kernels package's rebuild function with chosen arguments."""

    def __init__(self, module: str, name: str):
        super().__init__()
        self.args = (module, name)

    def __deepcopy__(self, memo):
        return _NamesAKernelFunction(*self.args)

    def __reduce__(self):
        from kernels._internals.layer.layer import _rebuild_kernel_func

        return _rebuild_kernel_func, self.args


def test_kernel_function_wrappers_are_rebuilt_only_for_transformers_own_functions(tmp_path):
    """transformers built with the kernels package gives each attention layer its own module
    wrapping apply_rotary_pos_emb, pickled as a call of kernels' rebuild function: the record
    is loaded with a checked stand-in that rebuilds those wrappers and nothing else."""
    pytest.importorskip("kernels")
    from torchgrow.io import architecture_record

    model = _model()
    attention = model.model.layers[0].self_attn
    if "_kernel_funcs" not in vars(attention):
        pytest.skip("this transformers does not give attention layers kernel-function wrappers")
    (tmp_path / ARCHITECTURE_FILE).write_bytes(architecture_record(model, ["model"]))
    fresh = _model()
    assert restore_checkpoint(fresh, tmp_path) == ["model"]
    restored = fresh.model.layers[0].self_attn._kernel_funcs
    assert restored.keys() == attention._kernel_funcs.keys()
    assert all(type(w) is type(attention._kernel_funcs[k]) for k, w in restored.items())
    for module, name, match in [
        ("collections", "OrderedDict", "only those of transformers' own modules"),
        ("transformers.models.llama.modeling_llama", "LlamaMLP", "not a kernel function"),
    ]:
        bad = _model()
        bad.model.layers[0].self_attn.extra = _NamesAKernelFunction(module, name)
        (tmp_path / ARCHITECTURE_FILE).write_bytes(architecture_record(bad, ["model"]))
        target = _model()
        before = target.model
        with pytest.raises(CheckpointError, match=match):
            restore_checkpoint(target, tmp_path)
        assert target.model is before  # nothing changed
