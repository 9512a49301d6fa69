"""The `basealign` command: train, prepare, score, eval, doctor, push, fields.

Every user-facing failure is a BasealignError and ends as one line on stderr with exit
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from basealign import __version__

from basealign.errors import BasealignError


def _train(args: argparse.Namespace) -> None:
    from basealign.training.run import train_from_recipe

    train_from_recipe(args.recipe, args.overrides, resume=args.resume, overwrite=args.overwrite, check=args.check)


def _prepare(args: argparse.Namespace) -> None:
    from basealign.data_prep.prepare import prepare

    from basealign.data_prep.card import source_table

    out = prepare(args.recipe, args.overrides)
    print(source_table(json.loads((out / "stats.json").read_text(encoding="utf-8"))))
    print(f"pairs written to {out}")


def _score(args: argparse.Namespace) -> None:
    from basealign.score import score

    score(args.model, pairs=args.pairs, out=args.out, packing=args.packing, overrides=args.overrides)


def _eval(args: argparse.Namespace) -> None:
    from basealign.eval.run import evaluate

    options = {
        "pairs": args.pairs, "split": args.split, "prompts": args.prompts, "limit": args.limit,
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
        "batch_size": args.batch_size, "judges": args.judge, "task_paths": args.task_path, "task_limit": args.task_limit,
        "tasks": [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks is not None else None,
    }
    evaluate(args.run, **{k: v for k, v in options.items() if v is not None})


def _doctor(args: argparse.Namespace) -> None:
    from basealign.doctor import doctor

    print(doctor(args.model))


def _push(args: argparse.Namespace) -> None:
    from basealign.hub.publish import push

    print(push(args.run_dir, repo_id=args.repo_id, private=args.private, merged=args.merged, dry_run=args.dry_run))


def _fields(args: argparse.Namespace) -> None:
    import shutil

    from basealign.config import fields_text

    print(fields_text(args.section, shutil.get_terminal_size().columns))


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each command's own parser."""
    parser = argparse.ArgumentParser(prog="basealign", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"basealign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train from a recipe YAML")
    p.add_argument("recipe", help="training recipe (YAML)")
    p.add_argument("overrides", nargs="*", help="section.field=value overrides")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in output_dir (its recipe must match; see README)")
    p.add_argument("--overwrite", action="store_true", help="remove another run's files from output_dir first")
    p.add_argument("--check", action="store_true",
                   help="validate the recipe and the data and print the plan; train nothing, write nothing")
    p.set_defaults(func=_train)

    p = sub.add_parser("prepare", help="build a preference-pair folder from a data recipe")
    p.add_argument("recipe", help="data recipe (YAML)")
    p.add_argument("overrides", nargs="*", help="field=value overrides")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("score", help="write per-pair chosen/rejected log-prob sums")
    p.add_argument("model", help="a run directory, a model folder or a hub id")
    p.add_argument("--pairs", required=True, help="prepared pairs folder (or a data recipe)")
    p.add_argument("--out", required=True, help="output JSON-lines file")
    p.add_argument("--packing", type=_bool, default=True, help="true (fast path, default) or false (padded)")
    p.add_argument("overrides", nargs="*", help="recipe overrides, e.g. data.max_length=1024")
    p.set_defaults(func=_score)

    p = sub.add_parser("eval", help="aligned vs base: preference metrics, answers, judges, lm-eval (RUN/eval/)")
    p.add_argument("run", help="a run directory (recipe.yaml + adapter or model)")
    p.add_argument("--pairs", help="held-out pairs folder or data recipe (default: the run's own pairs)")
    p.add_argument("--split", help="split of the pairs to evaluate (default test)")
    p.add_argument("--prompts", help="JSON-lines file with a 'prompt' per line (default: the held-out prompts)")
    p.add_argument("--limit", type=int, help="only the first N pairs and N prompts")
    p.add_argument("--max-new-tokens", type=int, help="longest answer, in tokens (default 128)")
    p.add_argument("--temperature", type=float, help="0 (default) is greedy")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass (with --temperature)")
    p.add_argument("--seed", type=int, help="seed of sampling and bootstrap (default 0)")
    p.add_argument("--batch-size", type=int, help="prompts per generate call (default 8)")
    p.add_argument("--judge", action="append", metavar="NAME=PATH[:lower]",
                   help="a sequence-classification judge; repeat for several (helpful=..., harmless=...)")
    p.add_argument("--tasks", nargs="?", const="paper", metavar="A,B,C",
                   help="lm-eval tasks; --tasks alone runs the paper's suite")
    p.add_argument("--task-path", action="append", metavar="DIR", help="folder of extra lm-eval task YAMLs")
    p.add_argument("--task-limit", type=int, help="lm-eval: only the first N documents per task")
    p.set_defaults(func=_eval)

    p = sub.add_parser("doctor", help="print versions and the backend that would run")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="also say whether the packed path is exact for this model (reads its config only)")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("push", help="publish a run to the Hugging Face Hub")
    p.add_argument("run_dir")
    p.add_argument("--repo-id", required=True, help="OWNER/NAME")
    p.add_argument("--private", action="store_true")
    p.add_argument("--merged", action="store_true", help="upload the merged full model instead of the adapter")
    p.add_argument("--dry-run", metavar="DIR", default=None, help="write the upload folder to DIR; no network")
    p.set_defaults(func=_push)

    p = sub.add_parser("fields", help="list every recipe field: type, default and what it does")
    p.add_argument("section", nargs="?", help="only this section (model, lora, data, loss, training, eval, hub)")
    p.set_defaults(func=_fields)
    return parser, sub.choices


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options may come anywhere among a command's positional arguments (`score RUN x=1 --out F y=2`):
    argparse's intermixed parsing does that, but only on a parser without subcommands."""
    parser, commands = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in commands:
        args = commands[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)  # --version, --help, or a usage error naming the commands


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        args.func(args)
    except BasealignError as err:
        print(f"basealign {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"basealign {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
