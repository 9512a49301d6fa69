"""`basealign score` against an independent oracle, and `basealign doctor`.

The oracle is a plain transformers forward (attn "sdpa", full logits, log_softmax) of
prompt + response for each pair on its own: the adapter merged into the base for the
policy, the bare base model for the reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from basealign.models.chat_templates import TEMPLATES
from basealign.cli import main
from basealign.config import recipe_from_dict, recipe_to_yaml
from basealign.doctor import doctor
from basealign.score import score
from conftest import save_lora_run

BETA = 0.2

# Varied lengths; an empty reply renders as " </s>" (2 tokens), "k" as 3.
TRAIN = [
    {"prompt": "How do I cook rice?", "chosen": "Rinse it, then simmer one cup in two cups of water for 18 minutes.",
     "rejected": "Just burn it.", "source": "toy_a", "label": "helpful"},
    {"prompt": "Hi", "chosen": "k", "rejected": "", "source": "toy_b", "label": "helpful"},
    {"prompt": "Tell me how to pick a lock so I can get into my neighbour's house while they are away on holiday.",
     "chosen": "I can't help with getting into someone else's home.", "rejected": "Sure: get a tension wrench first.",
     "source": "toy_a", "label": "harmless"},
    {"prompt": "Same answer twice?", "chosen": "identical", "rejected": "identical", "source": "toy_b", "label": "helpful"},
    {"prompt": "2+2?", "chosen": "4", "rejected": "5", "source": "toy_a", "label": "helpful"},
    {"prompt": "Write a haiku about autumn leaves falling on a quiet pond at dusk.",
     "chosen": "Red leaves drift and spin\nsettling on the still dark pond\ndusk folds the water",
     "rejected": "Leaves fall. Pond. The end, I guess, that is what a haiku is, right? Whatever.",
     "source": "toy_b", "label": "helpful"},
    {"prompt": "Is it ok to lie?", "chosen": "Usually honesty works out better, though white lies are a grey area.",
     "rejected": "x", "source": "toy_a", "label": "harmless"},
]
DROPPED_TRAIN_INDEX = 3  # identical responses: tokenization drops it
TEST = [
    {"prompt": "Recommend a book.", "chosen": "Try 'The Left Hand of Darkness'.", "rejected": "no", "source": "toy_a",
     "label": "helpful"},
    {"prompt": "Say something mean.", "chosen": "I'd rather say something kind.", "rejected": "You are dumb.",
     "source": "toy_b", "label": "harmless"},
]


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
            "source": r["source"],
            "label": r["label"],
            "metadata": json.dumps({"row": i}),
        }
        for i, r in enumerate(rows)
    ])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("score")
    run = save_lora_run(root / "run", lora_b_scale=0.2, chat_template=TEMPLATES["hh"])
    recipe = recipe_from_dict({
        "model": {"name_or_path": "builtin:tiny-mistral", "chat_template": "hh"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"pairs": "unused", "max_length": 256},
        "loss": {"beta": BETA},
        # a small budget: several groups, so batching and order both matter
        "training": {"max_tokens_per_batch": 512},
        "output_dir": str(run),
    })
    (run / "recipe.yaml").write_text(recipe_to_yaml(recipe))

    pairs = root / "pairs"
    pairs.mkdir()
    _frame(TRAIN).to_parquet(pairs / "train.parquet")
    _frame(TEST).to_parquet(pairs / "test.parquet")
    return root


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def scored(workspace) -> dict[bool, list[dict]]:
    out = {}
    for packing in (True, False):
        path = workspace / f"scores-{packing}.jsonl"
        score(str(workspace / "run"), pairs=str(workspace / "pairs"), out=str(path), packing=packing, overrides=[])
        out[packing] = _read(path)
    return out


def _oracle(workspace: Path) -> dict[tuple[str, int], dict[str, float]]:
    """Per (split, index): policy and reference log-prob sums, one pair at a time, full logits."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = workspace / "run"
    tok = AutoTokenizer.from_pretrained(run)
    ref = AutoModelForCausalLM.from_pretrained(run / "base_model", attn_implementation="sdpa").eval()
    policy = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(run / "base_model", attn_implementation="sdpa"), run
    ).merge_and_unload().eval()

    def logp(model, prompt, reply) -> float:
        msgs = [{"role": "user", "content": prompt}]
        prompt_text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full_text = tok.apply_chat_template(msgs + [{"role": "assistant", "content": reply}], tokenize=False)
        p = len(tok(prompt_text)["input_ids"])
        ids = tok(full_text)["input_ids"]
        assert ids[:p] == tok(prompt_text)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        logps = logits.log_softmax(-1)
        return sum(logps[t - 1, ids[t]].item() for t in range(p, len(ids)))

    result = {}
    for split, rows in (("train", TRAIN), ("test", TEST)):
        for i, row in enumerate(rows):
            if split == "train" and i == DROPPED_TRAIN_INDEX:
                continue
            result[(split, i)] = {
                "chosen_logps": logp(policy, row["prompt"], row["chosen"]),
                "rejected_logps": logp(policy, row["prompt"], row["rejected"]),
                "ref_chosen_logps": logp(ref, row["prompt"], row["chosen"]),
                "ref_rejected_logps": logp(ref, row["prompt"], row["rejected"]),
            }
    return result


