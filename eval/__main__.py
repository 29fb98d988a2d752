"""The eval table for a model folder.

    python -m eval --model assets/model          # the full table, a few minutes on a CPU
    python -m eval --model assets/model --quick  # fewer prompts, for a smoke check
    python -m eval --model assets/model --vae-only --vae-clips 200  # the VAE alone (issue 3's bars)

Every number comes from pixels: generated videos are read by the analyzer (eval/analyzer.py) and
compared with the structured scene their prompt was written from. Prompts and seeds are fixed, so
two runs on the same machine print the same table.

Rows: per-attribute accuracy on seen combinations, held-out combinations (WORLD.md), paraphrased
prompts, two- and three-object prompts, and whether the video shows exactly as many objects as the
prompt names ("count": a noise video full of blobs scores well on attributes, since every prompt
object finds some blob to pair with, but not on count); temporal flicker on still scenes; stability
of object area; how far objects the prompt moves at normal speed travel (a path length in frame
heights over the 2 s, beside the same measure on the world's own clips of those prompts); how often
bouncers are seen to fall and rebound; the same prompts in 16:9, 9:16 and 1:1 (shape accuracy and
elongation: 1.0 is undistorted); continuation (the first second of a world clip given as context,
the second second judged, beside the analyzer's own score on the true second second); the VAE's
reconstruction PSNR (whole frame, object pixels) and the analyzer's accuracy on VAE reconstructions
of world clips; seconds per video. The --json report also lists every video: its prompt, the
objects it asked for and the objects the analyzer saw.
"""

import argparse
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from eval.analyzer import ATTRIBUTES, AnalyzedObject, analyze, match
from pipeline import presets
from pipeline.generate import load_pipeline
from pipeline.vae import CausalVideoVAE
from training import world
from training.train_vae import reconstruction_metrics, render_world_clip, to_model_space

EVAL_SEED = 424242  # scenes and noise of the eval; never used by training's streams
ASPECT, DURATION, FPS = "16:9", 2.0, 15
NOISE_DRAW_STRIDE = 1000  # apart the seed blocks of two noise draws, above every offset used below
LAST_NOISE_DRAW = 999  # the command lines' limit, for every eval tool alike


def noise_seed(offset: int, noise_draw: int = 0) -> int:
    """The seed of one eval video's starting noise. Draw 0 is the table's; another draw samples the
    same prompts and scenes with other noise, to see how much of a change between two models is
    the luck of one seed (one prompt is 6-10 points of a row)."""
    return EVAL_SEED + NOISE_DRAW_STRIDE * noise_draw + offset


@dataclass
class PromptSet:
    name: str
    scenes: list[world.Scene]
    prompts: list[str]
    results: list[dict] = field(default_factory=list)


PROMPT_SET_SIZES = {"seen": 16, "held_out": 10, "paraphrased": 8, "two_objects": 8, "three_objects": 4}
PROMPT_SET_NAMES = list(PROMPT_SET_SIZES)


def build_prompt_sets(quick: bool) -> list[PromptSet]:
    """Fixed scenes and their prompts: canonical wording, except the paraphrase set."""
    scale = 0.5 if quick else 1.0
    rng = np.random.default_rng(EVAL_SEED)
    sets = []
    for name, count in PROMPT_SET_SIZES.items():
        count = max(2, int(count * scale))
        held_out = name == "held_out"
        num_objects = {"two_objects": 2, "three_objects": 3}.get(name, 1)
        scenes = [world.sample_scene(rng, held_out=held_out, num_objects=num_objects) for _ in range(count)]
        prompts = [world.caption(s, rng) if name == "paraphrased" else world.describe(s) for s in scenes]
        sets.append(PromptSet(name, scenes, prompts))
    return sets


def generate_frames(pipe, prompt: str, seed: int, aspect: str = ASPECT, context: np.ndarray | None = None, **sampling) -> np.ndarray:
    """uint8 frames of the eval's bucket; `sampling` (num_inference_steps, guidance_scale) overrides
    the folder's defaults."""
    height, width = presets.resolution(aspect, presets.DEFAULT_QUALITY)
    frames = pipe(
        prompt,
        height=height,
        width=width,
        num_frames=presets.num_frames(DURATION, FPS),
        frame_rate=FPS,
        context=context,
        generator=torch.Generator("cpu").manual_seed(seed),
        **sampling,
    ).frames[0]
    return (frames * 255).round().astype(np.uint8)  # (T, H, W, 3)


