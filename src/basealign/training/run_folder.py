"""The run folder (`output_dir`) belongs to one run.

`claim` decides, before any work, whether this run may use the folder: a folder holding
another run's checkpoints or model is refused unless the run resumes it (and its recipe
matches on the fields that shape training) or overwrites it (the old run's files are
removed). `discard_new` removes what a run wrote before it started training, so a run
that fails during setup leaves the folder as it found it. Nothing here trains or loads.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from basealign.config import Recipe, recipe_from_dict
from basealign.errors import BasealignError
from basealign.files import check_writable

# Fields that may change between a run and its resume: how long it runs, how often it logs,
# saves and evaluates, where it reports or pushes, and how (not what) it computes. Every
# other field shapes the optimization, so a resume with a different value is refused.
RESUME_FREE_FIELDS = frozenset({
    "output_dir", "recipe_dir", "hub.push", "hub.repo_id", "hub.private", "hub.license",
    "training.max_steps", "training.num_epochs", "training.logging_steps", "training.save_steps",
    "training.save_total_limit", "training.eval_steps", "training.report_to", "training.dataloader_num_workers",
    "training.precompute_ref_logps", "training.ref_cache_dir", "training.pad_to_multiple_of",
    "model.attn_implementation", "model.gradient_checkpointing", "data.eval_split",
})
RESUME_FREE_SECTIONS = ("eval",)  # `basealign eval` after training reads the model, never shapes it
# What shows that a folder holds a run: its checkpoints and its saved model.
RUN_MARKERS = (
    "checkpoint-*", "adapter_config.json", "adapter_model.safetensors", "model.safetensors", "model-*-of-*.safetensors",
)
# Everything a run writes besides (base_model/ and data/ are rebuilt or checked by every
# run, so they are not one run's own).
RUN_FILES = (
    *RUN_MARKERS, "config.json", "generation_config.json", "model.safetensors.index.json", "training_args.bin",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "recipe.yaml",
    "metrics.jsonl", "eval_results.json", "data_stats.json", "report.md", "report.png", "eval",
)


def _flat(recipe: Recipe) -> dict:
    out = {}
    for section, value in dataclasses.asdict(recipe).items():
        if isinstance(value, dict):
            out.update({f"{section}.{key}": v for key, v in value.items()})
        else:
            out[section] = value
    return out


def differing_fields(saved: Recipe, wanted: Recipe) -> list[str]:
    """Dotted names of the training-relevant fields in which two recipes differ."""
    old, new = _flat(saved), _flat(wanted)
    return sorted(k for k in old.keys() | new.keys() if k not in RESUME_FREE_FIELDS
                  and k.split(".")[0] not in RESUME_FREE_SECTIONS and old.get(k) != new.get(k))


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._before: set[str] | None = None  # entries present before this run; None: folder did not exist

    def previous_run(self) -> list[str]:
        """Names of another run's checkpoints and model files in the folder, sorted."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for pattern in RUN_MARKERS for p in self.path.glob(pattern))

    def claim(self, recipe: Recipe, resume: bool, overwrite: bool) -> str | None:
        """Check that this run may use the folder; returns the checkpoint to resume from (or None).
        Writes nothing."""
        from transformers.trainer_utils import get_last_checkpoint

        if resume and overwrite:
            raise BasealignError("--resume and --overwrite exclude each other")
        check_writable(self.path, "output_dir")
        found = self.previous_run()
        if resume:
            checkpoint = get_last_checkpoint(str(self.path)) if self.path.is_dir() else None
            if checkpoint is None:
                raise BasealignError(f"--resume: no checkpoint in {self.path} (nothing to resume from)")
            self._check_same_recipe(recipe)
            return checkpoint
        if found and not overwrite:
            shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
            raise BasealignError(
                f"output_dir {self.path} holds another run ({shown}); use --resume to continue it, "
                "--overwrite to replace it, or another output_dir"
            )
        return None

    def _check_same_recipe(self, recipe: Recipe) -> None:
        import yaml

        saved_path = self.path / "recipe.yaml"
        if not saved_path.is_file():
            raise BasealignError(f"--resume: {saved_path} is missing, so the checkpoint's recipe is unknown; "
                                 "use --overwrite to start again")
        try:
            saved = recipe_from_dict(yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {})
        except (yaml.YAMLError, BasealignError) as err:
            raise BasealignError(f"--resume: cannot read {saved_path} ({str(err).splitlines()[0]})") from None
        differ = differing_fields(saved, recipe)
        if differ:
            raise BasealignError(
                f"--resume: the checkpoints in {self.path} were trained with a different {', '.join(differ)}; "
                "resume with the same values, use --overwrite, or another output_dir"
            )

    def open(self, overwrite: bool) -> None:
        """Create the folder (main process), first removing the old run's files with OVERWRITE."""
        self._before = set(os.listdir(self.path)) if self.path.is_dir() else None
        if overwrite:
            for pattern in RUN_FILES:
                for item in self.path.glob(pattern):
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
                    self._before.discard(item.name)
        self.path.mkdir(parents=True, exist_ok=True)

    def discard_new(self) -> None:
        """Remove what this run added to the folder (the whole folder if the run created it)."""
        if self._before is None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for name in set(os.listdir(self.path)) - self._before:
            item = self.path / name
            shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