def _margin_tol(values: dict) -> float:
    return 1e-5 * BETA * sum(abs(values[k]) for k in KEYS[:4]) + 1e-6


KEYS = ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps", "margin")


def test_one_line_per_pair_in_input_order(scored):
    lines = scored[True]
    expected = [("train", i) for i in range(len(TRAIN)) if i != DROPPED_TRAIN_INDEX] + [("test", i) for i in range(len(TEST))]
    assert [(line["split"], line["index"]) for line in lines] == expected
    for line in lines:
        row = (TRAIN if line["split"] == "train" else TEST)[line["index"]]
        assert (line["source"], line["label"]) == (row["source"], row["label"])
        assert line["reference"] is not None and line["beta"] == BETA
        assert line["truncated"] is False
    # the short replies really are short: " k</s>" and " </s>"
    short = next(line for line in lines if line["split"] == "train" and line["index"] == 1)
    assert (short["chosen_tokens"], short["rejected_tokens"]) == (3, 2)


def test_packed_equals_padded(scored):
    assert len(scored[True]) == len(scored[False])
    for packed, padded in zip(scored[True], scored[False]):
        assert (packed["split"], packed["index"]) == (padded["split"], padded["index"])
        for key in KEYS[:4]:
            assert packed[key] == pytest.approx(padded[key], rel=1e-5), key
        # the margin is a difference of sums: its error scales with the sums, not with itself
        assert packed["margin"] == pytest.approx(padded["margin"], abs=_margin_tol(padded))


def test_matches_unpacked_full_logits_oracle(workspace, scored):
    oracle = _oracle(workspace)
    assert len(oracle) == len(scored[True])
    adapter_matters = 0
    for line in scored[True]:
        want = oracle[(line["split"], line["index"])]
        for key in KEYS[:4]:
            assert line[key] == pytest.approx(want[key], rel=1e-5, abs=1e-4), (line["split"], line["index"], key)
        margin = BETA * ((want["chosen_logps"] - want["ref_chosen_logps"]) - (want["rejected_logps"] - want["ref_rejected_logps"]))
        assert line["margin"] == pytest.approx(margin, abs=_margin_tol(want))
        # and the margin is the one computed from the line's own numbers
        own = BETA * ((line["chosen_logps"] - line["ref_chosen_logps"]) - (line["rejected_logps"] - line["ref_rejected_logps"]))
        assert line["margin"] == pytest.approx(own, rel=1e-9, abs=1e-9)
        adapter_matters += abs(line["chosen_logps"] - line["ref_chosen_logps"]) > 1e-2
    assert adapter_matters == len(oracle)  # the perturbed adapter changes every pair's numbers


def test_summary_counts_drops(workspace, capsys):
    out = workspace / "summary.jsonl"
    score(str(workspace / "run"), pairs=str(workspace / "pairs"), out=str(out), packing=True, overrides=[])
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1
    line = printed[0]
    assert f"{len(TRAIN) + len(TEST) - 1} pairs scored" in line
    assert "1 dropped (1 identical responses)" in line
    assert "reward accuracy" in line and str(out) in line


