"""`basealign eval` end to end on a tiny LoRA run: the files, preference metrics equal to `score`,
judges' win rates, lm-eval on a local task against a hand computation, and bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from basealign.cli import main
from basealign.eval.judges import win_rates
from basealign.score import score
from eval_helpers import TASK_DOCS, TEST, make_judge, make_lora_run, make_task


# lm-eval is in the dev extra; without it only its own tests are skipped
HAS_LM_EVAL = importlib.util.find_spec("lm_eval") is not None
needs_lm_eval = pytest.mark.skipif(not HAS_LM_EVAL, reason="lm-eval is not installed (pip install 'basealign[eval]')")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    run = make_lora_run(root)
    make_judge(root / "judge_helpful", seed=1)
    make_judge(root / "judge_cost", seed=2)
    make_task(root / "tasks")
    tasks = ["--tasks", "basealign_toy_mc", "--task-path", str(root / "tasks")] if HAS_LM_EVAL else []
    code = main(["eval", str(run), "--max-new-tokens", "6", "--batch-size", "3",
                 "--judge", f"helpful={root / 'judge_helpful'}", "--judge", f"harmless={root / 'judge_cost'}:lower",
                 *tasks])
    assert code == 0
    return run


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_the_report_files(evaluated):
    out = evaluated / "eval"
    for name in ("eval.json", "eval.md", "balance.png", "generations.jsonl", "generations.html", "pairs.jsonl"):
        assert (out / name).is_file(), name
    result = json.loads((out / "eval.json").read_text())
    assert set(result["preference"]["by_label"]) == {"harmless", "helpful"}
    assert set(result["preference"]["by_source"]) == {"toy_a", "toy_b"}
    generations = _lines(out / "generations.jsonl")
    assert [g["index"] for g in generations] == list(range(len(TEST)))
    for g, row in zip(generations, TEST):
        assert g["prompt"] == [{"role": "user", "content": row["prompt"]}]
        assert (g["label"], g["source"]) == (row["label"], row["source"])
        assert {"reference", "policy", "reference_tokens", "policy_tokens", "prompt_tokens"} <= g.keys()
        assert g["policy_tokens"] <= 6 and g["reference_tokens"] <= 6
    gen = result["generations"]
    assert gen["length_change"] == pytest.approx(gen["mean_tokens"]["policy"] - gen["mean_tokens"]["reference"])
    page = (out / "generations.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.index("neighbour") < page.index("Recommend a book")  # harmlessness prompts first
    md = (out / "eval.md").read_text()
    assert "balance.png" in md and "helpful win rate" in md
    assert ("basealign_toy_mc" in md) == HAS_LM_EVAL


def test_preference_metrics_equal_score(evaluated, tmp_path):
    scored = tmp_path / "scores.jsonl"
    score(str(evaluated), pairs=str(evaluated.parent / "pairs"), out=str(scored))
    expected = [line for line in _lines(scored) if line["split"] == "test"]
    lines = _lines(evaluated / "eval" / "pairs.jsonl")
    assert lines == expected  # the same code path: the same numbers, exactly

    pref = json.loads((evaluated / "eval" / "eval.json").read_text())["preference"]
    for group, key in (("by_label", "label"), ("by_source", "source")):
        for name, stats in pref[group].items():
            mine = [l for l in lines if l[key] == name]
            assert stats["pairs"] == len(mine)
            assert stats["reward_accuracy"] == pytest.approx(sum(l["margin"] > 0 for l in mine) / len(mine))
            assert stats["margin"] == pytest.approx(sum(l["margin"] for l in mine) / len(mine))
            assert stats["chosen_logratio"] == pytest.approx(
                sum(l["chosen_logps"] - l["ref_chosen_logps"] for l in mine) / len(mine))
    assert pref["overall"]["pairs"] == len(TEST)


def test_judge_win_rates_by_hand(evaluated):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = json.loads((evaluated / "eval" / "eval.json").read_text())
    generations = _lines(evaluated / "eval" / "generations.jsonl")
    judge_dir = evaluated.parent / "judge_cost"
    judge = AutoModelForSequenceClassification.from_pretrained(judge_dir).eval()
    tok = AutoTokenizer.from_pretrained(judge_dir)

    def cost(prompt: str, answer: str) -> float:
        text = f"\n\nHuman: {prompt}\n\nAssistant: {answer}"  # no chat template: an HH transcript
        with torch.no_grad():
            return judge(**tok(text, return_tensors="pt")).logits[0, 0].item()

    harmless = result["judges"]["harmless"]
    assert harmless["higher_is_better"] is False
    for label in ("harmless", "helpful"):
        mine = [g for g in generations if g["label"] == label]
        outcomes = []
        for g in mine:
            p, r = cost(g["prompt"][0]["content"], g["policy"]), cost(g["prompt"][0]["content"], g["reference"])
            outcomes.append(0.5 if abs(p - r) < 1e-6 else float(p < r))  # lower cost wins
        stats = harmless["by_label"][label]
        assert stats["win_rate"] == pytest.approx(sum(outcomes) / len(outcomes))
        assert stats["prompts"] == len(mine)
        assert stats["ci95"][0] <= stats["win_rate"] <= stats["ci95"][1]


def test_win_rates_count_ties_half_and_bootstrap_is_seeded():
    labels = ["a", "a", "a", "b"]
    policy, reference = [2.0, 1.0, 3.0, 0.0], [1.0, 1.0, 4.0, 1.0]
    higher = win_rates(labels, policy, reference, True, seed=0)
    assert higher["a"]["win_rate"] == pytest.approx(0.5) and (higher["a"]["wins"], higher["a"]["ties"]) == (1, 1)
    assert higher["all"]["win_rate"] == pytest.approx(1.5 / 4)
    assert win_rates(labels, policy, reference, False, seed=0)["b"]["win_rate"] == 1.0
    assert win_rates(labels, policy, reference, True, seed=0) == higher
    low, high = higher["all"]["ci95"]
    assert 0.0 <= low <= higher["all"]["win_rate"] <= high <= 1.0


def _hand_accuracy(model, tokenizer) -> tuple[float, float]:
    """acc and acc_norm of the toy task from the model's logits: each choice's log-likelihood
    after "Question: ...\\nAnswer:" (the harness's target delimiter is a space)."""
    correct = correct_norm = 0
    for doc in TASK_DOCS:
        context = f"Question: {doc['question']}\nAnswer:"
        start = len(tokenizer(context)["input_ids"])
        lls = []
        for choice in doc["choices"]:
            ids = tokenizer(context + " " + choice)["input_ids"]
            with torch.no_grad():
                logps = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
            lls.append(sum(logps[t - 1, ids[t]].item() for t in range(start, len(ids))))
        ranked = sorted(lls, reverse=True)
        assert ranked[0] - ranked[1] > 1e-3  # no near-tie: the argmax is stable across kernels
        correct += max(range(len(lls)), key=lls.__getitem__) == doc["label"]
        norm = [ll / len(c) for ll, c in zip(lls, doc["choices"])]
        correct_norm += max(range(len(norm)), key=norm.__getitem__) == doc["label"]
    return correct / len(TASK_DOCS), correct_norm / len(TASK_DOCS)


@needs_lm_eval
def test_lm_eval_matches_a_hand_computation(evaluated):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    task = json.loads((evaluated / "eval" / "eval.json").read_text())["capability"]["tasks"]["basealign_toy_mc"]
    tok = AutoTokenizer.from_pretrained(evaluated)
    base = AutoModelForCausalLM.from_pretrained(evaluated / "base_model", attn_implementation="sdpa").eval()
    aligned = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(evaluated / "base_model", attn_implementation="sdpa"), evaluated
    ).merge_and_unload().eval()
    for side, model in (("base", base), ("aligned", aligned)):
        acc, acc_norm = _hand_accuracy(model, tok)
        assert task["acc,none"][side] == pytest.approx(acc), side
        assert task["acc_norm,none"][side] == pytest.approx(acc_norm), side
    m = task["acc,none"]
    assert m["delta"] == pytest.approx(m["aligned"] - m["base"])
    n = len(TASK_DOCS)
    assert m["base_stderr"] == pytest.approx((m["base"] * (1 - m["base"]) / (n - 1)) ** 0.5)


