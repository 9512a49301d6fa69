"""The model card: its usage snippet runs, its metrics are the last training and eval lines,
its datasets and sources come from the data statistics."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from basealign.hub.model_card import build_model_card
from basealign.hub.publish import push
from basealign.models.chat_templates import TEMPLATES

from .conftest import DATA_STATS, RECIPE, read_front_matter

REPO = "alice/tiny-dpo"


@pytest.mark.parametrize("chat_template", [False, True])
def test_usage_snippet_runs_against_the_dry_run_folder(lora_run, tmp_path, monkeypatch, chat_template):
    run = lora_run
    if chat_template:
        run = tmp_path / "run"
        shutil.copytree(lora_run, run)
        (run / "chat_template.jinja").write_text(TEMPLATES["hh"])
    upload = tmp_path / "upload"
    push(run, repo_id=REPO, dry_run=upload)
    card = (upload / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert ("apply_chat_template" in snippet) == chat_template
    snippet = snippet.replace(f'"{REPO}"', repr(str(upload)))  # the repo, as the Hub would serve it
    monkeypatch.chdir(tmp_path)  # the builtin base model is materialized here
    exec(compile(snippet, "model card snippet", "exec"), {})  # loads base + adapter, generates, decodes


def _card(metrics, eval_results=None, data_stats=DATA_STATS):
    card = build_model_card(repo_id=REPO, recipe=RECIPE, adapter_config=None, data_stats=data_stats,
                            metrics=metrics, eval_results=eval_results, kind="adapter")
    return read_front_matter(card.content)


def test_final_metrics_are_the_last_training_and_eval_lines():
    metrics = [
        {"step": 1, "loss": 0.69, "rewards/accuracies": 0.5, "rewards/margins": 0.01},
        {"step": 2, "eval/loss": 0.68, "eval/rewards/accuracies": 0.4},
        {"step": 2, "loss": 0.6, "rewards/accuracies": 0.9, "rewards/margins": 0.2},
        {"step": 2, "eval/loss": 0.65, "eval/rewards/accuracies": 0.7},
        {"step": 2, "train_runtime": 3.2, "train_loss": 0.64, "train_samples_per_second": 5.0},
    ]
    _, body = _card(metrics)
    results = body[body.index("## Results"):body.index("## Usage")]
    assert "| rewards/accuracies | 0.9 |" in results and "| rewards/margins | 0.2 |" in results
    assert "train_runtime" not in results and "train_loss" not in results
    assert "| eval/rewards/accuracies | 0.7 |" in results and "0.4" not in results


def test_datasets_and_sources_come_from_prepare_stats(tmp_path):
    from basealign.data_prep.prepare import prepare

    out = prepare({"sources": [{"name": "local_hh", "type": "hh_rlhf", "path": "samples:hh_helpful.jsonl", "label": "helpful"}],
                   "test_size": 0, "output_dir": str(tmp_path / "pairs")})
    stats = json.loads((out / "stats.json").read_text())
    stats["sources"]["hub_hh"] = {**stats["sources"]["local_hh"], "path": "Anthropic/hh-rlhf", "hub": True}
    meta, body = _card([], data_stats=stats)
    assert meta["datasets"] == ["Anthropic/hh-rlhf"]
    assert "| samples:hh_helpful.jsonl (local) |" in body and "| Anthropic/hh-rlhf (hub) |" in body
