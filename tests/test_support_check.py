"""Setup refusals and choices: what the packed path cannot do exactly, adapters on the output
head, float16 full fine-tuning, the padded path's token budget, a flash-attn that does not
import, and `doctor --model`. Each refusal is one line (BasealignError), never a traceback."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

import pytest
import torch

from basealign.cli import main
from basealign.config import LoraConfig, ModelConfig
from basealign.errors import BasealignError
from basealign.fastpath import attention
from basealign.fastpath.logprobs import enable_logprob_forward
from basealign.fastpath.packing import collate_padded, group_by_token_budget, padded_length
from basealign.models.loading import apply_lora, check_packed_support, check_training_dtype
from basealign.training.step import sequence_logps
from conftest import random_records

TINY = dict(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _refused_configs():
    import transformers as tf

    return {
        "lfm2": tf.Lfm2Config(**TINY, layer_types=["conv", "full_attention"]),
        "qwen3_next": tf.Qwen3NextConfig(**TINY, layer_types=["linear_attention", "full_attention"]),
        "jamba": tf.JambaConfig(**TINY),
        "mamba": tf.MambaConfig(vocab_size=260, hidden_size=32, num_hidden_layers=2),
        "llama4_text": tf.Llama4TextConfig(**TINY),
    }


@pytest.mark.parametrize("model_type", ["lfm2", "qwen3_next", "jamba", "mamba", "llama4_text"])
def test_packed_support_refuses_non_attention_mixers_from_the_config(model_type):
    config = _refused_configs()[model_type]
    exact, why = attention.packed_support(config)
    assert not exact and why


def test_packed_support_accepts_attention_families_with_windows_and_capping():
    import transformers as tf

    for config in (tf.MistralConfig(**TINY, sliding_window=8), tf.Gemma2Config(**TINY, head_dim=8),
                   tf.Gemma3TextConfig(**TINY, head_dim=8), tf.CohereConfig(**TINY), tf.Qwen3Config(**TINY)):
        exact, why = attention.packed_support(config)
        assert exact, (config.model_type, why)
    assert "sliding windows of 8" in attention.packed_support(tf.MistralConfig(**TINY, sliding_window=8))[1]


def _tiny(config):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attention.register())


def test_check_at_load_is_one_line_naming_the_model_type_and_the_way_out():
    model = _tiny(_refused_configs()["lfm2"])
    with pytest.raises(BasealignError) as err:
        check_packed_support(model, packing=True)
    message = str(err.value)
    assert "\n" not in message and "lfm2" in message and "training.packing=false" in message
    check_packed_support(model, packing=False)  # the way out works


def test_a_model_without_the_attention_interface_is_refused():
    """Bloom loads with attn_implementation='basealign' but never calls it: packed rows would leak."""
    from transformers import BloomConfig

    model = _tiny(BloomConfig(vocab_size=260, hidden_size=32, n_layer=1, n_head=4))
    with pytest.raises(BasealignError, match="AttentionInterface"):
        check_packed_support(model, packing=True)


def test_lfm2_packed_really_leaks_which_is_why_it_is_refused():
    model = _tiny(_refused_configs()["lfm2"])
    with torch.no_grad():  # a convolution strong enough to matter, as in a trained model
        for name, param in model.named_parameters():
            if ".conv." in name:
                param.mul_(20)
    enable_logprob_forward(model)
    records = random_records(3, seed=4, prompt=(5, 20), response=(3, 10))
    from basealign.fastpath.packing import collate_packed

    with torch.no_grad():
        packed = sequence_logps(model, collate_packed(records))
        padded = sequence_logps(model, collate_padded(records))
    assert ((packed - padded).abs() / padded.abs()).max() > 1e-3


@pytest.mark.parametrize("lora", [
    LoraConfig(r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "lm_head"]),
])
def test_lora_on_the_output_head_is_refused(lora):
    model = _tiny(_tiny_llama_config())
    enable_logprob_forward(model)
    with pytest.raises(BasealignError, match="lm_head"):
        apply_lora(model, lora)


def _tiny_llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(**TINY)


def test_adapted_head_loaded_from_elsewhere_is_refused_at_the_forward():
    """An adapter loaded for scoring never passes through apply_lora; the forward refuses it."""
    from peft import LoraConfig as PeftLoraConfig, get_peft_model

    model = _tiny(_tiny_llama_config())
    enable_logprob_forward(model)
    peft_model = get_peft_model(model, PeftLoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"]))
    from basealign.fastpath.packing import collate_packed

    with pytest.raises(BasealignError, match="output head"):
        sequence_logps(peft_model, collate_packed(random_records(2)))


def test_adapted_tied_embeddings_are_refused():
    from transformers import GemmaConfig

    model = _tiny(GemmaConfig(**TINY, head_dim=8))
    assert model.config.tie_word_embeddings
    with pytest.raises(BasealignError, match="tied"):
        apply_lora(model, LoraConfig(r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "embed_tokens"]))


def test_float16_full_fine_tuning_is_refused_in_one_line():
    with pytest.raises(BasealignError) as err:
        check_training_dtype(ModelConfig(dtype="float16"), None)
    assert "\n" not in str(err.value) and "bfloat16" in str(err.value)
    check_training_dtype(ModelConfig(dtype="float16"), LoraConfig())  # LoRA keeps fp32 adapter weights
    check_training_dtype(ModelConfig(dtype="bfloat16"), None)


def test_padded_groups_are_sized_by_their_padded_tensor():
    records = random_records(60, seed=3, prompt=(1, 80), response=(1, 40))
    budget = 600
    groups = group_by_token_budget(records, budget, seed=1, padded=True)
    assert sorted(i for g in groups for i in g) == list(range(60))
    for group in groups:
        batch = collate_padded([records[i] for i in group])
        assert batch.processed_tokens == 2 * len(group) * max(padded_length(records[i]) for i in group)
        assert len(group) == 1 or batch.processed_tokens <= budget
    # the packed sizing of the same records would overrun the budget once padded
    packed_groups = group_by_token_budget(records, budget, seed=1)
    assert max(collate_padded([records[i] for i in g]).processed_tokens for g in packed_groups) > budget


class _BrokenFlashAttn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `flash_attn`, then fails on import like a wheel built for another torch."""

    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name == "flash_attn" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise OSError("flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi")


