"""prepare never leaves a half-written folder, names every source's path, splits by prompt,
counts every dropped row (the first one too) and prints a per-source summary."""

import json

import pytest
from prep_helpers import SAMPLES, read_jsonl

from basealign.cli import main
from basealign.data_prep.errors import PrepareError
from basealign.data_prep.prepare import load_pairs, prepare
from basealign.data_prep.readers import pairs as pairs_reader
from basealign.data_prep.readers.base import Reject


def hh_source(name="h", path="samples:hh_helpful.jsonl", label="helpful", **extra):
    return {"name": name, "type": "hh_rlhf", "path": path, "label": label, **extra}


def test_failed_prepare_keeps_the_existing_folder_intact(tmp_path):
    out = tmp_path / "pairs"
    prepare({"sources": [hh_source()], "test_size": 0, "seed": 0, "output_dir": str(out)})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: same", "rejected": "\n\nHuman: hi\n\nAssistant: same"}) + "\n")
    with pytest.raises(PrepareError, match="source 'bad' yields no pairs .*1 identical_replies"):
        prepare({"sources": [hh_source(), hh_source("bad", str(bad))], "test_size": 0, "seed": 0, "output_dir": str(out)})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "pairs"]  # no staging folder left


def test_recipe_without_valid_rows_writes_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hi"}) + "\n")
    with pytest.raises(PrepareError, match="yields no pairs"):
        prepare({"sources": [hh_source("bad", str(bad))], "output_dir": str(tmp_path / "new" / "pairs")})
    assert not (tmp_path / "new" / "pairs").exists()
    assert list((tmp_path / "new").iterdir()) == []


def test_output_dir_with_foreign_files_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(PrepareError, match="holds files prepare did not write"):
        prepare({"sources": [hh_source()], "output_dir": str(out)})
    assert (out / "notes.txt").read_text() == "keep me"


def test_stats_record_source_paths_and_sampled_out_rows_are_positions_only(tmp_path):
    out = prepare({"sources": [hh_source(weight=0.5), {"name": "p", "type": "pku_saferlhf", "path": "samples:pku_saferlhf.jsonl",
                                                        "label": "harmless"}],
                   "test_size": 0, "seed": 0, "output_dir": str(tmp_path / "o")})
    sources = json.loads((out / "stats.json").read_text())["sources"]
    assert sources["h"]["path"] == "samples:hh_helpful.jsonl" and sources["h"]["hub"] is False
    sampled = [r for r in read_jsonl(out / "rejects.jsonl") if r["reason"] == "sampled_out"]
    assert len(sampled) == sources["h"]["rejected"]["sampled_out"] > 0
    assert all(set(r) == {"source", "reason", "line"} for r in sampled)
    assert "samples:hh_helpful.jsonl (local)" in (out / "data_card.md").read_text()


def test_one_prompt_never_lands_in_both_splits(tmp_path):
    """PKU-SafeRLHF as harmless and as helpful gives two pairs per prompt."""
    pku = {"type": "pku_saferlhf", "path": "samples:pku_saferlhf.jsonl"}
    out = prepare({"sources": [{"name": "safe", "label": "harmless", **pku}, {"name": "good", "label": "helpful", **pku}],
                   "test_size": 0.3, "seed": 1, "output_dir": str(tmp_path / "o")})
    prompts = {split: {json.dumps(r["prompt"]) for r in load_pairs(out, split)} for split in ("train", "test")}
    assert prompts["test"] and prompts["train"]
    assert not prompts["train"] & prompts["test"]


def test_missing_column_in_the_first_row_is_a_counted_reject(tmp_path):
    rows = read_jsonl(SAMPLES / "hh_helpful.jsonl")[:5]
    del rows[0]["rejected"]
    path = tmp_path / "first.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = prepare({"sources": [hh_source("f", str(path))], "test_size": 0, "output_dir": str(tmp_path / "o")})
    stats = json.loads((out / "stats.json").read_text())["sources"]["f"]
    assert stats["read"] == 5 and stats["kept"] == 4 and stats["rejected"] == {"missing_value": 1}
    assert [r["line"] for r in read_jsonl(out / "rejects.jsonl")] == [1]


def test_pairs_reader_drops_conversations_with_different_prompts():
    convert = pairs_reader.make_converter({"name": "p"})
    user = {"role": "user", "content": "hi"}
    row = {"prompt": None,
           "chosen": [user, {"role": "assistant", "content": "hello"}],
           "rejected": [{"role": "user", "content": "something else"}, {"role": "assistant", "content": "go away"}]}
    with pytest.raises(Reject) as info:
        convert(row)
    assert info.value.reason == "prompt_mismatch"
    with pytest.raises(Reject) as info:
        convert({**row, "prompt": "a third prompt", "rejected": row["chosen"][:1] + [{"role": "assistant", "content": "no"}]})
    assert info.value.reason == "prompt_mismatch"
    same = convert({**row, "rejected": [user, {"role": "assistant", "content": "go away"}]})
    assert same.prompt == (("user", "hi"),) and same.rejected == "go away"


def test_prepare_prints_a_per_source_summary(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"sources:\n  - {{name: harmless_hh, type: hh_rlhf, path: {SAMPLES / 'hh_harmless.jsonl'}, label: harmless}}\n"
                      f"output_dir: {tmp_path / 'o'}\n")
    assert main(["prepare", str(recipe)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["source", "read", "kept", "rejected", "reasons"]
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())["sources"]["harmless_hh"]
    assert lines[1].split()[:4] == ["harmless_hh", str(stats["read"]), str(stats["kept"]), str(sum(stats["rejected"].values()))]
    assert "1 duplicate" in lines[1]