# Still, medium objects: every world shape has equal second moments in all directions, so a video
# drawn for the wrong frame shape shows up as elongation above 1.
ASPECT_TEST_OBJECTS = (("red", "circle"), ("blue", "square"), ("white", "triangle"), ("orange", "star"))


def aspect_rows(pipe, quick: bool, noise_draw: int = 0) -> dict:
    """Shape accuracy and median elongation of one still object, per aspect ratio."""
    rows = {}
    objects = ASPECT_TEST_OBJECTS[:2] if quick else ASPECT_TEST_OBJECTS
    backgrounds = ("black", "navy", "sky", "gray")
    scenes = [world.Scene((world.ObjectSpec(colour, shape),), background=background) for (colour, shape), background in zip(objects, backgrounds)]
    for aspect in ("16:9", "9:16", "1:1"):
        shapes_right, elongations = [], []
        for index, scene in enumerate(scenes):
            analysis = analyze(generate_frames(pipe, world.describe(scene), noise_seed(100 + index, noise_draw), aspect), FPS)
            verdict = match(analysis, scene)["objects"][0]
            shapes_right.append(verdict["shape"])
            if analysis.objects:  # the biggest object stands for the prompt's one
                elongations.append(max(analysis.objects, key=lambda obj: np.nanmean(obj.areas)).elongation)
        rows[f"shape_{aspect}"] = float(np.mean(shapes_right))
        rows[f"elongation_{aspect}"] = float(np.median(elongations)) if elongations else None
    return rows


def continuation_rows(pipe, quick: bool, noise_draw: int = 0) -> dict:
    """Given the first second of a world clip (17 frames, the 1 + 4k the VAE takes) as context, how
    often the video's second second (frames 15 to 29) keeps each object's colour and shape and goes
    on with its motion; beside it, the analyzer's score on the true second second, its ceiling."""
    rng = np.random.default_rng(EVAL_SEED + 2)
    height, width = presets.resolution(ASPECT, presets.DEFAULT_QUALITY)
    num_frames = presets.num_frames(DURATION, FPS)
    generated: dict[str, list[bool]] = {}
    truth: dict[str, list[bool]] = {}
    for index in range(4 if quick else 10):
        scene = world.sample_scene(rng, num_objects=1)
        clip = world.render(scene, height, width, num_frames, FPS).frames
        frames = generate_frames(pipe, world.describe(scene), noise_seed(200 + index, noise_draw), context=clip[:17])
        for scores, video in ((generated, frames), (truth, clip)):
            second_half = replace(scene, background_to=None)  # a fade is half done by then
            verdict = match(analyze(video[FPS:], FPS), second_half)["objects"][0]
            for attribute in ("colour", "shape", "motion"):
                scores.setdefault(attribute, []).append(verdict[attribute])
    rows = {f"continuation_{k}": float(np.mean(v)) for k, v in generated.items()}
    rows.update({f"analyzer_on_true_second_second_{k}": float(np.mean(v)) for k, v in truth.items()})
    return rows


def flicker(frames: np.ndarray) -> float:
    """Mean absolute change between consecutive frames, in 0..255 levels (0 for a still scene)."""
    return float(np.abs(np.diff(frames.astype(np.float32), axis=0)).mean())


STRAIGHT_AXES = {"left": 0, "right": 0, "up": 1, "down": 1}  # trajectory column each straight motion runs along
TRAVEL_HOP_SECONDS = 1 / 3  # long enough that a blob's centroid jitter adds little to the path


def object_area_cv(analysis) -> list[float]:
    """Area stability (coefficient of variation) of the objects that should keep their size."""
    area_cv = []
    for obj in analysis.objects:
        areas = obj.areas[~np.isnan(obj.areas)]
        if len(areas) >= 3 and obj.motion not in ("growing", "shrinking"):
            area_cv.append(float(areas.std() / max(areas.mean(), 1e-6)))
    return area_cv


def path_length(trajectory: np.ndarray, axis: int, fps: float) -> float:
    """Pixels covered along one axis over the clip, summed over hops of about TRAVEL_HOP_SECONDS: a
    path length, so a bounce off the frame's edge counts as travel. Hops with an unseen end count 0."""
    hops = max(1, round((len(trajectory) - 1) / (TRAVEL_HOP_SECONDS * fps)))
    points = trajectory[np.linspace(0, len(trajectory) - 1, hops + 1).round().astype(int), axis]
    return float(np.nansum(np.abs(np.diff(points))))


