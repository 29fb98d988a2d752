"""How much noise the transformer removes at each noise level, on true world clips.

    python -m eval.denoise --model <folder> [--clips 6] [--json runs/denoise.json]

Flicker and speckled backgrounds are noise that sampling leaves in the latents. This measures where:

1. Per noise level s: world clips' latents x0 are noised to x_s = (1 - s) x0 + s noise, and the
   transformer's velocity gives x0_hat = x_s - s v. A perfect model leaves x0_hat - x0 = 0; a model
   that does nothing leaves s (rms, in units of the latents' std). `removed` is the share of the
   noise taken out: 1 - rms(x0_hat - x0) / s.
2. The sampler's tail: the clips noised to one of the last sigmas of the folder's own schedule
   (default steps and shift) and carried to 0 by its remaining Euler steps, as the pipeline does
   (text-conditioned velocity; guidance is left out so that only the denoising is measured). What
   is left is the noise a generated video ends with; `high_frequency` is the part of it a 3x3
   spatial blur removes, the speckle that shimmers from frame to frame.

3. Object mass per noise level: how far the decoded x0_hat departs from the clip's background (the
   sum of |pixel - background| over the video), over the same sum for the clip's own round trip.
   Where the noise hides where an object is, the best prediction spreads one object's worth of
   colour over the places it may be: 1.0. Above 1 the model expects more object than the clip
   holds, and the first sampling steps lay out extra copies.

Clips and noise are seeded, so the same folder gives the same numbers on the same machine.
"""

import argparse
import json

import numpy as np
import torch

from eval.__main__ import FPS
from pipeline import presets
from pipeline.generate import load_pipeline
from training import world
from training.train_dit import encode_latents

NOISE_LEVELS = (0.03, 0.07, 0.15, 0.25, 0.5, 0.75, 0.95)
CLIP_SEED = 20_000  # far from the eval's and the trainers' seeds


