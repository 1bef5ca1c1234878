"""Reading a recipe's options: flags, or one YAML / JSON file, through `HfArgumentParser`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


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
    choose = last_type if not isinstance(last_type, type) else (lambda _: last_type)
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):
        text = Path(argv[0]).read_text()
        config = json.loads(text) if argv[0].endswith(".json") else yaml.safe_load(text)
        first_keys = {f.name for first_type in first_types for f in fields(first_type)}
        firsts = HfArgumentParser(first_types).parse_dict({k: v for k, v in config.items() if k in first_keys})
        last = HfArgumentParser(choose(firsts)).parse_dict({k: v for k, v in config.items() if k not in first_keys})
        return (*firsts, *last)
    # The last class may depend on the first ones: read those first, ignoring the rest (help and errors come from the
    # full parser below, so that --help lists every option).
    known = [arg for arg in argv if arg not in ("-h", "--help")]
    *firsts, _ = HfArgumentParser(first_types).parse_args_into_dataclasses(args=known, return_remaining_strings=True)
    parser = HfArgumentParser((*first_types, choose(tuple(firsts))), description=description)
    parser.formatter_class = _HelpFormatter
    return tuple(parser.parse_args_into_dataclasses(args=argv))
