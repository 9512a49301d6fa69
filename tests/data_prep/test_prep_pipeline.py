"""The mixture builder end to end on the bundled samples and small hand-made files."""

import json

import pyarrow.parquet as pq
import pytest
from prep_helpers import RECIPES, SAMPLES, read_jsonl

from basealign.data_prep.errors import PrepareError
from basealign.data_prep.prepare import is_pairs_folder, load_pairs, prepare
from basealign.data_prep.recipe import load_recipe

OUTPUTS = ("train.parquet", "test.parquet", "stats.json", "data_card.md", "rejects.jsonl")


def quickstart(tmp_path, *overrides, name="out"):
    return prepare(RECIPES / "quickstart.yaml", [f"output_dir={tmp_path / name}", *overrides])


def test_quickstart_output_format_and_accounting(tmp_path):
    out = quickstart(tmp_path)
    assert all((out / f).is_file() for f in OUTPUTS)
    stats = json.loads((out / "stats.json").read_text())
    train = load_pairs(out, "train")
    test = load_pairs(out, "test")
    assert 60 <= len(train) <= 100 and len(test) >= 1
    assert stats["splits"]["train"]["rows"] == len(train) and stats["splits"]["test"]["rows"] == len(test)
    for row in train + test:
        assert row["prompt"][-1]["role"] == "user" and all(set(m) == {"role", "content"} for m in row["prompt"])
        assert [m["role"] for m in row["chosen"]] == ["assistant"] == [m["role"] for m in row["rejected"]]
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
        assert row["source"] in {"hh_harmless", "hh_helpful", "pku_safer"}
        assert row["label"] == ("helpful" if row["source"] == "hh_helpful" else "harmless")
        assert len(row["chosen"][0]["content"]) < 200 and sum(len(m["content"]) for m in row["prompt"]) < 300
    rejects = read_jsonl(out / "rejects.jsonl")
    for name, src in stats["sources"].items():
        assert src["kept"] + sum(src["rejected"].values()) == src["read"]
        assert sum(1 for r in rejects if r["source"] == name) == sum(src["rejected"].values())
        in_splits = stats["splits"]["train"]["by_source"].get(name, 0) + stats["splits"]["test"]["by_source"].get(name, 0)
        assert in_splits == src["kept"]
    assert stats["sources"]["pku_safer"]["rejected"]["both_unsafe"] == 2
    assert stats["sources"]["hh_harmless"]["rejected"]["duplicate"] == 1
    # the helpful sample repeats a harmless row: cross-source duplicates are dropped too
    assert stats["sources"]["hh_helpful"]["rejected"]["duplicate"] == 2
    for reason in ("no_assistant_turn", "prompt_mismatch", "identical_replies", "empty_reply"):
        assert stats["sources"]["hh_harmless"]["rejected"][reason] == 1
    card = (out / "data_card.md").read_text()
    assert "both_unsafe" in card and "| hh_harmless | hh_rlhf | harmless |" in card
    pku = [r for r in train + test if r["source"] == "pku_safer"]
    assert all(r["metadata"]["chosen_safe"] for r in pku)
    assert any(r["metadata"]["rejected_harm_categories"] for r in pku)
    assert pq.read_schema(out / "train.parquet").field("metadata").type == "string"


def test_same_recipe_and_seed_give_identical_bytes(tmp_path):
    a, b = quickstart(tmp_path, name="a"), quickstart(tmp_path, name="b")
    for f in OUTPUTS:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    c = quickstart(tmp_path, "seed=3", name="c")
    assert (a / "train.parquet").read_bytes() != (c / "train.parquet").read_bytes()


def test_weights_fraction_count_and_zero(tmp_path):
    out = quickstart(tmp_path, "sources.hh_harmless.weight=0.5", "sources.1.weight=10", "sources.pku_safer.weight=0", "test_size=0")
    stats = json.loads((out / "stats.json").read_text())["sources"]
    assert stats["hh_harmless"]["kept"] == round(0.5 * 33)
    assert stats["hh_helpful"]["kept"] == 10
    assert stats["pku_safer"]["kept"] == 0 and stats["pku_safer"]["rejected"]["sampled_out"] == 28
    for src in stats.values():
        assert src["kept"] + sum(src["rejected"].values()) == src["read"]
    assert load_pairs(out, "test") == []
    assert len(load_pairs(out, "train")) == stats["hh_harmless"]["kept"] + 10


def test_malformed_line_is_rejected_with_line_number(tmp_path):
    recipe = {"sources": [{"name": "broken", "type": "hh_rlhf", "path": str(SAMPLES / "hh_malformed.jsonl"), "label": "harmless"}],
              "test_size": 0, "seed": 1, "output_dir": str(tmp_path / "m")}
    out = prepare(recipe)
    rejects = read_jsonl(out / "rejects.jsonl")
    assert [(r["reason"], r["line"]) for r in rejects] == [("malformed_json", 3), ("malformed_json", 5)]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sources"]["broken"] == {"type": "hh_rlhf", "label": "harmless", "weight": 1.0, "read": 6, "kept": 4,
                                          "rejected": {"malformed_json": 2}, "path": str(SAMPLES / "hh_malformed.jsonl"),
                                          "hub": False}