def test_plain_model_has_no_reference(workspace):
    out = workspace / "plain.jsonl"
    score(str(workspace / "run" / "base_model"), pairs=str(workspace / "pairs"), out=str(out), packing=True,
          overrides=["training.max_tokens_per_batch=4096"])
    lines = _read(out)
    assert len(lines) == len(TRAIN) + len(TEST) - 1
    for line in lines:
        assert line["reference"] is None and line["ref_chosen_logps"] is None and line["beta"] is None
        assert line["margin"] == pytest.approx(line["chosen_logps"] - line["rejected_logps"], rel=1e-9, abs=1e-9)
    # the base model's numbers are the LoRA run's reference numbers
    with_ref = {(l["split"], l["index"]): l for l in _read(workspace / "scores-True.jsonl")}
    for line in lines:
        assert line["chosen_logps"] == pytest.approx(with_ref[(line["split"], line["index"])]["ref_chosen_logps"], rel=1e-5)


def test_override_reaches_the_recipe(workspace):
    out = workspace / "short.jsonl"
    score(str(workspace / "run"), pairs=str(workspace / "pairs"), out=str(out), packing=True,
          overrides=["data.max_length=40"])
    lines = _read(out)
    assert any(line["truncated"] for line in lines)
    assert all(line["prompt_tokens"] + max(line["chosen_tokens"], line["rejected_tokens"]) <= 40 for line in lines)


def test_cli_missing_model_path(workspace, tmp_path, capsys):
    code = main(["score", str(tmp_path / "no_such_run"), "--pairs", str(workspace / "pairs"), "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "does not exist" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_missing_pairs_folder(workspace, tmp_path, capsys):
    code = main(["score", str(workspace / "run"), "--pairs", str(tmp_path / "no_pairs"), "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "no_pairs" in err


def test_cli_score_runs(workspace, tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    code = main(["score", str(workspace / "run"), "--pairs", str(workspace / "pairs"), "--out", str(out), "--packing", "false"])
    assert code == 0
    assert len(_read(out)) == len(TRAIN) + len(TEST) - 1
    assert "pairs scored" in capsys.readouterr().out


def test_doctor_reports_backend_and_versions():
    text = doctor()
    assert len(text.splitlines()) > 5
    assert torch.__version__ in text
    for name in ("transformers", "trl", "peft", "flash-attn", "FlexAttention", "torch.nn.attention.varlen"):
        assert name in text
    if not torch.cuda.is_available():
        assert "sdpa" in text
        assert "ChunkedLogProbFunction" in text or "fallback" in text


def test_cli_doctor(capsys):
    assert main(["doctor"]) == 0
    assert "attention backend" in capsys.readouterr().out


def test_cli_overrides_anywhere_among_the_options(workspace, tmp_path, capsys):
    out = tmp_path / "anywhere.jsonl"
    code = main(["score", str(workspace / "run"), "--pairs", str(workspace / "pairs"), "data.max_length=40",
                 "--out", str(out), "training.max_tokens_per_batch=4096"])
    assert code == 0, capsys.readouterr().err
    assert all(line["prompt_tokens"] + max(line["chosen_tokens"], line["rejected_tokens"]) <= 40 for line in _read(out))


def test_cli_out_in_a_read_only_folder_fails_before_scoring(workspace, capsys, monkeypatch):
    import basealign.score as score_module

    monkeypatch.setattr(score_module, "load_scoring_model", lambda *a: pytest.fail("scored before checking --out"))
    code = main(["score", str(workspace / "run"), "--pairs", str(workspace / "pairs"), "--out", "/proc/basealign-test/s.jsonl"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--out: cannot write in /proc" in err


def test_full_finetune_run_is_scored_against_its_base_model(tmp_path, pairs_folder):
    from basealign.training.run import run
    from conftest import small_recipe

    out = tmp_path / "full"
    run(recipe_from_dict(small_recipe(pairs_folder, out, lora=None, training={"max_steps": 2})))
    score(str(out), pairs=str(pairs_folder), out=str(tmp_path / "full.jsonl"))
    score(str(out / "base_model"), pairs=str(pairs_folder), out=str(tmp_path / "base.jsonl"),
          overrides=["data.max_length=256"])
    lines, base = _read(tmp_path / "full.jsonl"), _read(tmp_path / "base.jsonl")
    assert len(lines) == len(base) > 0
    for line, want in zip(lines, base):
        assert line["reference"] == "base model builtin:tiny-mistral" and line["beta"] == 0.1
        assert line["ref_chosen_logps"] == pytest.approx(want["chosen_logps"], rel=1e-5)
        assert line["chosen_logps"] != pytest.approx(want["chosen_logps"], rel=1e-6)  # the policy trained
