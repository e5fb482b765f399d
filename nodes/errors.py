"""Node-facing errors: prefix the node's display name."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from .comfy import folders
from .comfy.training import PASS_THROUGH

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.\-]{0,120}")
SUFFIX = ".safetensors"


@contextmanager
def node_errors(node: str) -> Iterator[None]:
    """Re-raise any error from inside a node with the node's display name and folder-relative paths.

    ValueError, TypeError and FileNotFoundError (bad input) become a ValueError; anything
    else a RuntimeError naming its type, chained to the original. A Cancel and an
    out-of-memory error pass through untouched, so ComfyUI handles them as its own.
    """
    try:
        yield
    except PASS_THROUGH:
        raise
    except (ValueError, TypeError, FileNotFoundError) as err:
        message = folders.shown_paths(str(err) if str(err).startswith(node) else f"{node}: {err}")
        if isinstance(err, ValueError) and message == str(err):
            raise
        raise ValueError(message) from err
    except Exception as err:
        raise RuntimeError(folders.shown_paths(f"{node}: {type(err).__name__}: {err}")) from err


def prompt_lines(text: str) -> list[str]:
    """The non-empty lines of a multiline prompt widget, stripped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_negatives(positive: list, negative: list, node: str) -> None:
    """One negative prompt, or one per positive prompt."""
    if len(negative) not in (1, len(positive)):
        raise ValueError(
            f"{node}: got {len(positive)} positive and {len(negative)} negative prompts; "
            "give one negative or one per positive."
        )


def table_file_name(name: str, node: str, field: str = "name") -> str:
    """A plain file name for a models folder: no folders, .safetensors appended; ``field`` names the input."""
    stem = name.strip()
    stem = stem[: -len(SUFFIX)] if stem.lower().endswith(SUFFIX) else stem
    if not _SAFE_NAME.fullmatch(stem) or stem.endswith("."):
        raise ValueError(
            f"{node}: {field} {name!r} is not a plain file name; use letters, digits, spaces, '_', '-' or '.' "
            "(no folders, at most 121 characters), e.g. sd15_epd_8steps."
        )
    return stem + SUFFIX
