"""The ``epd`` model folder: models/epd, .safetensors only.

folder_paths is ComfyUI's public registry for pack folders; registration respects an
``epd`` entry that extra_model_paths.yaml may already have created.
"""

from __future__ import annotations

import hashlib
import os

import folder_paths

FOLDER = "epd"
POLICY_FOLDER = "epd_rl"  # RL Tune's policy saves; not a model list, so not registered
EXTENSIONS = frozenset({".safetensors"})


def default_dir() -> str:
    """models/epd of this ComfyUI install (where EPD Save Table writes)."""
    return os.path.join(folder_paths.models_dir, FOLDER)


def policy_dir() -> str:
    """models/epd_rl of this ComfyUI install (EPD RL Tune's policy_file)."""
    return os.path.join(folder_paths.models_dir, POLICY_FOLDER)


def register(key: str, path: str, extensions: frozenset[str] | set[str]) -> None:
    """Make ``path`` the default folder of ``key`` with this extension filter; idempotent, keeps yaml-added paths."""
    if key not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[key] = ([path], set(extensions))
        return
    paths, exts = folder_paths.folder_names_and_paths[key]
    if path not in paths:
        paths.insert(0, path)
    if set(exts) != set(extensions):
        folder_paths.folder_names_and_paths[key] = (paths, set(extensions))
        folder_paths.filename_list_cache.pop(key, None)


def register_folder() -> None:
    """Add models/epd as the default ``epd`` path with the .safetensors filter; idempotent."""
    register(FOLDER, default_dir(), EXTENSIONS)


def table_names() -> list[str]:
    """Table files visible in every ``epd`` path, relative names (combo options)."""
    register_folder()
    return folder_paths.get_filename_list(FOLDER)


def table_path(name: str) -> str | None:
    """Full path of a table file that EPD Load Table's list offers, or None (no other name is accepted)."""
    if name not in table_names():
        return None
    return folder_paths.get_full_path(FOLDER, name)


def shown_paths(message: str) -> str:
    """A message with ComfyUI's models, input and output folders shown as models/, input/ and output/.

    Error messages reach every client of the server: they name files relative to the
    folders a user knows, never by absolute server path.
    """
    roots = {"models": folder_paths.models_dir, "input": folder_paths.get_input_directory(),
             "output": folder_paths.get_output_directory()}  # fmt: skip
    for shown, root in sorted(roots.items(), key=lambda item: -len(item[1])):
        message = message.replace(os.path.join(os.path.realpath(root), ""), shown + "/")
        message = message.replace(os.path.join(root, ""), shown + "/")
    return message


def file_digest(path: str) -> str:
    """sha256 of a file's bytes (cache key for the loader)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_path(path: str) -> str:
    """A user-given path inside ComfyUI's input folder; anything that leaves it is refused.

    A node's path widget can be set by anyone who can queue a prompt, so it must not
    reach files outside the folder ComfyUI already exposes for uploads.
    """
    root = os.path.realpath(folder_paths.get_input_directory())
    full = os.path.realpath(os.path.join(root, path.strip()))
    if os.path.commonpath([root, full]) != root:
        raise ValueError(
            f"the path {path.strip()!r} leaves ComfyUI's input folder; put the .pkl in the input folder "
            "(e.g. input/epd/) and give its path relative to it"
        )
    return full
