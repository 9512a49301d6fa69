"""Sample answers during training: at each evaluation, a few held-out prompts answered by the
policy and by the reference, written to RUN/eval/generations_step<k>.jsonl (report.md shows
the last ones).

A TrainerCallback, so the Trainer itself is untouched. Only the main process generates, and
not at all when the model is sharded (FSDP, DeepSpeed): one process cannot run it alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

from basealign.eval.generate import Decoding, side_by_side
from basealign.eval.prompts import Prompt, generation_line
from basealign.files import write_atomic
from basealign.models.tokenize_pairs import prompt_token_ids

STEP_FILE = "generations_step{step}.jsonl"


class StepGenerations(TrainerCallback):
    def __init__(self, prompts: list[Prompt], tokenizer, ref_model, out_dir: Path, decoding: Decoding):
        self.prompts, self.tokenizer, self.ref_model = prompts, tokenizer, ref_model
        self.out_dir, self.decoding = Path(out_dir), decoding

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        from accelerate.state import AcceleratorState
        from accelerate.utils import DistributedType

        # One process generating alone on a sharded model would wait forever for the others'
        # all-gathers; however the run was launched, accelerate's state says if it is sharded.
        sharded = AcceleratorState().distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        if not state.is_world_process_zero or model is None or sharded or not self.prompts:
            return
        texts = [p.prompt for p in self.prompts]
        ref_model = self.ref_model if self.ref_model is not None else model  # LoRA: the adapter switched off
        policy, reference = side_by_side(model, ref_model, self.tokenizer, texts, self.decoding)
        lines = [generation_line(p, len(prompt_token_ids(self.tokenizer, p.prompt)), a, b)
                 for p, a, b in zip(self.prompts, policy, reference)]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.out_dir / STEP_FILE.format(step=state.global_step),
                     "".join(json.dumps({"step": state.global_step, **line}, ensure_ascii=False) + "\n" for line in lines))