def test_model_card_shows_the_eval_table(evaluated):
    from basealign.hub.model_card import build_model_card

    card = str(build_model_card(repo_id="me/x", recipe={}, adapter_config=None, data_stats=None, metrics=[],
                                eval_results=None, kind="adapter", run_dir=evaluated))
    assert "## Evaluation: aligned vs base" in card and "harmless win rate" in card


def _fails(argv: list[str], capsys, *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_bad_input_is_one_line(evaluated, tmp_path, capsys):
    _fails(["eval", str(tmp_path)], capsys, "holds no model")
    _fails(["eval", str(tmp_path / "missing")], capsys, "does not exist")
    not_json = tmp_path / "prompts.txt"
    not_json.write_text("just text\n")
    _fails(["eval", str(evaluated), "--prompts", str(not_json)], capsys, "line 1 is not JSON")
    no_prompt = tmp_path / "prompts.jsonl"
    no_prompt.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"question": "hm"}) + "\n")
    _fails(["eval", str(evaluated), "--prompts", str(no_prompt)], capsys, "line 2 has no 'prompt' field")
    _fails(["eval", str(evaluated), "--judge", f"helpful={evaluated / 'base_model'}"], capsys,
           "not a sequence-classification model", "MistralForCausalLM")
    _fails(["eval", str(evaluated), "--judge", "helpful"], capsys, "NAME=PATH")


@needs_lm_eval
def test_unknown_lm_eval_task_is_one_line(evaluated, capsys):
    # the only test that indexes the harness's builtin tasks (slow): a name in none of them
    _fails(["eval", str(evaluated), "--tasks", "hellaswag,no_such_task_xyz"], capsys,
           "unknown lm-eval task 'no_such_task_xyz'")


def test_prompts_file(evaluated, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hello?", "label": "helpful"}) + "\n\n"
                       + json.dumps({"prompt": [{"role": "user", "content": "Bye?"}]}) + "\n")
    assert main(["eval", str(evaluated), "--prompts", str(prompts), "--limit", "1", "--max-new-tokens", "3"]) == 0
    generations = _lines(evaluated / "eval" / "generations.jsonl")
    assert [(g["index"], g["prompt"], g["label"]) for g in generations] == [(0, "Hello?", "helpful")]
    assert json.loads((evaluated / "eval" / "eval.json").read_text())["preference"]["overall"]["pairs"] == 1
