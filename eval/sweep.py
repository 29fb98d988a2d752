"""Choose the sampling defaults by measurement: the eval's seen and held-out prompts generated at
every (solver, steps, guidance, shift) asked for, read by the analyzer, one table row per setting.

    python -m eval.sweep --model assets/model --steps 12 20 --guidance 3 5 8 --shift 1 3
    python -m eval.sweep --full --noise-draws 2 --guidance 5 7 --shift 3 5   # 52 videos a setting
    python -m eval.sweep --full --noise-draws 2 --steps 20 --guidance 7 --shift 3 --guidance-interval 0-1 0-0.8
    python -m eval.sweep --full --sets two_objects --noise-draws 4 --first-draw 3 --steps 20 --guidance 5 --shift 3
    python -m eval.sweep --full --noise-draws 2 --steps 20 --guidance 5 --shift 3 --solver euler unipc dpm

The score of a setting is the mean, over the prompts' objects, of colour, shape and motion being
right, with background and object count per video counted alongside: a setting that paints extra
blobs loses on count. "All colours" is the share of videos with every object in its colour (the
two-object bar). Travel (frame heights that normal-speed straight movers cover in the clip; the bar
is 0.4) is shown beside it, not scored: the quick sets hold too few such movers to rank by it.

`--solver` compares diffusers' multistep solvers on the same flow sigmas (UniPC is Wan's sampler)
against the Euler steps the pipeline takes; the folder and the export keep Euler.

`--sets` picks other prompt sets of the eval, and `--first-draw` lets two processes split the noise
draws of one comparison: one prompt is 6-10 points of a row, so the rows that decide between two
models need more draws than a full eval per draw affords. Write the winner into the folder with
`python -m training.train_dit --run-dir runs/dit --export assets/model --steps S --guidance G --shift X
--guidance-interval LOW HIGH`.
"""

import argparse
import itertools
import json
import time

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from eval.__main__ import FPS, LAST_NOISE_DRAW, PROMPT_SET_NAMES, build_prompt_sets, generate_frames, noise_seed, normal_speed_travel
from eval.analyzer import analyze, match
from pipeline.generate import load_pipeline
from pipeline.pipeline_t2v import check_guidance_interval


MULTISTEP_SOLVERS = {"unipc": UniPCMultistepScheduler, "dpm": DPMSolverMultistepScheduler}
SOLVERS = ["euler", *MULTISTEP_SOLVERS]


def make_scheduler(solver: str, euler_config, shift: float):
    """The folder's Euler scheduler at another shift, or a second-order multistep solver of the same flow."""
    if solver == "euler":
        return FlowMatchEulerDiscreteScheduler.from_config(euler_config, shift=shift)
    return MULTISTEP_SOLVERS[solver](use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift, solver_order=2)


def score_setting(pipe, prompts: list[tuple], steps: int, guidance: float, interval: tuple[float, float] = (0.0, 1.0)) -> dict:
    """Accuracies and seconds per video of one sampling setting over (scene, prompt, seed) triples."""
    agree: dict[str, list[bool]] = {}
    travel: list[float] = []
    started = time.perf_counter()
    for scene, prompt, seed in prompts:
        analysis = analyze(generate_frames(pipe, prompt, seed, num_inference_steps=steps, guidance_scale=guidance, guidance_interval=interval), FPS)
        verdict = match(analysis, scene)
        travel += normal_speed_travel(analysis, verdict, scene)
        for obj in verdict["objects"]:
            for attribute in ("colour", "shape", "motion"):
                agree.setdefault(attribute, []).append(obj[attribute])
        agree.setdefault("background", []).append(verdict["background"])
        agree.setdefault("count", []).append(verdict["count"])
        agree.setdefault("all_colours", []).append(all(obj["colour"] for obj in verdict["objects"]))
    scores = {name: float(np.mean(values)) for name, values in agree.items()}
    scores["score"] = float(np.mean([scores[a] for a in ("colour", "shape", "motion", "background", "count")]))
    scores["travel"] = float(np.mean(travel)) if travel else None  # no normal-speed straight mover was found
    scores["seconds_per_video"] = (time.perf_counter() - started) / len(prompts)
    return scores