def normal_speed_travel(analysis, verdict: dict, scene: world.Scene) -> list[float]:
    """How far (frame heights, over the clip) each object the prompt moves left, right, up or down
    at normal speed travels: the bar's measure. The world moves them 0.35 frame heights a second."""
    travel = []
    for obj, partner in zip(scene.objects, verdict["partners"]):
        if obj.motion in STRAIGHT_AXES and obj.speed == "normal" and partner is not None:
            trajectory = analysis.objects[partner].trajectory
            travel.append(path_length(trajectory, STRAIGHT_AXES[obj.motion], analysis.fps) / analysis.height)
    return travel


def in_words(obj: world.ObjectSpec | AnalyzedObject) -> dict:
    """An object in the words of world.py, for the report's per-video lists: what a prompt asked
    for beside what the analyzer saw, to tell which motions or shapes a model gets wrong."""
    return {name: getattr(obj, name) for name in ATTRIBUTES}


def score_set(prompt_set: PromptSet) -> dict:
    """Per-attribute accuracy over every object of every scene, and scene-level extras."""
    counts: dict[str, list[bool]] = {}
    for result in prompt_set.results:
        for verdict in result["match"]["objects"]:
            for attribute, ok in verdict.items():
                counts.setdefault(attribute, []).append(ok)
        counts.setdefault("background", []).append(result["match"]["background"])
        counts.setdefault("count", []).append(result["match"]["count"])
        colours_right = all(v["colour"] for v in result["match"]["objects"])
        counts.setdefault("all_colours", []).append(colours_right)
    return {name: float(np.mean(values)) for name, values in counts.items()}


