"""The eval stage of `basealign train`: sample generations at each eval step, `basealign eval`
at the end; here on a full fine-tune, whose reference is the frozen base model."""

from __future__ import annotations

import json

from basealign.config import recipe_from_dict
from basealign.training.run import run
from conftest import toy_rows, write_pairs_folder
from eval_helpers import TEST


def test_training_with_an_eval_section(tmp_path):
    pairs = write_pairs_folder(tmp_path / "pairs", toy_rows(8), TEST)
    out = tmp_path / "run"
    recipe = recipe_from_dict({
        "model": {"name_or_path": "builtin:tiny-mistral"},
        "lora": None,
        "data": {"pairs": str(pairs), "max_length": 256},
        "training": {"learning_rate": 1e-3, "max_tokens_per_batch": 1024, "max_steps": 2, "eval_steps": 1,
                     "logging_steps": 1, "save_steps": 100},
        "eval": {"step_generations": 2, "max_new_tokens": 4, "limit": 3},
        "output_dir": str(out),
    })
    run(recipe)

    # one file per eval step (1, 2) and the final evaluate(), each with 2 prompts answered by both models
    steps = sorted(p.name for p in (out / "eval").glob("generations_step*.jsonl"))
    assert steps == ["generations_step1.jsonl", "generations_step2.jsonl"]
    last = [json.loads(line) for line in (out / "eval" / "generations_step2.jsonl").read_text().splitlines()]
    assert [(s["step"], s["index"]) for s in last] == [(2, 0), (2, 1)]
    report = (out / "report.md").read_text()
    assert "## Sample generations (step 2)" in report and TEST[1]["prompt"].split()[0] in report

    # the final eval: a full fine-tune's reference is the base model the recipe names
    result = json.loads((out / "eval" / "eval.json").read_text())
    assert result["reference"] == result["preference"]["reference"] == "base model builtin:tiny-mistral"
    assert result["preference"]["overall"]["pairs"] == 3 and result["generations"]["prompts"] == 3
    pairs_lines = [json.loads(line) for line in (out / "eval" / "pairs.jsonl").read_text().splitlines()]
    assert all(line["ref_chosen_logps"] != line["chosen_logps"] for line in pairs_lines)  # the policy moved
