"""Reading a recipe's options: flags, or one YAML / JSON file, through `HfArgumentParser`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the recipe's description (its command examples) as written, and shows every option's default."""


def parse_recipe_args(
    first_types: tuple[type, ...],
    last_type: type | Callable[[tuple[Any, ...]], type],
    argv: Sequence[str] | None = None,
    description: str | None = None,
) -> tuple[Any, ...]:
    """Parse `argv` (default: the command line) into instances of the dataclasses `first_types` and `last_type`
    (usually the training arguments), in that order. `last_type` may be a function choosing the class from the
    parsed `first_types` instances (e.g. by task).

    `argv` is either flags (``--dataset glyphs --output_dir out ...``; ``--help`` lists every option) or a single
    ``.yaml`` / ``.json`` file holding the same keys.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    every_option = "--help-all" in argv
    argv = ["--help" if arg == "--help-all" else arg for arg in argv]
    choose = last_type if not isinstance(last_type, type) else (lambda _: last_type)
    config_file = None
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):
        config_file = argv[0]
        argv = config_flags(argv[0])
    # The last class may depend on the first ones: read those first, ignoring the rest (help and errors come from the
    # full parser below, so that --help lists every option).
    known = [arg for arg in argv if arg not in ("-h", "--help")]
    *firsts, _ = HfArgumentParser(first_types).parse_args_into_dataclasses(args=known, return_remaining_strings=True)
    parser = HfArgumentParser((*first_types, choose(tuple(firsts))), description=description)
    parser.formatter_class = _HelpFormatter
    _shorten_help(parser, every_option)
    if config_file is not None:
        _check_config_shapes(parser, config_file)
    return tuple(parser.parse_args_into_dataclasses(args=argv))


#: The Trainer's own options that `--help` shows beside the recipe's (`--help-all` shows every one).
COMMON_TRAINER_OPTIONS = (
    "output_dir", "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "learning_rate", "weight_decay", "seed", "bf16", "fp16", "use_cpu",
    "eval_strategy", "eval_steps", "save_strategy", "save_steps", "save_total_limit", "logging_steps",
    "resume_from_checkpoint", "report_to", "push_to_hub", "hub_model_id", "dataloader_num_workers",
)
#: Trainer options the recipes build themselves and refuse (`ScheduleOptions`): never listed.
REFUSED_TRAINER_OPTIONS = ("optim", "lr_scheduler_type", "warmup_steps")


def _shorten_help(parser: argparse.ArgumentParser, every_option: bool) -> None:
    """`--help` lists the recipe's own options and the Trainer's common ones (`COMMON_TRAINER_OPTIONS`); the other
    Trainer options still work and `--help-all` lists them. Options the recipe refuses are never listed."""
    trainer_options = set(TrainingArguments.__dataclass_fields__) - set(COMMON_TRAINER_OPTIONS)
    for action in parser._actions:
        if action.dest in REFUSED_TRAINER_OPTIONS or (not every_option and action.dest in trainer_options):
            action.help = argparse.SUPPRESS
    if not every_option:
        parser.epilog = "The Trainer's other options (TrainingArguments) work too: --help-all lists every option."


def _config(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    config = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values, got {type(config).__name__}.")
    return config


def config_flags(path: str) -> list[str]:
    """A YAML / JSON config file's options as command-line flags, so that each value is checked and converted by
    the option's own type, as on a command line (a value of the wrong type is an error naming the option); unset
    (null) values are left out."""
    flags = []
    for key, value in _config(path).items():
        if value is None:
            continue
        if isinstance(value, dict):
            raise ValueError(f"{path}: option {key!r} is given a mapping ({value}); options take a value or a list.")
        values = value if isinstance(value, list) else [value]
        flags += [f"--{key}", *(str(item).lower() if isinstance(item, bool) else str(item) for item in values)]
    return flags


def _check_config_shapes(parser: argparse.ArgumentParser, path: str) -> None:
    """A list given to an option that takes one value (argparse would only say "unrecognized arguments")."""
    actions = {option: action for action in parser._actions for option in action.option_strings}
    for key, value in _config(path).items():
        action = actions.get(f"--{key}")
        if action is not None and isinstance(value, list) and action.nargs in (None, "?"):
            raise ValueError(f"{path}: option {key!r} takes one value, the file gives a list: {value}.")
