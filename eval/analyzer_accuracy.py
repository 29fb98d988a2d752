"""How often the analyzer names what the renderer drew, through an H.264 round trip.

Renders N clips of the fast preset (2 s at 15 fps, every aspect bucket in turn), writes each as
H.264 yuv420p, reads it back through the analyzer and prints per-attribute accuracy:

    python -m eval.analyzer_accuracy --num-clips 200
"""

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from eval import analyzer
from pipeline import presets
from training import world


def write_h264(frames: np.ndarray, path: Path, fps: float) -> None:
    """Write (T, H, W, 3) uint8 frames as an H.264 yuv420p MP4, the way the studio exports."""
    import imageio.v2 as imageio

    writer = imageio.get_writer(str(path), fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1, quality=8)
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()


def main(args: argparse.Namespace) -> None:
    hits, totals = defaultdict(int), defaultdict(int)
    mistakes = []
    aspects = list(presets.ASPECT_RATIOS)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for i in range(args.num_clips):
            # 1. Render a clip and round-trip it through H.264
            aspect = aspects[i % len(aspects)]
            height, width = presets.resolution(aspect, "fast")
            rng = np.random.default_rng(args.seed + i)
            scene = world.sample_scene(rng, held_out=args.held_out, num_objects=args.num_objects)
            clip = world.render(scene, height, width, presets.num_frames(args.duration, args.fps), args.fps)
            if args.raw:
                analysis = analyzer.analyze(clip.frames, fps=args.fps)
            else:
                path = Path(folder) / f"clip_{i}.mp4"
                write_h264(clip.frames, path, args.fps)
                analysis = analyzer.analyze(path)

            # 2. Compare with the ground truth
            result = analyzer.match(analysis, scene)
            for name in ("background", "background_to", "count"):
                hits[name] += result[name]
                totals[name] += 1
                if not result[name]:
                    mistakes.append(f"seed {args.seed + i} {aspect}: {name} of {scene.background} -> {scene.background_to}, {len(scene.objects)} objects")
            for obj, agree in zip(scene.objects, result["objects"]):
                for name, ok in agree.items():
                    if name == "colour_to" and obj.colour_to is None and ok:
                        continue  # count colour changes only where there is one, or a false one
                    hits[name] += ok
                    totals[name] += 1
                    if not ok:
                        mistakes.append(f"seed {args.seed + i} {aspect}: {name} of {obj}")

    # 3. The table
    print(f"{args.num_clips} clips, {time.perf_counter() - started:.1f} s")
    print(f"{'attribute':<14} {'accuracy':>8} {'n':>6}")
    for name in ("colour", "shape", "size", "motion", "colour_to", "background", "background_to", "count"):
        print(f"{name:<14} {hits[name] / max(1, totals[name]):>8.1%} {totals[name]:>6}")
    if args.verbose:
        print("\n".join(mistakes))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-clips", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--held-out", action="store_true", help="scenes with held-out combinations")
    parser.add_argument("--num-objects", type=int, choices=(1, 2, 3), help="objects per scene (default: drawn)")
    parser.add_argument("--raw", action="store_true", help="analyze the rendered frames, not an H.264 round trip")
    parser.add_argument("--verbose", action="store_true", help="list every mistake")
    main(parser.parse_args())