@torch.no_grad()
def vae_rows(vae, num_clips: int) -> dict:
    """Reconstruction PSNR and the analyzer's accuracy on VAE round trips of held-out world clips."""
    metrics = reconstruction_metrics(vae, num_clips=num_clips)
    agree: dict[str, list[bool]] = {}
    aspects = list(presets.ASPECT_RATIOS)
    for index in range(num_clips):
        seed = 3 * 10**9 + index
        rng = np.random.default_rng(seed)
        scene = world.sample_scene(rng)
        height, width = presets.resolution(aspects[index % len(aspects)])
        clip = world.render(scene, height, width, 1 + 4 * 7, FPS)  # 29 frames: ~2 s at 15 fps
        video = to_model_space(clip.frames)[None].to(vae.device, vae.dtype)
        reconstruction = vae.decode(vae.encode(video).latent_dist.mode()).sample[0].float().cpu()
        frames = ((reconstruction.movedim(0, -1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        verdict = match(analyze(frames, FPS), scene)
        for truth, obj in zip(scene.objects, verdict["objects"]):
            for attribute in ("colour", "shape", "motion"):
                agree.setdefault(attribute, []).append(obj[attribute])
            # Per shape too: the shape row is lost almost entirely on stars (their points), so say which.
            agree.setdefault(f"shape_of_{truth.shape}s", []).append(obj["shape"])
    metrics.update({f"analyzer_{k}": float(np.mean(v)) for k, v in agree.items()})
    return metrics


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads) if args.threads else None
    if args.vae_only:
        return vae_only(args)
    pipe = load_pipeline(args.model)
    prompt_sets = build_prompt_sets(args.quick)

    # 1. Generate and analyze every prompt of every set.
    seconds, flickers, area_cv, bounced = [], [], [], []
    travel, true_travel = [], []  # of normal-speed straight movers: generated, and in the world's own clip
    for prompt_set in prompt_sets:
        for index, (scene, prompt) in enumerate(zip(prompt_set.scenes, prompt_set.prompts)):
            started = time.perf_counter()
            frames = generate_frames(pipe, prompt, noise_seed(index, args.noise_draw))
            seconds.append(time.perf_counter() - started)
            analysis = analyze(frames, FPS)
            verdict = match(analysis, scene)
            prompt_set.results.append({"prompt": prompt, "match": verdict, "wanted": [in_words(obj) for obj in scene.objects], "found": [in_words(obj) for obj in analysis.objects]})
            # The analyzer calls a path "bouncing" only if it falls at about gravity and rebounds.
            bounced += [v["motion"] for obj, v in zip(scene.objects, verdict["objects"]) if obj.motion == "bouncing"]
            if all(obj.motion == "still" for obj in scene.objects) and scene.background_to is None:
                flickers.append(flicker(frames))
            area_cv += object_area_cv(analysis)
            moved = normal_speed_travel(analysis, verdict, scene)
            if moved:
                travel += moved
                true_analysis = analyze(world.render(scene, *frames.shape[1:3], len(frames), FPS).frames, FPS)
                true_travel += normal_speed_travel(true_analysis, match(true_analysis, scene), scene)

    # 2. Aspect ratios and continuation.
    aspects = aspect_rows(pipe, args.quick, args.noise_draw)
    continuation = continuation_rows(pipe, args.quick, args.noise_draw)

    # 3. The VAE on world clips.
    vae = vae_rows(pipe.vae, num_clips=args.vae_clips or (6 if args.quick else 24))

    # 4. The table.
    table = {prompt_set.name: score_set(prompt_set) for prompt_set in prompt_sets}
    extras = {
        "flicker_still_scenes": float(np.mean(flickers)) if flickers else None,
        "object_area_cv": float(np.mean(area_cv)) if area_cv else None,
        "travel_normal_speed_2s": float(np.mean(travel)) if travel else None,
        "travel_normal_speed_2s_true_clips": float(np.mean(true_travel)) if true_travel else None,
        "bouncers_fall_and_rebound": float(np.mean(bounced)) if bounced else None,
        **aspects,
        **continuation,
        "seconds_per_video": float(np.mean(seconds)),
        **vae,
    }
    print(format_table(args.model, table, extras, args.noise_draw))
    videos = {prompt_set.name: prompt_set.results for prompt_set in prompt_sets}
    return write_report({"model": args.model, "noise_draw": args.noise_draw, "sets": table, **extras, "videos": videos}, args.json)


def write_report(report: dict, path: str | None) -> dict:
    if path:
        with open(path, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


def vae_only(args: argparse.Namespace) -> dict:
    """The VAE rows alone, for a VAE that no transformer has been trained on yet (a new latent space)."""
    vae = CausalVideoVAE.from_pretrained(Path(args.model) / "vae", torch_dtype=torch.float32).eval()
    num_clips = args.vae_clips or 24
    rows = vae_rows(vae, num_clips=num_clips)
    print(f"\n## VAE of {args.model} ({vae.spatial_compression_ratio}x space, {vae.temporal_compression_ratio}x time), {num_clips} held-out world clips\n")
    print(format_measures(rows))
    return write_report({"model": args.model, **rows}, args.json)


def format_table(model: str, table: dict, extras: dict, noise_draw: int = 0) -> str:
    """The report as markdown: one table of accuracies per prompt set, one of the other measures."""
    columns = ["colour", "shape", "size", "motion", "background", "all_colours", "count"]
    seeds = "fixed seeds" if noise_draw == 0 else f"fixed seeds, noise draw {noise_draw}"
    lines = [f"\n## Eval of {model} ({ASPECT}, {DURATION:g} s at {FPS} fps, {presets.DEFAULT_QUALITY} preset, {seeds})\n"]
    lines.append("| prompts | " + " | ".join(columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    for name, scores in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * scores[c]:.0f}%" if c in scores else "-" for c in columns) + " |")
    lines.append("\n" + format_measures(extras))
    return "\n".join(lines)


def format_measures(measures: dict) -> str:
    """Single-number measures as a markdown table: accuracies in percent, the rest to 3 digits."""
    lines = ["| measure | value |", "|---|---|"]
    for name, value in measures.items():
        as_percent = name.startswith(("analyzer_", "shape_", "continuation_", "bouncers_"))
        shown = "-" if value is None else (f"{100 * value:.0f}%" if as_percent else f"{value:.3g}")
        lines.append(f"| {name} | {shown} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/model")
    parser.add_argument("--quick", action="store_true", help="half the prompts and fewer VAE clips")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a busy machine)")
    parser.add_argument("--vae-only", action="store_true", help="only the VAE rows: for a VAE no transformer has been trained on")
    parser.add_argument("--vae-clips", type=int, default=None, help="world clips of the VAE rows (default 24, 6 with --quick)")
    parser.add_argument(
        "--noise-draw", type=int, default=0,
        help=f"0 (the default) is the table's starting noise; 1 to {LAST_NOISE_DRAW} draw other noise for the same prompts and scenes",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.noise_draw <= LAST_NOISE_DRAW:
        parser.error(f"--noise-draw must be an integer from 0 to {LAST_NOISE_DRAW}, got {args.noise_draw}")
    return args


if __name__ == "__main__":
    main(parse_args())
