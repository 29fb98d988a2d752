"""From recipes to MP4 files: the one path the CLI, the studio and the eval share.

`generate_videos` runs the pipeline once for a batch of recipes that differ only in their seeds
(the studio's seed comparison), then decodes the latents a few frames at a time straight into the
MP4 writers, so a long video never sits in memory as pixels. Every file is written under a
temporary name and renamed when whole; a stop or an error leaves nothing behind.
"""

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .export import VideoWriter
from .pipeline_t2v import TextToVideoPipeline
from .recipe import Recipe

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "model"


@dataclass
class GenerationResult:
    recipe: Recipe
    video_path: Path | None  # None when the run was stopped
    seconds: float
    stopped: bool = False


def unfamiliar_words_text(words: list[str], shown: int = 8) -> str:
    """What the CLI and the studio say about a prompt's words the model never read."""
    listed = ", ".join(f"'{word}'" for word in words[:shown]) + (f" and {len(words) - shown} more" if len(words) > shown else "")
    return f"this model never read {listed} in its training captions, so the video will not show what they say."


def load_pipeline(model_dir: str | Path = DEFAULT_MODEL_DIR, device: str | None = None) -> TextToVideoPipeline:
    """Load a model folder (diffusers layout) for inference, offline; raises ValueError if it is not one."""
    model_dir = Path(model_dir)
    if not (model_dir / "model_index.json").is_file():
        raise ValueError(f"model folder {str(model_dir)!r} has no model_index.json; give a folder written by save_pretrained")
    # Denormal floats make CPU kernels several times slower and change no result we can see.
    torch.set_flush_denormal(True)
    pipe = TextToVideoPipeline.from_pretrained(str(model_dir), dtype=torch.float32)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def model_name(pipe: TextToVideoPipeline) -> str:
    """A short name for the weights (model_index.json's model_name), stored in every recipe."""
    return pipe.config.model_name


def generate_videos(
    pipe: TextToVideoPipeline,
    recipes: list[Recipe],
    output_paths: list[str | Path],
    callback_on_step_end: Callable | None = None,
    callback_on_step_end_tensor_inputs: list[str] | None = None,
) -> list[GenerationResult]:
    """Generate one MP4 (+ .json recipe) per recipe, as one batch.

    The recipes must agree on everything but the seed. Each recipe's seed drives its own CPU
    generator, so a video in a batch is the same video a single run with that seed makes.
    A stop (``pipe._interrupt = True`` from the callback or another thread) during denoising or
    decoding returns results with ``stopped=True`` and writes no file.
    """
    if not recipes or len(recipes) != len(output_paths):
        raise ValueError(f"give one output path per recipe (got {len(recipes)} recipes, {len(output_paths)} paths)")
    first = recipes[0].validate()
    for recipe in recipes[1:]:
        if dataclasses.replace(recipe.validate(), seed=first.seed) != first:
            raise ValueError("recipes generated as one batch may differ only in their seed")

    started = time.perf_counter()
    generators = [torch.Generator("cpu").manual_seed(recipe.seed) for recipe in recipes]
    latents = pipe(
        prompt=[first.prompt] * len(recipes),
        negative_prompt=first.negative_prompt,
        height=first.height,
        width=first.width,
        num_frames=first.num_frames,
        num_inference_steps=first.steps,
        guidance_scale=first.guidance,
        frame_rate=first.fps,
        generator=generators,
        output_type="latent",
        callback_on_step_end=callback_on_step_end,
        callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
    ).frames

    stopped = pipe.interrupt
    if not stopped:
        with contextlib.ExitStack() as stack:
            writers = [stack.enter_context(VideoWriter(path, fps=recipe.fps, recipe=recipe)) for recipe, path in zip(recipes, output_paths)]
            for chunk in pipe.iter_decode(latents, first.num_frames):  # (B, t, H, W, 3)
                if pipe.interrupt:
                    stopped = True
                    for writer in writers:
                        writer.abort()
                    break
                for writer, frames in zip(writers, chunk):
                    writer.write(frames)
    seconds = time.perf_counter() - started
    return [
        GenerationResult(recipe=recipe, video_path=None if stopped else Path(path), seconds=seconds, stopped=stopped)
        for recipe, path in zip(recipes, output_paths)
    ]
