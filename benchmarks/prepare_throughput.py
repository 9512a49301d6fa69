"""Throughput of `data_prep.prepare` on synthetic rows of realistic length (no tokenization).

    .venv/bin/python benchmarks/prepare_throughput.py [--hh 100000 --pku 50000 --uf 40000 --repeat 3]

Writes synthetic HH-RLHF (multi-turn, ~1.1 kB per transcript), PKU-SafeRLHF and
UltraFeedback-binarized JSON-lines files to a temporary folder (generated text, not real
rows), runs the mixture end to end (read, convert, de-duplicate, sample, split, write
parquet + rejects + card) and prints rows read per second of wall time (best of --repeat).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from basealign.data_prep.prepare import prepare

WORDS = ("the a model answer question helpful safe please could would data time people make know "
         "think good first also way because any these give most very well help thanks really").split()


def text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)).capitalize() + "."


def write(folder: Path, n_hh: int, n_pku: int, n_uf: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(folder / "hh.jsonl", "w") as f:
        for i in range(n_hh):
            turns = "".join(f"\n\nHuman: {text(rng, 18)} {i}\n\nAssistant: {text(rng, 35)}" for _ in range(rng.randint(0, 2)))
            prompt = f"{turns}\n\nHuman: {text(rng, 20)} {i}"
            f.write(json.dumps({"chosen": f"{prompt}\n\nAssistant: {text(rng, 45)}",
                                "rejected": f"{prompt}\n\nAssistant: {text(rng, 40)}"}) + "\n")
    cats = {c: False for c in ("Violence", "Drugs", "Privacy Violation", "Economic Crime", "Cybercrime")}
    with open(folder / "pku.jsonl", "w") as f:
        for i in range(n_pku):
            s0, s1 = rng.random() < 0.6, rng.random() < 0.5
            f.write(json.dumps({"prompt": f"{text(rng, 20)} {i}", "response_0": text(rng, 60), "response_1": text(rng, 60),
                                "is_response_0_safe": s0, "is_response_1_safe": s1,
                                "response_0_harm_category": {**cats, "Violence": not s0}, "response_1_harm_category": {**cats, "Drugs": not s1},
                                "response_0_severity_level": 0 if s0 else 2, "response_1_severity_level": 0 if s1 else 1,
                                "better_response_id": rng.randint(0, 1), "safer_response_id": 0 if s0 else 1}) + "\n")
    with open(folder / "uf.jsonl", "w") as f:
        for i in range(n_uf):
            user = {"role": "user", "content": f"{text(rng, 40)} {i}"}
            f.write(json.dumps({"prompt": user["content"], "prompt_id": f"{i:08x}",
                                "chosen": [user, {"role": "assistant", "content": text(rng, 150)}],
                                "rejected": [user, {"role": "assistant", "content": text(rng, 120)}],
                                "score_chosen": 8.0, "score_rejected": rng.choice([3.0, 5.0, 7.5])}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hh", type=int, default=100_000)
    parser.add_argument("--pku", type=int, default=50_000)
    parser.add_argument("--uf", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write(folder, args.hh, args.pku, args.uf)
        size_mb = sum((folder / f).stat().st_size for f in ("hh.jsonl", "pku.jsonl", "uf.jsonl")) / 1e6
        recipe = {"sources": [
            {"name": "hh", "type": "hh_rlhf", "path": str(folder / "hh.jsonl"), "label": "harmless", "weight": 1.0},
            {"name": "pku", "type": "pku_saferlhf", "path": str(folder / "pku.jsonl"), "label": "harmless", "weight": 1.0},
            {"name": "uf", "type": "ultrafeedback", "path": str(folder / "uf.jsonl"), "label": "helpful", "weight": 0.5, "min_score_gap": 1.0}],
            "test_size": 0.05, "seed": 42, "output_dir": str(folder / "out")}
        total = args.hh + args.pku + args.uf
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            out = prepare(recipe)
            best = min(best, time.perf_counter() - start)
        stats = json.loads((out / "stats.json").read_text())
        print(f"rows read: {total} ({size_mb:.0f} MB of JSON lines) on {os.cpu_count()} CPU(s)")
        print(f"kept: train {stats['splits']['train']['rows']}, test {stats['splits']['test']['rows']}")
        print(f"best wall time: {best:.2f} s -> {total / best:,.0f} rows/s")


if __name__ == "__main__":
    main()
