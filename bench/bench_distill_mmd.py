"""EPD distillation with the pointwise L2 loss vs the patch-MMD loss on the Fashion-MNIST denoiser (issue 16 C).

The same start table (K = 2, direction form, R rounds), teacher (DPM-Solver-2, 7 inserted steps),
noise seed, batch and iterations as bench/fmnist/rows.distil; only DistillConfig.loss differs
("l2" or "mmd", 4x4 patches). Each learned table, and the start table, then samples the same
--samples noises (class j % 10, cfg 1) and is compared with Heun-50 on those noises: the mean L2
error per image (784 pixels), the squared patch MMD (4x4 patches, RBF, median bandwidth) and
the classifier-feature Frechet distance to Heun-50's samples (fd_converged, as in bench_distill).
Usage: python -m bench.bench_distill_mmd [--rounds 3] [--iterations 40] [--samples 200]
(from the repo root, 1 torch thread; writes bench/results/distill_mmd.json).

``--model digits`` runs the same comparison on the exact digits mixture (epd_core.digits, 64-D, cheap on a
loaded CPU): 3-step default grid, batch 32, 40 iterations, 1024 fresh noises; L2 and MMD to the
DPM-Solver-2 (31 inserted steps) solution of the same noises and MMD to exact mixture draws
(bench/results/distill_mmd_digits.json).

``--model family`` runs it through EPD Distill's own run (nodes/train/distill.py, the node's defaults plus
``--recipe`` and ``loss``) on a per-family UNet inside ComfyUI's real stack (bench_families.FamilySetting,
COMFYUI_PATH needed): trained and scored at cfg 1 on the stored family rows' noise (seed 0, --batch 20,
--ref-steps 150: the same reference as bench/results/families/<family>.json), then scored on --samples
held-out noises (seed 1) against their own converged reference (--held-ref-steps): pixel RMS, squared patch
MMD and classifier FD. The start table and the stored best built-in at R run alongside
(bench/results/distill_mmd_<family>.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from bench.fmnist.classifier import DEFAULT_WEIGHTS as CLASSIFIER_WEIGHTS
from bench.fmnist.classifier import load_classifier
from bench.fmnist.metrics import classifier_fd
from bench.fmnist.rows import SHAPE, SIGMA_MAX, TEACHER, LabelledModel, noise, start_table
from bench.fmnist.sample import karras_sigmas
from bench.fmnist.unet import DEFAULT_WEIGHTS, load_denoiser
from epd_core.baselines import run_heun
from epd_core.distill import DistillConfig, distill
from epd_core.mmd import patch_mmd2
from epd_core.solver import StepConfig, run_epd

log = logging.getLogger(__name__)
CHUNK = 50  # a multiple of 10 keeps the j % 10 labels aligned


def learn(model: LabelledModel, rounds: int, iterations: int, loss: str):
    """The best table of a distillation run with this loss, and its wall time."""
    start = start_table(rounds).replace(scale_dir=0.05, scale_time=0.05)
    config = DistillConfig(iterations=iterations, batch=10, **TEACHER, targets="global", eval_every=10,
                           val_batch=20, seed=0, loss=loss)  # fmt: skip
    began = time.perf_counter()
    *_, last = distill(model, start, noise, config, step_config=StepConfig(form="direction", afs=True))
    return last.best_table, time.perf_counter() - began


@torch.no_grad()
def in_chunks(fn, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([fn(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)])


def digits() -> None:
    """The L2 vs MMD comparison on the exact digits mixture."""
    from epd_core.digits import SIGMA_MIN, ExactModel, digits_mixture
    from epd_core.distill.teacher import teacher_trajectory
    from epd_core.grids import epd_sigmas
    from epd_core.mmd import mmd2
    from epd_core.tables import default_table

    mix = digits_mixture()
    model = ExactModel(mix)

    def draw(batch: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(batch, 64, generator=gen, dtype=torch.float64) * SIGMA_MAX

    start = default_table(epd_sigmas(3, SIGMA_MIN, SIGMA_MAX), 2, form="direction", afs=True)
    start = start.replace(scale_dir=0.05, scale_time=0.05)
    x, exact = draw(1024, torch.Generator().manual_seed(123)), mix.sample(1024, torch.Generator().manual_seed(5))
    ref = teacher_trajectory(model, x, start.sigmas, teacher="dpm_2", inserted=31)[-1]
    tables, step = {"start (training-free)": (start, 0.0)}, StepConfig(form="direction", afs=True)
    for loss in ("l2", "mmd"):
        config = DistillConfig(iterations=40, batch=32, val_batch=128, teacher="dpm_2", inserted=7, eval_every=5,
                               loss=loss)  # fmt: skip
        began = time.perf_counter()
        *_, last = distill(model, start, draw, config, step_config=step)
        tables[f"distilled, loss={loss}"] = (last.best_table, time.perf_counter() - began)
    rows = []
    for name, (table, seconds) in tables.items():
        out = run_epd(model, x, table.sigmas, params=table, form="direction", afs=True)
        rows.append({"table": name, "train_s": round(seconds, 1),
                     "l2_to_teacher": round(float((out - ref).norm(dim=1).mean()), 4),
                     "mmd2_to_teacher": round(float(mmd2(out, ref)), 5),
                     "mmd2_to_exact": round(float(mmd2(out, exact)), 5)})  # fmt: skip
    setup = {"model": "digits mixture (exact)", "steps": 3, "batch": 32, "iterations": 40, "samples": 1024,
             "teacher": "dpm_2, 7 inserted (training) / 31 (reference)", "torch": torch.__version__}  # fmt: skip
    path = Path(__file__).parent / "results" / "distill_mmd_digits.json"
    path.write_text(json.dumps({"setup": setup, "rows": rows}, indent=1) + "\n")
    for r in rows:
        print(r)  # noqa: T201


def family_rows(setting, tables: dict, builtin: tuple[str, str], rounds: int) -> dict[str, torch.Tensor]:
    """Each table's samples on ``setting``'s noise (checked to take ``rounds`` rounds), and the built-in's."""
    out = {}
    for name, (table, _) in tables.items():
        x, counter = setting.learned(table)
        assert counter.rounds == rounds, (name, counter.rounds)
        out[name] = x
    x, counter = setting.builtin(*builtin, rounds)
    assert counter.rounds == rounds, (builtin, counter.rounds)
    out[f"best built-in ({' / '.join(builtin)})"] = x
    return out


