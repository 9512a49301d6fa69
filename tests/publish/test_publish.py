"""basealign push: the dry-run folder, the model card, the upload against a fake Hub, and errors."""

from __future__ import annotations

import json
import shutil
import socket

import pytest

from basealign.cli import main
from basealign.errors import BasealignError
from basealign.hub.model_card import build_model_card, dataset_ids, looks_like_hub_id
from basealign.hub.publish import push

from .conftest import FAKE_TOKEN, FIXED_IDS, RECIPE, read_front_matter, seq_logprob

REPO = "alice/tiny-dpo"
ADAPTER_UPLOAD = {
    "README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
    "recipe.yaml", "metrics.jsonl", "data_stats.json", "eval_results.json",
}


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {err!r}"
    return lines[0]


# --------------------------------------------------------------------------- dry run and card


def test_dry_run_folder_and_card(lora_run, tmp_path, capsys):
    out = tmp_path / "upload"
    assert main(["push", str(lora_run), "--repo-id", REPO, "--dry-run", str(out)]) == 0
    assert "nothing uploaded" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert ADAPTER_UPLOAD <= names
    assert not names & {"base_model", "model.safetensors", "config.json"}
    assert [p.name for p in tmp_path.iterdir()] == ["upload"]  # no staging leftovers beside it

    meta, body = read_front_matter((out / "README.md").read_text())
    assert meta["library_name"] == "peft"
    assert meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "text-generation"
    assert "base_model" not in meta  # builtin base model: not a Hub id
    assert meta["datasets"] == ["Anthropic/hh-rlhf", "PKU-Alignment/PKU-SafeRLHF"]
    assert {"dpo", "sigmoid", "ipo", "basealign"} <= set(meta["tags"])
    # recipe summary, mixture, metrics, usage
    assert "| beta | 0.1 |" in body
    assert "| LoRA r | 4 |" in body and "| LoRA alpha | 8 |" in body
    assert "| hh_harmless | 12 |" in body and "| harmless | 22 |" in body and "**train**: 30 pairs" in body
    assert "| rewards/accuracies | 0.8 |" in body  # last training line
    assert "| eval/rewards/accuracies | 0.75 |" in body
    assert "PeftModel.from_pretrained" in body and REPO in body
    # files are byte copies of the run's own
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "metrics.jsonl", "recipe.yaml"):
        assert (out / name).read_bytes() == (lora_run / name).read_bytes(), name


def test_dry_run_carries_the_eval_folder(lora_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)  # the fixture is shared: leave it as it was
    (run / "eval").mkdir()
    from basealign.eval.preference import summarize

    lines = [{"label": "harmless", "source": "toy", "margin": m, "reference": None} for m in (0.5, -0.1, 0.35)]
    (run / "eval" / "eval.json").write_text(json.dumps({"preference": summarize(lines)}) + "\n")
    (run / "eval" / "eval.md").write_text("# eval\n")
    (run / "eval" / "scratch.tmp").write_text("not a result")
    out = tmp_path / "upload"
    push(run, repo_id=REPO, dry_run=out)
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["eval.json", "eval.md"]
    assert (out / "eval" / "eval.json").read_bytes() == (run / "eval" / "eval.json").read_bytes()
    assert "## Evaluation: aligned vs base" in (out / "README.md").read_text()


