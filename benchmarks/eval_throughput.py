"""Generation throughput of `basealign eval`: batched (left-padded, KV cache) vs one prompt at a time.

    .venv/bin/python benchmarks/eval_throughput.py [--prompts 32 --max-new-tokens 64 --batch-size 16 --repeat 3]

Runs `basealign.eval.generate.generate` (the code `basealign eval` runs, stop strings included)
greedily on the builtin tiny model (random init, byte-level tokenizer, `hh` template) over
synthetic prompts of varied length (seeded). A random model rarely stops early, so nearly every
answer runs to --max-new-tokens. Prints prompts/s and generated tokens/s, the best of --repeat
runs each way, then one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time

import torch

from basealign.config import ModelConfig
from basealign.eval.generate import Decoding, generate
from basealign.models.loading import load_model, load_tokenizer
from basealign.models.tiny import materialize_builtin

WORDS = ("how do i make a good cake without eggs please tell me what the best way is to learn python "
         "quickly my friend is sad what should i say").split()


def prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 60))).capitalize() + "?" for _ in range(n)]


def measure(model, tokenizer, texts: list[str], decoding: Decoding, repeat: int) -> dict:
    best = None
    for _ in range(repeat):
        start = time.perf_counter()
        answers = generate(model, tokenizer, texts, decoding)
        seconds = time.perf_counter() - start
        if best is None or seconds < best["seconds"]:
            generated = sum(a.generated for a in answers)
            best = {"seconds": seconds, "prompts_per_s": len(texts) / seconds, "tokens_per_s": generated / seconds,
                    "generated_tokens": generated}
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny-mistral")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = str(materialize_builtin(args.model, tmp))
        tokenizer = load_tokenizer(path, "hh")
        model = load_model(ModelConfig(), path).eval()
    texts = prompts(args.prompts, args.seed)
    generate(model, tokenizer, texts[:2], Decoding(max_new_tokens=4))  # warm-up
    results = {}
    for name, batch_size in (("batched", args.batch_size), ("one at a time", 1)):
        decoding = Decoding(max_new_tokens=args.max_new_tokens, batch_size=batch_size)
        results[name] = measure(model, tokenizer, texts, decoding, args.repeat)
        r = results[name]
        print(f"{name:>14} (batch {batch_size:>3}): {r['prompts_per_s']:7.2f} prompts/s  "
              f"{r['tokens_per_s']:8.1f} generated tokens/s  ({r['seconds']:.2f} s, {r['generated_tokens']} tokens)")
    speedup = results["batched"]["tokens_per_s"] / results["one at a time"]["tokens_per_s"]
    print(f"batched / one at a time: {speedup:.2f}x")
    print(json.dumps({"args": vars(args), "torch_threads": torch.get_num_threads(), **results, "speedup": speedup}))


if __name__ == "__main__":
    main()
