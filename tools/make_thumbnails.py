"""Write workflows/<name>.jpg, the template-browser thumbnail of each workflows/<name>.json.

ComfyUI serves a same-name image next to a custom node pack's workflow as its thumbnail
(app/custom_node_manager.py). This starts a real ComfyUI with the pack (as the browser test does),
loads each workflow in headless Debian Chromium (``apt-get install chromium``; ``pip install playwright``,
no browser download), fits the view, screenshots the graph and saves it as a small JPEG:

    COMFYUI_PATH=/path/to/ComfyUI python tools/make_thumbnails.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from comfy_browser import PICTURE_SETTINGS, chromium_available, open_app
from comfy_server import running_server

ROOT = Path(__file__).resolve().parents[1]

WIDTH = 512
ASPECT = 4 / 3  # the picture is padded with the canvas colour to this width:height
QUALITY = 80
VIEWPORT = {"width": 1400, "height": 1050}


def to_thumbnail(png: Path, jpg: Path) -> None:
    """Pad to ASPECT with the canvas colour, scale to WIDTH and save as JPEG."""
    image = Image.open(png).convert("RGB")
    w, h = image.size
    width, height = max(w, round(h * ASPECT)), max(h, round(w / ASPECT))
    padded = Image.new("RGB", (width, height), image.getpixel((0, 0)))
    padded.paste(image, ((width - w) // 2, (height - h) // 2))
    padded.resize((WIDTH, round(WIDTH / ASPECT)), Image.Resampling.LANCZOS).save(
        jpg, "JPEG", quality=QUALITY, optimize=True
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflows", nargs="*", type=Path, help="default: every workflows/*.json")
    args = parser.parse_args()
    comfyui = os.environ.get("COMFYUI_PATH")
    if not comfyui or not chromium_available():
        parser.error("needs COMFYUI_PATH (a ComfyUI checkout) and /usr/bin/chromium")
    workflows = [w.resolve() for w in args.workflows] or sorted((ROOT / "workflows").glob("*.json"))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        with (
            running_server(Path(comfyui), base, {"ComfyUI-EPD": ROOT}, "/object_info/EPD_Sampler", {}) as server,
            open_app(server.url, base / "profile", PICTURE_SETTINGS) as app,
        ):
            app.page.set_viewport_size(VIEWPORT)
            app.focus_mode()
            for workflow in workflows:
                result = app.load(workflow)
                if result["missing"] or app.dialogs():
                    sys.stderr.write(f"{workflow.name}: missing node types {result['missing']}, skipped\n")
                    app.close_dialogs()
                    continue
                app.fit_view()
                png, jpg = base / f"{workflow.stem}.png", workflow.with_suffix(".jpg")
                app.screenshot_graph(png)
                to_thumbnail(png, jpg)
                sys.stdout.write(f"{jpg.relative_to(ROOT)}: {jpg.stat().st_size // 1024} KB\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
