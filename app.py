"""Ling Studio's entry point.

    python app.py                      # the studio in the browser, on the bundled model
    python app.py --model DIR --share  # any model folder, with a public link
    python app.py generate "a red circle moving right on a black background" --seed 7 --aspect 16:9 --duration 2 --out out.mp4

Nothing heavy is imported or loaded at import time: flags are parsed first, so a bad flag answers at
once, then the pipeline is loaded, then the UI is built.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pipeline import presets  # noqa: E402  (light: no torch)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "model"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is answered with one line (not the whole usage) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a whole number, got {text!r}") from None


def _number(kind):
    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def build_generate_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="app.py generate", description="Generate one video from a prompt and write it as an MP4.")
    parser.add_argument("prompt", help="what the video shows")
    parser.add_argument("--seed", type=_seed, default=0, help="0 .. 2^63-1; the same seed gives the same video")
    parser.add_argument("--aspect", choices=list(presets.ASPECT_RATIOS), default=presets.DEFAULT_ASPECT)
    parser.add_argument("--duration", type=_number(float), default=presets.DEFAULT_DURATION, help=f"seconds, {presets.MIN_DURATION:g} to {presets.MAX_DURATION:g}")
    parser.add_argument("--fps", type=_number(int), choices=presets.FPS_CHOICES, default=presets.DEFAULT_FPS)
    parser.add_argument("--steps", type=_number(int), default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--guidance", type=_number(float), default=None, help="classifier-free guidance (default: the model's)")
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--quality", choices=list(presets.QUALITY_PRESETS), default=presets.DEFAULT_QUALITY)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model folder (default: the bundled model)")
    parser.add_argument("--out", default=None, help="output .mp4 (default: outputs/<time>-<seed>/video.mp4); the recipe goes beside it as .json")
    return parser


def run_generate(argv: list[str]) -> int:
    args = build_generate_parser().parse_args(argv)
    from pipeline.generate import generate_videos, load_pipeline, model_name, unfamiliar_words_text
    from pipeline.recipe import Recipe

    out = Path(args.out) if args.out else Path("outputs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.seed}" / "video.mp4"
    if out.suffix.lower() != ".mp4":
        print(f"app.py generate: error: --out must end in .mp4, got {str(out)!r}", file=sys.stderr)
        return 2
    try:
        recipe = Recipe(
            prompt=args.prompt, negative_prompt=args.negative, aspect=args.aspect, duration=args.duration, fps=args.fps,
            seed=args.seed, quality=args.quality,
        )  # fmt: skip
        recipe.validate()  # before the model loads: a bad value answers at once
        pipe = load_pipeline(args.model)
        recipe.steps = args.steps if args.steps is not None else pipe.config.default_num_inference_steps
        recipe.guidance = args.guidance if args.guidance is not None else pipe.config.default_guidance_scale
        recipe.model = model_name(pipe)
        recipe.validate()
        if unfamiliar := pipe.unfamiliar_words(recipe.prompt):
            print(f"app.py generate: warning: prompt: {unfamiliar_words_text(unfamiliar)}", file=sys.stderr)
        out.parent.mkdir(parents=True, exist_ok=True)
        result = generate_videos(pipe, [recipe], [out])[0]
    except ValueError as error:
        print(f"app.py generate: error: {error}", file=sys.stderr)
        return 2
    print(recipe.to_json())
    print(f"wrote {result.video_path} ({recipe.num_frames} frames, {recipe.width}x{recipe.height}, {recipe.fps} fps) in {result.seconds:.1f} s")
    return 0


def build_studio_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="app.py", description="Ling Studio: text to video in the browser. `app.py generate --help` for the CLI.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for the whole network)")
    parser.add_argument("--port", type=_number(int), default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public Gradio link")
    parser.add_argument("--auth", default=None, help="USER:PASS, or a file with one USER:PASS per line")
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model folder (default: the bundled model)")
    parser.add_argument("--max-queue", type=_number(int), default=8, help="runs that may wait; more are turned away with a message")
    parser.add_argument("--output-dir", default="outputs", help="where each run's folder is written (the only folder served)")
    parser.add_argument("--keep-hours", type=_number(float), default=24.0, help="delete runs older than this")
    return parser


def read_auth(value: str) -> list[tuple[str, str]]:
    """--auth: "USER:PASS", or a file with one USER:PASS per line (blank lines and # comments skipped)."""
    path = Path(value)
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else [value]
    pairs = []
    for line in lines:
        line = line.strip()
        if not line or (path.is_file() and line.startswith("#")):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            where = f"a line of {value}" if path.is_file() else "--auth"
            raise ValueError(f"{where} must be USER:PASS (or --auth a file of such lines); got {line[:40]!r}")
        pairs.append((user, password))
    if not pairs:
        raise ValueError(f"the auth file {value} holds no USER:PASS line")
    return pairs


def run_studio(argv: list[str]) -> int:
    args = build_studio_parser().parse_args(argv)
    if args.max_queue < 1:
        print(f"app.py: error: --max-queue must be at least 1, got {args.max_queue}", file=sys.stderr)
        return 2
    if args.keep_hours <= 0:
        print(f"app.py: error: --keep-hours must be above 0, got {args.keep_hours:g}", file=sys.stderr)
        return 2
    try:
        auth = read_auth(args.auth) if args.auth else None
    except (OSError, ValueError) as error:
        print(f"app.py: error: {error}", file=sys.stderr)
        return 2
    if not (Path(args.model) / "model_index.json").is_file():  # load_pipeline says the same, after seconds of imports
        print(f"app.py: error: model folder {args.model!r} has no model_index.json; give a folder written by save_pretrained", file=sys.stderr)
        return 2

    # Heavy imports only now: a bad flag above answers at once.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a self-hosted studio phones nobody
    from pipeline.generate import load_pipeline
    from ui.layout import build_demo, launch_options
    from ui.runs import StudioSettings, clean_old_runs

    settings = StudioSettings(output_dir=Path(args.output_dir).resolve(), keep_hours=args.keep_hours)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    clean_old_runs(settings.output_dir, settings.keep_hours)
    pipe = load_pipeline(args.model)
    demo = build_demo(pipe, settings)
    # One run on the model at a time; at most --max-queue more wait, the next are told the studio is busy.
    demo.queue(default_concurrency_limit=1, max_size=args.max_queue)
    demo.launch(
        server_name=args.host, server_port=args.port, share=args.share, auth=auth,
        auth_message="Ling Studio: sign in to generate videos." if auth else None, **launch_options(settings),
    )  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "generate":
        return run_generate(argv[1:])
    return run_studio(argv)


if __name__ == "__main__":
    sys.exit(main())