def test_ultrafeedback_and_pairs_samples(tmp_path):
    recipe = {"sources": [
        {"name": "uf", "type": "ultrafeedback", "path": "samples:ultrafeedback.jsonl", "label": "helpful", "min_score_gap": 1.0},
        {"name": "mine", "type": "pairs", "path": "samples:pairs.jsonl", "label": "helpful",
         "columns": {"prompt": "question", "chosen": "good", "rejected": "bad"}, "metadata_columns": ["topic"]}],
        "test_size": 0, "seed": 0, "output_dir": str(tmp_path / "u")}
    stats = json.loads((prepare(recipe) / "stats.json").read_text())["sources"]
    # 12 regular UltraFeedback rows share prompts with 12 pairs rows but not the replies: no duplicates there
    assert stats["uf"]["kept"] == 12
    assert stats["uf"]["rejected"] == {"score_gap_below_min": 1, "prompt_mismatch": 1, "malformed_messages": 1,
                                       "no_assistant_turn": 1, "identical_replies": 1}
    assert stats["mine"]["kept"] == 12
    assert stats["mine"]["rejected"] == {"empty_reply": 1, "missing_value": 1, "no_assistant_turn": 1}
    rows = load_pairs(tmp_path / "u", "train")
    assert {r["metadata"].get("topic") for r in rows if r["source"] == "mine"} == {"everyday"}


def test_token_length_filter_with_local_tokenizer(tmp_path):
    from basealign.models.tiny import byte_level_tokenizer

    byte_level_tokenizer().save_pretrained(tmp_path / "tok")
    recipe = {"sources": [{"name": "h", "type": "hh_rlhf", "path": "samples:hh_helpful.jsonl", "label": "helpful"}],
              "test_size": 0, "seed": 0, "output_dir": str(tmp_path / "t"),
              "max_tokens": {"tokenizer": str(tmp_path / "tok"), "max_length": 150}}
    out = prepare(recipe)
    too_long = [r for r in read_jsonl(out / "rejects.jsonl") if r["reason"] == "too_long"]
    assert too_long and all(r["tokens"] > 150 for r in too_long)
    for row in load_pairs(out, "train"):
        prompt = "\n".join(m["content"] for m in row["prompt"])
        reply = max(row["chosen"][0]["content"], row["rejected"][0]["content"], key=lambda s: len(s.encode()))
        assert len(prompt.encode()) + len(reply.encode()) <= 150
    same = prepare({**recipe, "output_dir": str(tmp_path / "t2"), "max_tokens": {"tokenizer": "builtin:bytes", "max_length": 150}})
    assert (same / "train.parquet").read_bytes() == (out / "train.parquet").read_bytes()


def test_local_formats_parquet_csv_and_save_to_disk(tmp_path):
    import datasets

    rows = read_jsonl(SAMPLES / "hh_helpful.jsonl")[:10]
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "h.parquet"))
    ds.to_csv(str(tmp_path / "h.csv"), index=False)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "disk"))
    results = []
    for i, path in enumerate(("h.parquet", "h.csv", "disk")):
        recipe = {"sources": [{"name": "h", "type": "hh_rlhf", "path": str(tmp_path / path), "label": "helpful"}],
                  "test_size": 0, "seed": 0, "output_dir": str(tmp_path / f"o{i}")}
        results.append((prepare(recipe) / "train.parquet").read_bytes())
    assert results[0] == results[1] == results[2]
    assert len(load_pairs(tmp_path / "o0", "train")) == 10


def test_relative_paths_resolve_against_recipe_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "p.jsonl").write_text((SAMPLES / "pku_saferlhf.jsonl").read_text())
    (tmp_path / "r.yaml").write_text(
        "sources:\n  - {name: p, type: pku_saferlhf, path: data/p.jsonl, label: helpful}\n"
        f"test_size: 2\nseed: 5\noutput_dir: {tmp_path / 'o'}\n")
    out = prepare(tmp_path / "r.yaml")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["splits"]["test"]["rows"] == 2
    # helpful keeps both-unsafe pairs by default
    assert "both_unsafe" not in stats["sources"]["p"]["rejected"]


def test_real_mixture_recipe_validates_offline():
    cfg = load_recipe(RECIPES / "harmless_helpful.yaml")
    locations = {s["name"]: s["_location"] for s in cfg["sources"]}
    assert locations == {"hh_harmless": ("hub", "Anthropic/hh-rlhf"), "hh_helpful": ("hub", "Anthropic/hh-rlhf"),
                         "pku_safer": ("hub", "PKU-Alignment/PKU-SafeRLHF"),
                         "ultrafeedback": ("hub", "HuggingFaceH4/ultrafeedback_binarized")}
    assert [s["data_dir"] for s in cfg["sources"][:2]] == ["harmless-base", "helpful-base"]
    assert cfg["sources"][3]["split"] == "train_prefs" and cfg["max_tokens"]["max_length"] == 2048


def test_is_pairs_folder_and_load_pairs_errors(tmp_path):
    out = quickstart(tmp_path)
    assert is_pairs_folder(out) and not is_pairs_folder(tmp_path) and not is_pairs_folder(out / "train.parquet")
    with pytest.raises(PrepareError, match="no 'validation' split"):
        load_pairs(out, "validation")
    with pytest.raises(PrepareError, match="not found"):
        load_pairs(tmp_path / "nope", "train")
    import pyarrow as pa

    (tmp_path / "bad").mkdir()
    pq.write_table(pa.table({"prompt": ["x"], "chosen": ["y"]}), tmp_path / "bad" / "train.parquet")
    with pytest.raises(PrepareError, match="missing column.*rejected"):
        load_pairs(tmp_path / "bad", "train")