def family(args: argparse.Namespace) -> None:
    """The L2 vs MMD comparison through EPD Distill's own run on a family UNet inside ComfyUI."""
    from bench.fmnist.bench_families import FamilySetting, comfy_or_exit, load_pack, node_defaults, rms
    from bench.fmnist.bench_families_scalewise import stored_reference

    comfy = comfy_or_exit(1)
    load_pack()  # the pack as ComfyUI imports it (package comfyui_epd)
    from comfyui_epd.nodes.train.distill import student_start

    stored = json.loads((Path(__file__).parent / "results" / "families" / f"{args.family}.json").read_text())
    stored_rows = stored["cfgs"]["1.0"]["rows"]
    ok = {k: v[str(args.rounds)]["error"] for k, v in stored_rows.items()
          if not k.startswith("EPD") and v.get(str(args.rounds), {}).get("rounds") == args.rounds}  # fmt: skip
    builtin = tuple(min(ok, key=ok.get).split(" / "))
    train = FamilySetting(args.family, 1.0, args.batch, 0, comfy)
    held = FamilySetting(args.family, 1.0, args.samples, 1, comfy)
    refs = {"train": stored_reference(train, args.ref_steps), "held": stored_reference(held, args.held_ref_steps)}
    log.info("references done")
    opts = node_defaults() | {"cfg": 1.0, "width": 28, "height": 28, "steps": (args.rounds + 1) // 2, "table": None}
    tables = {"start (training-free)": (student_start(train.patcher, opts | args.recipe), 0.0)}
    for loss in ("l2", "mmd"):
        tables[f"distilled, loss={loss}"] = train.distill(args.rounds, args.recipe | {"loss": loss})
        log.info("loss=%s distilled in %.0f s", loss, tables[f"distilled, loss={loss}"][1])
    on_train = family_rows(train, tables, builtin, args.rounds)
    on_held = family_rows(held, tables, builtin, args.rounds)
    classifier = load_classifier(CLASSIFIER_WEIGHTS)
    image = lambda x: x.reshape(-1, *SHAPE).clamp(-1, 1)  # noqa: E731
    ref_img, rows = image(refs["held"]), []
    for name, x in on_held.items():
        seconds = tables.get(name, (None, None))[1]
        rows.append({
            "row": name, "train_s": None if seconds is None else round(seconds, 1),
            "rms_stored_noise": round(rms(on_train[name], refs["train"]), 5),
            "rms_held_out": round(rms(x, refs["held"]), 5),
            "patch_mmd2_held_out": round(float(patch_mmd2(image(x), ref_img)), 6),
            "classifier_fd_held_out": round(classifier_fd(classifier, image(x), ref_img), 4),
        })  # fmt: skip
    setup = {k: v for k, v in vars(args).items() if k not in ("iterations", "model")} | {
        "cfg": 1.0, "reference": "EPD K = 1 data form, no plugin, on log-spaced sigmas (bench_families)",
        "seeds": {"stored noise": 0, "held out": 1}, "mmd_patch": 4, "torch": torch.__version__,
        "node_defaults": {k: v for k, v in node_defaults().items() if isinstance(v, (int, float, str, bool))},
        "stored_best_builtin_rms": ok[" / ".join(builtin)],
    }  # fmt: skip
    path = Path(__file__).parent / "results" / f"distill_mmd_{args.family}.json"
    path.write_text(json.dumps({"setup": setup, "rows": rows}, indent=1) + "\n")
    for r in rows:
        print(r)  # noqa: T201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--model", choices=("fmnist", "digits", "family"), default="fmnist")
    parser.add_argument("--family", choices=("edm", "eps", "flow"), default="edm", help="--model family only")
    parser.add_argument("--batch", type=int, default=20, help="--model family: the stored rows' batch (seed 0)")
    parser.add_argument("--ref-steps", type=int, default=150, help="--model family: converged reference steps")
    parser.add_argument("--held-ref-steps", type=int, default=50, help="--model family: held-out reference steps")
    parser.add_argument("--recipe", type=json.loads, default={"iterations": 20, "teacher_substeps": 4},
                        help="--model family: JSON changes to EPD Distill's defaults (loss is set per row)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.model == "digits":
        digits()
        return
    if args.model == "family":
        family(args)
        return
    model = LabelledModel(load_denoiser(DEFAULT_WEIGHTS))
    classifier = load_classifier(CLASSIFIER_WEIGHTS)
    x = torch.randn((args.samples, *SHAPE), generator=torch.Generator().manual_seed(123)) * SIGMA_MAX
    ref = in_chunks(lambda c: run_heun(model, c, karras_sigmas(50)), x).clamp(-1, 1)
    tables = {"start (training-free)": (start_table(args.rounds).replace(scale_dir=0.05, scale_time=0.05), 0.0)}
    for loss in ("l2", "mmd"):
        tables[f"distilled, loss={loss}"] = learn(model, args.rounds, args.iterations, loss)
    rows = []
    for name, (table, seconds) in tables.items():
        run = lambda c, t=table: run_epd(model, c, t.sigmas, params=t, form="direction", afs=True)  # noqa: E731
        out = in_chunks(run, x).clamp(-1, 1)
        rows.append({
            "table": name, "train_s": round(seconds, 1),
            "l2_to_heun50": round(float((out - ref).flatten(1).norm(dim=1).mean()), 4),
            "patch_mmd2_to_heun50": round(float(patch_mmd2(out.double(), ref.double())), 5),
            "fd_converged": round(classifier_fd(classifier, out, ref), 3),
        })  # fmt: skip
    setup = {**vars(args), "teacher": TEACHER, "batch": 10, "targets": "global", "mmd_patch": 4,
             "reference": "Heun 50 steps, Karras grid", "torch": torch.__version__}  # fmt: skip
    out_path = Path(__file__).parent / "results" / "distill_mmd.json"
    out_path.write_text(json.dumps({"setup": setup, "rows": rows}, indent=1) + "\n")
    for r in rows:
        print(r)  # noqa: T201


if __name__ == "__main__":
    main()