def world_latents(pipe, num_clips: int, num_objects: int | None = None) -> tuple[torch.Tensor, list[str], np.ndarray]:
    """Diffusion-space latents (B, C, T, H, W), captions and background frames (B, T, H, W, 3) of
    seeded 2 s 16:9 world clips (with num_objects objects each, or the world's mix)."""
    ratio = pipe.vae.temporal_compression_ratio
    num_frames = presets.num_frames(2.0, FPS)
    num_frames = 1 + ratio * ((num_frames - 1) // ratio)  # the VAE encodes 1 + ratio k frames
    clips = [world.sample_clip(CLIP_SEED + i, "16:9", duration=2.0, fps=FPS, num_objects=num_objects) for i in range(num_clips)]
    frames = np.stack([clip.frames[:num_frames] for _, _, clip in clips])
    masks = np.stack([clip.object_masks[:num_frames] for _, _, clip in clips])
    latents = encode_latents(pipe.vae, torch.from_numpy(frames))
    return latents, [caption for _, caption, _ in clips], background_frames(frames, masks)


def background_frames(frames: np.ndarray, object_masks: np.ndarray) -> np.ndarray:
    """The world's backgrounds change only down the frame (flat or a vertical gradient), so each
    row's median over the pixels no object covers is the background behind the objects."""
    background = np.empty(frames.shape, np.float32)
    for index in np.ndindex(*frames.shape[:3]):  # (clip, frame, row)
        free = ~object_masks[index]
        background[index] = np.median(frames[index][free] if free.any() else frames[index], axis=0)
    return background


def object_mass(pipe, latents: torch.Tensor, background: np.ndarray) -> np.ndarray:
    """Per clip: the sum over the decoded video of |pixel - background| (0-255 levels, all channels)."""
    decoded = np.concatenate(list(pipe.iter_decode(latents, background.shape[1])), axis=1) * 255
    return np.abs(decoded - background).reshape(len(decoded), -1).sum(1)


def velocity(pipe, latents, sigma: float, conditioning) -> torch.Tensor:
    text, mask, pooled = conditioning
    return pipe.transformer(
        hidden_states=latents,
        timestep=torch.full((latents.shape[0],), sigma * 1000.0),  # diffusers' flow-matching timesteps
        encoder_hidden_states=text,
        pooled_text=pooled,
        encoder_attention_mask=mask,
        frame_rate=float(FPS),
        return_dict=False,
    )[0].float()


def rms(x: torch.Tensor) -> float:
    return x.pow(2).mean().sqrt().item()


@torch.no_grad()
def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads) if args.threads else None
    if args.clips < 1:
        raise ValueError(f"--clips must be at least 1, got {args.clips}")
    if args.objects is not None and not 1 <= args.objects <= 3:
        raise ValueError(f"--objects must be 1, 2 or 3, got {args.objects}")
    if args.tail_steps < 1:
        raise ValueError(f"--tail-steps must be at least 1, got {args.tail_steps}")
    pipe = load_pipeline(args.model)
    pipe.transformer.eval()
    x0, captions, background = world_latents(pipe, args.clips, args.objects)
    own_mass = object_mass(pipe, x0, background)
    conditioning = pipe.encode_prompt(captions, torch.device("cpu"))
    generator = torch.Generator("cpu").manual_seed(0)
    noise = pipe.starting_noise(x0.shape, generator)

    # 1. One prediction per noise level.
    levels = []
    for s in NOISE_LEVELS:
        noisy = (1 - s) * x0 + s * noise
        v = velocity(pipe, noisy, s, conditioning)
        x0_error = rms(noisy - s * v - x0)
        mass = float(np.mean(object_mass(pipe, noisy - s * v, background) / own_mass))
        levels.append({"sigma": s, "velocity_error": rms(v - (noise - x0)), "x0_error": x0_error, "removed": 1 - x0_error / s, "object_mass": mass})

    # 2. The sampler's last steps, from the folder's own schedule.
    pipe.scheduler.set_timesteps(pipe.config.default_num_inference_steps)
    sigmas = pipe.scheduler.sigmas.tolist()
    tail = []
    for start in range(max(0, len(sigmas) - 1 - args.tail_steps), len(sigmas) - 1):
        latents = (1 - sigmas[start]) * x0 + sigmas[start] * noise
        for i in range(start, len(sigmas) - 1):
            latents = latents + (sigmas[i + 1] - sigmas[i]) * velocity(pipe, latents, sigmas[i], conditioning)
        left = latents - x0
        blurred = torch.nn.functional.avg_pool3d(left, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)
        tail.append({"from_sigma": sigmas[start], "steps": len(sigmas) - 1 - start, "left": rms(left), "high_frequency": rms(left - blurred)})

    objects = f", {args.objects} object(s) each" if args.objects else ""
    print(f"## Denoising of {args.model} ({args.clips} world clips, 16:9, 2 s{objects})\n")
    print("| sigma | velocity error | x0 error | removed | object mass |")
    print("|---|---|---|---|---|")
    for row in levels:
        print(f"| {row['sigma']:.2f} | {row['velocity_error']:.3f} | {row['x0_error']:.3f} | {100 * row['removed']:.0f}% | {row['object_mass']:.2f} |")
    print(f"\n| sampler from sigma ({pipe.config.default_num_inference_steps} steps, shift {pipe.scheduler.config.shift:g}) | steps | noise left | high-frequency |")
    print("|---|---|---|---|")
    for row in tail:
        print(f"| {row['from_sigma']:.3f} | {row['steps']} | {row['left']:.3f} | {row['high_frequency']:.3f} |")
    report = {"model": args.model, "clips": args.clips, "objects": args.objects, "levels": levels, "sampler_tail": tail}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/model")
    parser.add_argument("--clips", type=int, default=6, help="world clips to noise and denoise")
    parser.add_argument("--objects", type=int, default=None, help="objects per clip, 1 to 3 (default: the world's mix)")
    parser.add_argument("--tail-steps", type=int, default=5, help="carry the clips to 0 from each of the schedule's last this many sigmas")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