@pytest.fixture
def broken_flash_attn(monkeypatch):
    monkeypatch.delitem(sys.modules, "flash_attn", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenFlashAttn(), *sys.meta_path])


def test_flash_attn_that_does_not_import_falls_through(broken_flash_attn, monkeypatch):
    ok, why = attention.flash_attn_status()
    assert not ok and "does not import" in why and "undefined symbol" in why
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(attention, "torch_varlen_available", lambda: True)
    backend, reason = attention.choose_backend("auto", cuda, torch.bfloat16)
    assert backend == "torch_varlen" and "does not import" in reason
    monkeypatch.setattr(attention, "torch_varlen_available", lambda: False)
    assert attention.choose_backend("auto", cuda, torch.bfloat16)[0] == "flex"
    with pytest.raises(ValueError, match="does not import"):
        attention.choose_backend("flash", cuda, torch.bfloat16)


def test_doctor_reports_a_flash_attn_that_does_not_import(broken_flash_attn, monkeypatch):
    from basealign import doctor as doctor_module

    real_version = doctor_module._version
    monkeypatch.setattr(doctor_module, "_version", lambda dist: "2.8.3" if dist == "flash-attn" else real_version(dist))
    line = next(l for l in doctor_module.doctor().splitlines() if "flash-attn" in l)
    assert "2.8.3" in line and "unusable" in line and "undefined symbol" in line


def test_auto_avoids_torch_varlen_for_attention_soft_capping(monkeypatch):
    from transformers import Gemma2Config

    monkeypatch.setattr(attention, "flash_attn_status", lambda: (False, "the flash-attn package is not installed"))
    monkeypatch.setattr(attention, "torch_varlen_available", lambda: True)
    cuda = torch.device("cuda", 0)
    assert attention.choose_backend("auto", cuda, torch.bfloat16, Gemma2Config(**TINY, head_dim=8))[0] == "flex"
    with pytest.raises(ValueError, match="soft-caps"):
        attention.choose_backend("torch_varlen", cuda, torch.bfloat16, Gemma2Config(**TINY, head_dim=8))


def test_doctor_model_says_exact_or_not_from_the_config_alone(tmp_path, capsys):
    import transformers as tf

    tf.Gemma3TextConfig(**TINY, head_dim=8, sliding_window=8).save_pretrained(tmp_path / "gemma3")
    _refused_configs()["lfm2"].save_pretrained(tmp_path / "lfm2")
    assert main(["doctor", "--model", str(tmp_path / "gemma3")]) == 0
    out = capsys.readouterr().out
    assert "gemma3_text" in out and "packed path: exact" in out and "sliding windows of 8" in out and "sdpa" in out
    assert main(["doctor", "--model", str(tmp_path / "lfm2")]) == 0
    out = capsys.readouterr().out
    assert "not exact" in out and "kind conv" in out and "training.packing=false" in out
    assert main(["doctor", "--model", "builtin:tiny-llama"]) == 0
    assert "packed path: exact" in capsys.readouterr().out


@pytest.mark.parametrize("spec", ["./no/such/folder", "builtin:tiny-nothing"])
def test_doctor_model_bad_input_is_one_line(spec, capsys):
    assert main(["doctor", "--model", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model" in err


def test_attention_sinks_are_refused_from_the_modules():
    """gpt-oss's config does not name its sinks; its attention modules do."""
    from transformers import GptOssConfig

    model = _tiny(GptOssConfig(**TINY, head_dim=8, num_local_experts=2, num_experts_per_tok=1,
                               layer_types=["sliding_attention", "full_attention"]))
    with pytest.raises(BasealignError, match="sinks"):
        check_packed_support(model, packing=True)