def test_a_damaged_eval_json_is_one_line_not_a_traceback(lora_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    (run / "eval").mkdir()
    (run / "eval" / "eval.json").write_text('{"preference": {"overall": ')  # cut off
    assert main(["push", str(run), "--repo-id", REPO, "--dry-run", str(tmp_path / "upload")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eval.json is not valid JSON" in err[0]


def test_dry_run_adapter_gives_same_logprobs(lora_run, adapter_logprob, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "upload"
    push(lora_run, repo_id=REPO, dry_run=out)
    base = AutoModelForCausalLM.from_pretrained(lora_run / "base_model")
    base_lp = seq_logprob(base, FIXED_IDS)
    lp = seq_logprob(PeftModel.from_pretrained(base, out), FIXED_IDS)
    assert lp == pytest.approx(adapter_logprob, abs=1e-6)
    assert abs(adapter_logprob - base_lp) > 1e-2  # the adapter really changes the model


def test_merged_dry_run_matches_adapter(lora_run, adapter_logprob, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    summary = push(lora_run, repo_id=REPO, merged=True, dry_run=out, max_shard_size="200KB")
    assert "merged model" in summary
    names = {p.name for p in out.iterdir()}
    assert not names & {"adapter_config.json", "adapter_model.safetensors"}
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "README.md", "recipe.yaml"} <= names
    assert len([n for n in names if n.startswith("model-") and n.endswith(".safetensors")]) > 1  # sharded
    meta, body = read_front_matter((out / "README.md").read_text())
    assert meta["library_name"] == "transformers"
    assert "AutoModelForCausalLM.from_pretrained" in body
    merged = AutoModelForCausalLM.from_pretrained(out)
    # merging re-rounds the weights: agree to 1e-6 relative (one fp32 ulp of this ~190 sum is 1.5e-5)
    assert seq_logprob(merged, FIXED_IDS) == pytest.approx(adapter_logprob, rel=1e-6)


def test_dry_run_refuses_non_empty_target(lora_run, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["push", str(lora_run), "--repo-id", REPO, "--dry-run", str(out)]) == 2
    assert "not empty" in _one_line(capsys.readouterr().err)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_dry_run_into_a_read_only_folder(lora_run, capsys):
    assert main(["push", str(lora_run), "--repo-id", REPO, "--dry-run", "/proc/basealign-test"]) == 2
    assert "--dry-run: cannot write in /proc" in _one_line(capsys.readouterr().err)


def test_failed_dry_run_leaves_nothing(lora_run, tmp_path, monkeypatch, capsys):
    import basealign.hub.publish as publish

    def broken_card(**kwargs):
        raise BasealignError("card exploded")

    monkeypatch.setattr(publish, "build_model_card", broken_card)  # fails after the weights are staged
    out = tmp_path / "upload"
    assert main(["push", str(lora_run), "--repo-id", REPO, "--dry-run", str(out)]) == 2
    assert "card exploded" in _one_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_card_fields_from_recipe():
    recipe = {**RECIPE, "model": {**RECIPE["model"], "name_or_path": "mistralai/Mistral-7B-v0.1"},
              "hub": {"push": True, "repo_id": REPO, "private": True, "license": "mit"}, "loss": {"type": "ipo", "beta": 0.2}}
    card = build_model_card(repo_id=REPO, recipe=recipe, adapter_config=None, data_stats=None, metrics=[],
                            eval_results=None, kind="adapter")
    meta, body = read_front_matter(card.content)
    assert meta["base_model"] == "mistralai/Mistral-7B-v0.1"
    assert meta["license"] == "mit"
    assert "datasets" not in meta
    assert {"dpo", "ipo", "basealign"} <= set(meta["tags"])
    assert "mixture is unknown" in body
    assert "no metrics" in body
    assert 'AutoModelForCausalLM.from_pretrained("mistralai/Mistral-7B-v0.1")' in body


def test_hub_id_detection(tmp_path):
    assert looks_like_hub_id("Anthropic/hh-rlhf")
    assert not looks_like_hub_id("builtin:tiny-mistral")
    assert not looks_like_hub_id("samples/helpful.jsonl")
    assert not looks_like_hub_id("/abs/path")
    (tmp_path / "data" / "pairs").mkdir(parents=True)
    assert not looks_like_hub_id("data/pairs", relative_to=tmp_path)
    stats = {"sources": {"a": {"path": "x/y"}, "b": {"path": "x/y"}, "c": {"path": "./local"}}}
    assert dataset_ids(stats) == ["x/y"]


# --------------------------------------------------------------------------- upload against a fake hub


def test_push_uploads_then_reupload_is_a_no_op(lora_run, fake_hub, private_tmp, capsys):
    assert main(["push", str(lora_run), "--repo-id", REPO, "--private"]) == 0
    out = capsys.readouterr().out
    assert "pushed adapter" in out and fake_hub.endpoint in out
    repo = fake_hub.repos[REPO]
    assert repo["private"] is True
    assert len(fake_hub.commits) == 1
    assert set(repo["files"]) == ADAPTER_UPLOAD | {".gitattributes"}
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "metrics.jsonl", "recipe.yaml"):
        assert repo["files"][name] == (lora_run / name).read_bytes(), name
    meta, _ = read_front_matter(repo["files"]["README.md"].decode())
    assert meta["library_name"] == "peft" and "dpo" in meta["tags"]
    assert fake_hub.unexpected == []
    assert list(private_tmp.iterdir()) == []  # staging folder cleaned up

    # the same run again: nothing changed, so no commit
    seen = len(fake_hub.requests)
    summary = push(lora_run, repo_id=REPO)
    assert "up to date" in summary and "no commit" in summary
    assert len(fake_hub.commits) == 1
    second = [path for _, path in fake_hub.requests[seen:]]
    assert not [path for path in second if "/commit/" in path]  # unchanged files are not even sent


def test_upload_is_exactly_the_dry_run_folder(lora_run, fake_hub, tmp_path):
    out = tmp_path / "upload"
    push(lora_run, repo_id=REPO, dry_run=out)
    assert fake_hub.requests == []  # the dry run touched no network
    push(lora_run, repo_id=REPO)
    uploaded = {k: v for k, v in fake_hub.repos[REPO]["files"].items() if k != ".gitattributes"}
    assert uploaded == {p.name: p.read_bytes() for p in out.iterdir()}


def test_changed_run_commits_only_changed_files(lora_run, fake_hub, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    push(run, repo_id=REPO)
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 4, "loss": 0.6, "rewards/accuracies": 0.9}) + "\n")
    push(run, repo_id=REPO)
    assert len(fake_hub.commits) == 2
    assert sorted(p for _, p in fake_hub.commits[1]["ops"]) == ["README.md", "metrics.jsonl"]


def test_merged_push_replaces_adapter(lora_run, fake_hub):
    push(lora_run, repo_id=REPO)
    summary = push(lora_run, repo_id=REPO, merged=True)
    assert "pushed merged model" in summary
    assert [op for op in fake_hub.commits[-1]["ops"] if op[0] == "deletedFile"] == [
        ("deletedFile", "adapter_config.json"), ("deletedFile", "adapter_model.safetensors")]
    files = set(fake_hub.repos[REPO]["files"])
    assert "model.safetensors" in files and "config.json" in files
    assert not files & {"adapter_config.json", "adapter_model.safetensors"}
    assert ".gitattributes" in files  # not ours: left alone


def test_huggingface_hub_create_commit_skips_unchanged_files(fake_hub, tmp_path):
    """The Hub-side no-op basealign also relies on: create_commit drops files whose preupload oid matches."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=fake_hub.endpoint, token=FAKE_TOKEN)
    api.create_repo(REPO, exist_ok=True)
    (tmp_path / "a.txt").write_text("same bytes")
    first = api.create_commit(REPO, operations=[CommitOperationAdd("a.txt", str(tmp_path / "a.txt"))], commit_message="one")
    second = api.create_commit(REPO, operations=[CommitOperationAdd("a.txt", str(tmp_path / "a.txt"))], commit_message="two")
    assert len(fake_hub.commits) == 1
    assert second.oid == first.oid
    assert fake_hub.repos[REPO]["files"]["a.txt"] == b"same bytes"


# --------------------------------------------------------------------------- errors


def test_no_token(lora_run, private_tmp, capsys):
    assert main(["push", str(lora_run), "--repo-id", REPO]) == 2
    assert "no Hugging Face token" in _one_line(capsys.readouterr().err)
    assert list(private_tmp.iterdir()) == []


def test_forbidden_repo(lora_run, forbidden_hub, private_tmp, capsys):
    assert main(["push", str(lora_run), "--repo-id", "someone-else/model"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "403" in line and "someone-else/model" in line
    assert list(private_tmp.iterdir()) == []


def test_unreachable_endpoint(lora_run, monkeypatch, private_tmp, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    assert main(["push", str(lora_run), "--repo-id", REPO]) == 2
    assert "cannot reach the Hub" in _one_line(capsys.readouterr().err)
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize("dry", [False, True])
def test_run_without_model(tmp_path, fake_hub, capsys, dry):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("model: {name_or_path: builtin:tiny-mistral}\n")
    (run / "adapter_config.json").write_text("{}")  # an adapter config alone is not a model
    out = tmp_path / "upload"
    argv = ["push", str(run), "--repo-id", REPO] + (["--dry-run", str(out)] if dry else [])
    assert main(argv) == 2
    assert "holds no model" in _one_line(capsys.readouterr().err)
    assert not out.exists()
    assert fake_hub.requests == []


def test_missing_run_dir_and_bad_repo_id(tmp_path, capsys):
    assert main(["push", str(tmp_path / "nope"), "--repo-id", REPO]) == 2
    assert "does not exist" in _one_line(capsys.readouterr().err)
    assert main(["push", str(tmp_path), "--repo-id", "no-owner"]) == 2
    assert "OWNER/NAME" in _one_line(capsys.readouterr().err)


def test_full_finetune_run_uploads_full_model(tmp_path, fake_hub):
    from basealign.models.tiny import byte_level_tokenizer, build_tiny_model

    run = tmp_path / "full"
    build_tiny_model().save_pretrained(run)
    byte_level_tokenizer().save_pretrained(run)
    (run / "recipe.yaml").write_text("model: {name_or_path: builtin:tiny-mistral}\nlora: null\nloss: {type: [sigmoid], beta: 0.1}\n")
    summary = push(run, repo_id=REPO, merged=True)  # --merged is meaningless here: the full model goes up
    assert "full model" in summary
    files = set(fake_hub.repos[REPO]["files"])
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= files
    meta, body = read_front_matter(fake_hub.repos[REPO]["files"]["README.md"].decode())
    assert meta["library_name"] == "transformers"
    assert "mixture is unknown" in body


def test_rejected_token(lora_run, fake_hub, monkeypatch, private_tmp, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_not_the_right_one")
    assert main(["push", str(lora_run), "--repo-id", REPO]) == 2
    assert "401" in _one_line(capsys.readouterr().err)
    assert fake_hub.commits == [] and list(private_tmp.iterdir()) == []
