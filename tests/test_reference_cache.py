"""The reference log-prob cache: keyed by the weights' content, the key checked on load."""

from __future__ import annotations

import shutil

import torch
from safetensors.torch import load_file, save_file

from basealign.training.reference_cache import attach_reference_logps, cache_key, weights_fingerprint
from conftest import random_records


def test_weights_that_differ_only_past_the_first_mib_get_different_keys(tmp_path):
    from basealign.models.tiny import build_tiny_model

    base = tmp_path / "base"
    model = build_tiny_model("tiny-mistral")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["zz_padding"] = torch.zeros(1 << 19)  # 2 MiB of float32 at the end of the file
    base.mkdir()
    save_file(state, base / "model.safetensors")
    (base / "config.json").write_text(model.config.to_json_string())
    merged = tmp_path / "merged"
    shutil.copytree(base, merged)
    changed = load_file(merged / "model.safetensors")
    changed["zz_padding"][-1] = 1.0  # the last bytes only: the first MiB is identical
    save_file(changed, merged / "model.safetensors")
    assert (base / "model.safetensors").read_bytes()[: 1 << 20] == (merged / "model.safetensors").read_bytes()[: 1 << 20]
    assert weights_fingerprint(str(base), "float32") != weights_fingerprint(str(merged), "float32")
    assert weights_fingerprint(str(base), "float32") == weights_fingerprint(str(base), "float32")
    assert weights_fingerprint(str(base), "float32") != weights_fingerprint(str(base), "bfloat16")


def test_a_cache_file_under_the_wrong_key_is_recomputed_not_trusted(tmp_path):
    from basealign.fastpath import attention
    from basealign.fastpath.logprobs import enable_logprob_forward
    from basealign.models.tiny import build_tiny_model

    model = build_tiny_model("tiny-mistral")
    model.config._attn_implementation = attention.register()
    enable_logprob_forward(model)
    records = random_records(6, seed=2)
    first = attach_reference_logps(records, model, None, "weights-a", 400, "sdpa", tmp_path)
    want = [(r["ref_chosen_logps"], r["ref_rejected_logps"]) for r in records]
    saved = torch.load(first)
    assert saved["key"] == cache_key("weights-a", records, 400, "sdpa")

    # another model's numbers planted under this key's file name are rejected by the stored key
    planted = {"key": cache_key("weights-b", records, 400, "sdpa"), "values": torch.zeros(6, 2, dtype=torch.float64)}
    torch.save(planted, first)
    again = [dict(r) for r in random_records(6, seed=2)]
    attach_reference_logps(again, model, None, "weights-a", 400, "sdpa", tmp_path)
    assert [(r["ref_chosen_logps"], r["ref_rejected_logps"]) for r in again] == want
    assert torch.load(first)["key"] == cache_key("weights-a", records, 400, "sdpa")
    assert not list(tmp_path.glob(".*.tmp"))