def main(args: argparse.Namespace) -> list[dict]:
    pipe = load_pipeline(args.model)
    base = pipe.scheduler.config
    prompt_sets = {s.name: s for s in build_prompt_sets(quick=not args.full)}
    # The same seeds as the eval's own draws, so a sweep row and an eval report can be set side by side.
    draws = range(args.first_draw, args.first_draw + args.noise_draws)
    prompts = [
        (scene, prompt, noise_seed(index, draw))
        for draw in draws
        for name in args.sets
        for index, (scene, prompt) in enumerate(zip(prompt_sets[name].scenes, prompt_sets[name].prompts))
    ]
    rows = []
    print(f"{len(prompts)} videos a setting ({', '.join(args.sets)}; noise draws {draws[0]}-{draws[-1]})")
    print("| solver | steps | guidance | interval | shift | colour | shape | motion | background | count | all colours | score | travel | s/video |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for solver, steps, guidance, interval, shift in itertools.product(args.solver, args.steps, args.guidance, args.guidance_interval, args.shift):
        pipe.scheduler = make_scheduler(solver, base, shift)
        setting = {"solver": solver, "steps": steps, "guidance": guidance, "guidance_interval": interval, "shift": shift}
        row = {**setting, **score_setting(pipe, prompts, steps, guidance, interval)}
        rows.append(row)
        cells = [f"{100 * row[k]:.0f}%" for k in ("colour", "shape", "motion", "background", "count", "all_colours", "score")]
        travel = "-" if row["travel"] is None else f"{row['travel']:.2f}"
        print(f"| {solver} | {steps} | {guidance:g} | {interval[0]:g}-{interval[1]:g} | {shift:g} | " + " | ".join(cells) + f" | {travel} | {row['seconds_per_video']:.1f} |", flush=True)
    best = max(rows, key=lambda row: (row["score"], -row["steps"]))  # ties go to the faster setting
    low, high = best["guidance_interval"]
    print(f"\nbest: --steps {best['steps']} --guidance {best['guidance']:g} --guidance-interval {low:g} {high:g} --shift {best['shift']:g} (score {100 * best['score']:.0f}%, solver {best['solver']})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.model, "sets": args.sets, "noise_draws": list(draws), "rows": rows, "best": best}, handle, indent=2)
    return rows


def parse_interval(text: str) -> tuple[float, float]:
    """'0-0.8' -> (0.0, 0.8): the noise levels at which a sweep setting applies guidance."""
    try:
        low, high = (float(part) for part in text.split("-"))
        check_guidance_interval((low, high))  # its ValueError is reworded below for the command line
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"a guidance interval is LOW-HIGH with 0 <= LOW <= HIGH <= 1, e.g. 0-0.8; got {text!r}") from error
    return low, high


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/model")
    parser.add_argument("--steps", type=int, nargs="+", default=[12, 20])
    parser.add_argument("--guidance", type=float, nargs="+", default=[3.0, 5.0, 8.0])
    parser.add_argument("--shift", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument(
        "--guidance-interval", type=parse_interval, nargs="+", default=[(0.0, 1.0)],
        help="noise levels LOW-HIGH (sigma, 1 = pure noise) at which guidance applies, e.g. 0-1 0-0.8",
    )
    parser.add_argument(
        "--solver", nargs="+", default=["euler"], choices=SOLVERS,
        help="euler: the pipeline's steps; unipc, dpm: second-order multistep solvers on the same flow sigmas",
    )
    parser.add_argument("--full", action="store_true", help="the eval's full prompt sets (26 prompts for seen and held-out) instead of their quick halves")
    parser.add_argument(
        "--sets", nargs="+", default=["seen", "held_out"], choices=PROMPT_SET_NAMES,
        help="the eval's prompt sets to generate (default: seen held_out)",
    )
    parser.add_argument("--noise-draws", type=int, default=1, help="sample every prompt with this many noise draws (FIRST, FIRST + 1, ...)")
    parser.add_argument("--first-draw", type=int, default=0, help="the first noise draw (0 is the eval table's)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.noise_draws <= 10:
        parser.error(f"--noise-draws must be 1 to 10 (got {args.noise_draws})")
    if not 0 <= args.first_draw <= LAST_NOISE_DRAW + 1 - args.noise_draws:
        parser.error(f"--first-draw must be 0 or more, with the last draw at most {LAST_NOISE_DRAW} (got {args.first_draw} and {args.noise_draws} draws)")
    return args


if __name__ == "__main__":
    main(parse_args())
