"""Train the text-to-video transformer (pipeline/transformer.py) on clips of the procedural world.

    python -m training.train_dit --model assets/model --run-dir runs/dit --minutes 60     # train (resumes if runs/dit has a checkpoint)
    python -m training.train_dit --model assets/model --run-dir runs/dit --cache-latents 64 --minutes 60
    python -m training.train_dit --run-dir runs/dit --export assets/model                # EMA transformer -> assets/model (fp16)
    accelerate launch -m training.train_dit ...                                           # one GPU or many

One script for one CPU, one GPU or many (accelerate). What it does, top to bottom:

1. The frozen parts come from the model folder: the VAE, whose posterior mean normalised with its
   latent statistics is what the transformer learns to make, and MiniLM, whose token states and
   pooled vector are cached per caption. The transformer is the folder's, or a new one of
   --transformer-size, or the checkpoint's when the run resumes.
2. Data: world clips rendered on the fly, or (--cache-latents N) N clips per bucket rendered and
   encoded once into runs/dit/latents/ and drawn from at random after that, with a fresh caption
   each time. On a CPU the VAE encode costs several times a transformer step, so the cache is the
   way to train there. Every batch is one bucket, aspect ratio x duration x frame rate (Kling's
   variable-resolution training: one model for every shape), its batch size scaled so that a batch
   holds about as many tokens in every bucket. About 10% of captions are empty, which teaches the
   unconditional velocity that classifier-free guidance needs.
3. Loss: rectified flow as in SD3 (Esser et al., 2024): x_s = (1 - s) x0 + s noise with s drawn
   from a logit-normal distribution, and the transformer predicts the velocity noise - x0 at
   timestep 1000 s. That is the convention of diffusers' FlowMatchEulerDiscreteScheduler, which
   samples with timesteps = sigmas * 1000 and steps x += (sigma_next - sigma) * velocity. With
   --frame-noise-prob a share of videos draws a level per latent frame instead (as Diffusion
   Forcing, Chen et al., 2024, trains). With --noise-frame-correlation the latent frames of a video
   share part of their noise (PYoCo's mixed noise, Ge et al., 2023), and the export tells the
   pipeline to sample from that noise too.
4. Continuation: in a share of videos (--context-prob) the first k latent frames (1 <= k <= T / 2)
   are given clean (x_s = x0, timestep 0) and left out of the loss, so the same model continues a
   video or animates a first frame (TextToVideoPipeline's `context`).
5. An EMA of the weights is what gets sampled and exported.
6. Every few minutes: a checkpoint (model, EMA, optimizer, step, args) written atomically, a log line
   in log.jsonl, and a contact sheet of samples from fixed prompts made by TextToVideoPipeline with
   the EMA weights, the last row continuing from a given first frame.
"""

import argparse
import copy
import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
import textwrap
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers import FlowMatchEulerDiscreteScheduler
from PIL import Image, ImageDraw

from pipeline import presets
from pipeline.pipeline_t2v import TextToVideoPipeline, check_guidance_interval, correlated_frame_noise
from pipeline.transformer import TRANSFORMER_SIZES, SpatioTemporalTransformer, transformer_from_size
from pipeline.vae import CausalVideoVAE
from training import history, precision, world
from training.init_model import copy_matching_weights

SAMPLE_SEED = 2_000_000_007  # scenes and noise of the contact sheets; training seeds stay below
REFERENCE_BUCKET = ("16:9", 2.0, 15)  # --batch-size is the batch of this bucket; the eval's bucket too


# ------------------------------------------------------------------------------------------------
# Buckets
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """One shape of training video: every batch comes from a single bucket."""

    aspect: str
    duration: float  # seconds, as a user asks for them
    fps: int
    height: int  # pixels
    width: int
    num_frames: int  # frames rendered: the 1 + 4k the pipeline's latents cover for this duration
    latent_shape: tuple[int, int, int]  # (t, h, w)
    batch_size: int

    @property
    def name(self) -> str:
        return f"{self.aspect.replace(':', 'x')}_{self.duration:g}s_{self.fps}fps"


def make_buckets(vae: CausalVideoVAE, patch_size, args) -> list[Bucket]:
    """Every (aspect, duration, fps) of the arguments, with pixel and latent sizes and a batch size
    that keeps the tokens per batch near those of --batch-size videos of the reference bucket."""
    scale, ratio = vae.spatial_compression_ratio, vae.temporal_compression_ratio

    def geometry(aspect, duration, fps):
        height, width = presets.resolution(aspect, args.quality)
        latent_frames = vae.num_latent_frames(presets.num_frames(duration, fps))
        latent_shape = (latent_frames, height // scale, width // scale)
        tokens = math.prod(size // patch for size, patch in zip(latent_shape, patch_size))
        return height, width, 1 + ratio * (latent_frames - 1), latent_shape, tokens

    reference_tokens = geometry(*REFERENCE_BUCKET)[-1]
    buckets = []
    for aspect in args.aspects:
        for duration in args.durations:
            for fps in args.fps:
                height, width, num_frames, latent_shape, tokens = geometry(aspect, duration, fps)
                batch_size = max(1, round(args.batch_size * reference_tokens / tokens))
                buckets.append(Bucket(aspect, duration, fps, height, width, num_frames, latent_shape, batch_size))
    return buckets


# ------------------------------------------------------------------------------------------------
# Data: world clips, latents, text
# ------------------------------------------------------------------------------------------------


def render_clip(bucket: Bucket, rng: np.random.Generator) -> tuple[world.Scene, world.RenderedClip]:
    """A fresh scene and its clip (frames uint8 (T, H, W, 3), object masks) at a bucket's size, length and frame rate."""
    scene = world.sample_scene(rng)
    return scene, world.render(scene, bucket.height, bucket.width, bucket.num_frames, bucket.fps)


def latent_object_mask(object_masks: np.ndarray, temporal_ratio: int, spatial_ratio: int) -> np.ndarray:
    """Pixel object masks (1 + r(t-1), H, W) -> float (1, t, H / s, W / s): 1 where a latent covers
    any object pixel. The causal VAE's first latent frame holds frame 0 alone, each later one the
    next r frames."""
    masks = torch.from_numpy(object_masks).float()
    grouped = torch.cat([masks[:1], masks[1:].unflatten(0, (-1, temporal_ratio)).amax(1)])  # (t, H, W)
    return torch.nn.functional.max_pool2d(grouped[:, None], spatial_ratio)[:, 0][None].numpy()


class WorldBatches(torch.utils.data.IterableDataset):
    """Endless batches of freshly rendered clips, one bucket per batch: (bucket index, frames uint8
    (B, T, H, W, 3), captions, latent object masks (B, 1, t, h, w)). DataLoader workers render in
    parallel, each from its own seed."""

    def __init__(self, buckets: list[Bucket], seed: list[int], compression: tuple[int, int]):
        self.buckets = buckets
        self.seed = seed
        self.compression = compression  # (temporal, spatial) of the VAE

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([*self.seed, worker.id if worker is not None else 0])
        while True:
            index = int(rng.integers(len(self.buckets)))
            frames, masks, captions = [], [], []
            for _ in range(self.buckets[index].batch_size):
                scene, clip = render_clip(self.buckets[index], rng)
                frames.append(clip.frames)
                masks.append(latent_object_mask(clip.object_masks, *self.compression))
                captions.append(world.training_caption(scene, rng))
            yield index, np.stack(frames), captions, np.stack(masks)


@torch.no_grad()
def encode_latents(vae: CausalVideoVAE, frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames (B, T, H, W, 3) -> diffusion-space latents (B, C, t, h, w): the posterior mean
    normalised with the VAE's latent statistics, exactly what the pipeline decodes."""
    mean, std = vae.latent_stats(vae.device, torch.float32)
    video = frames.to(vae.device).to(vae.dtype).div(127.5).sub(1).movedim(-1, 1)  # (B, 3, T, H, W) in [-1, 1]; uint8 travels
    return (vae.encode(video).latent_dist.mode().float() - mean) / std


def vae_fingerprint(vae: CausalVideoVAE) -> str:
    """A hash of what makes the latents: the encoder's weights and the latent statistics. Latents, a
    latent cache and a trained transformer belong to one latent space, and a retrained encoder must
    not be mixed with them silently. The decoder is left out on purpose: a decoder fine-tuned on a
    frozen encoder (train_vae --freeze-encoder) decodes the same latents better, and the transformer
    stays valid."""
    digest = hashlib.sha256(json.dumps([vae.config.latents_mean, vae.config.latents_std]).encode())
    for name, tensor in vae.encoder.state_dict().items():
        digest.update(name.encode())
        # "+ 0.0" turns -0.0 into +0.0: equal weights, different bytes. fp16 underflow leaves -0.0 in
        # saved encoders, and the EMA of a frozen encoder (p + w * 0) writes them back as +0.0.
        digest.update((tensor.detach().float().cpu() + 0.0).numpy().tobytes())
    return digest.hexdigest()[:16]


class LatentCache:
    """Latents of N clips per bucket, encoded once: runs/dit/latents/<bucket>.pt holds latents (fp16,
    normalised, so fp16 keeps ~3 significant digits where they matter), the scenes as plain data
    (captions are drawn fresh at every use, so an epoch also sees new wordings) and the VAE's
    fingerprint. A file made by another VAE, or with fewer clips, is made again. The latent object
    masks of the loss are rendered again from the scenes when the cache is loaded (a few ms a clip)."""

    def __init__(
        self, folder: Path, buckets: list[Bucket], clips_per_bucket: int, fingerprint: str, compression: tuple[int, int],
        focus_shapes=(), focus_share: float = 0.0,
    ):
        self.folder = folder
        self.buckets = buckets
        self.clips_per_bucket = clips_per_bucket
        self.fingerprint = fingerprint
        self.compression = compression  # (temporal, spatial) of the VAE
        self.focus_shapes = tuple(focus_shapes)
        self.focus_share = focus_share
        self.latents: list[torch.Tensor] = []
        self.scenes: list[list[world.Scene]] = []
        self.object_masks: list[torch.Tensor] = []
        self.clip_weights: list[np.ndarray | None] = []

    def path(self, bucket: Bucket) -> Path:
        return self.folder / f"{bucket.name}.pt"

    def is_current(self, bucket: Bucket) -> bool:
        if not self.path(bucket).exists():
            return False
        data = torch.load(self.path(bucket), map_location="cpu", weights_only=True)
        return data["vae"] == self.fingerprint and data["latents"].shape[0] >= self.clips_per_bucket

    def build(self, vae: CausalVideoVAE, seed: int, encode_batch: int, accelerator: Accelerator):
        """Render and encode the missing bucket files, the buckets shared out between processes."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for index in range(accelerator.process_index, len(self.buckets), accelerator.num_processes):
            bucket = self.buckets[index]
            if self.is_current(bucket):
                continue
            started = time.time()
            rng = np.random.default_rng([seed, index])  # a bucket's clips do not depend on the process count
            scenes, latents = [], []
            for start in range(0, self.clips_per_bucket, encode_batch):
                clips = [render_clip(bucket, rng) for _ in range(min(encode_batch, self.clips_per_bucket - start))]
                scenes += [scene.to_dict() for scene, _ in clips]
                frames = torch.from_numpy(np.stack([clip.frames for _, clip in clips]))
                latents.append(encode_latents(vae, frames).half().cpu())
            temp = self.path(bucket).with_suffix(".tmp")
            torch.save({"latents": torch.cat(latents), "scenes": json.dumps(scenes), "vae": self.fingerprint}, temp)
            os.replace(temp, self.path(bucket))  # a bucket file is whole or absent
            print(f"latent cache: {bucket.name} ({self.clips_per_bucket} clips) in {time.time() - started:.0f} s", flush=True)

    def load(self):
        for bucket in self.buckets:
            data = torch.load(self.path(bucket), map_location="cpu", weights_only=True)
            self.latents.append(data["latents"][: self.clips_per_bucket])
            self.scenes.append([world.Scene.from_dict(scene) for scene in json.loads(data["scenes"])[: self.clips_per_bucket]])
            masks = [
                latent_object_mask(world.render(scene, bucket.height, bucket.width, bucket.num_frames, bucket.fps).object_masks, *self.compression)
                for scene in self.scenes[-1]
            ]
            self.object_masks.append(torch.from_numpy(np.stack(masks)).half())
            self.clip_weights.append(self._focus_weights(self.scenes[-1]))

    def _focus_weights(self, scenes: list[world.Scene]) -> np.ndarray | None:
        """Draw probabilities that give clips holding a focus shape focus_share of the draws (None:
        uniform, as without focus). The cached clips stay as they are, so a focused run reuses the
        cache of a plain one."""
        if not (self.focus_shapes and self.focus_share):  # a share of 0 asks for no focus, not for no focus shapes
            return None
        focused = np.array([scene.holds_shape(self.focus_shapes) for scene in scenes])
        if focused.all() or not focused.any():
            return None
        weights = np.where(focused, self.focus_share / focused.sum(), (1 - self.focus_share) / (~focused).sum())
        # A share of 1 leaves the other clips a tiny weight instead of none, so a batch larger than the
        # focused clips still fills up (numpy refuses to draw more clips than have a non-zero weight).
        weights = np.maximum(weights, 1e-9)
        return weights / weights.sum()

    def sample(self, rng: np.random.Generator) -> tuple[int, torch.Tensor, list[str], torch.Tensor]:
        """(bucket index, latents (B, C, t, h, w) float, captions, latent object masks (B, 1, t, h, w))
        of random cached clips of a random bucket."""
        index = int(rng.integers(len(self.buckets)))
        count = min(self.buckets[index].batch_size, self.clips_per_bucket)
        clips = torch.from_numpy(rng.choice(self.clips_per_bucket, size=count, replace=False, p=self.clip_weights[index]))
        captions = [world.training_caption(self.scenes[index][i], rng) for i in clips.tolist()]
        return index, self.latents[index][clips].float(), captions, self.object_masks[index][clips].float()


class TextStates:
    """MiniLM token states (trimmed to the caption's tokens), mask and pooled vector per caption, in
    an LRU dict: the empty caption comes every tenth video, cached clips' scenes every epoch."""

    def __init__(self, tokenizer, text_encoder, size: int):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.size = size
        self.cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def __call__(self, captions: list[str], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(states (B, L, D), mask (B, L), pooled (B, D)), padded to the batch's longest caption;
        the transformer masks padding, so this is the pipeline's padding to max_length, cheaper."""
        missing = [caption for caption in dict.fromkeys(captions) if caption not in self.cache]
        if missing:
            tokens = self.tokenizer(missing, padding=True, max_length=self.text_encoder.config.max_length, truncation=True, return_tensors="pt")
            states, pooled = self.text_encoder(tokens.input_ids.to(self.text_encoder.device), tokens.attention_mask.to(self.text_encoder.device))
            for i, caption in enumerate(missing):
                self.cache[caption] = (states[i, : int(tokens.attention_mask[i].sum())].float().cpu(), pooled[i].float().cpu())
        for caption in captions:
            self.cache.move_to_end(caption)
        entries = [self.cache[caption] for caption in captions]
        while len(self.cache) > self.size:
            self.cache.popitem(last=False)
        length = max(states.shape[0] for states, _ in entries)
        states = torch.zeros(len(captions), length, entries[0][0].shape[1])
        mask = torch.zeros(len(captions), length, dtype=torch.long)
        for i, (caption_states, _) in enumerate(entries):
            states[i, : caption_states.shape[0]] = caption_states
            mask[i, : caption_states.shape[0]] = 1
        pooled = torch.stack([pooled for _, pooled in entries])
        return states.to(device), mask.to(device), pooled.to(device)


# ------------------------------------------------------------------------------------------------
# Loss
# ------------------------------------------------------------------------------------------------


def flow_matching_loss(model, latents, text, text_mask, pooled, frame_rate, args, object_mask=None) -> tuple[torch.Tensor, dict]:
    """Rectified-flow velocity MSE over the frames that are not clean context, weighted
    1 + args.object_weight on latents that cover an object (object_mask (B, 1, T, H, W)): objects
    are a few percent of a world clip, and an unweighted loss is content with the background long
    before it draws them."""
    batch, channels, frames = latents.shape[:3]
    device = latents.device
    # Noise level per video, logit-normal (SD3): most samples in the middle, where learning is hardest.
    s = torch.sigmoid(args.logit_mean + args.logit_std * torch.randn(batch, device=device))  # (B,)
    # Continuation: some videos keep their first k latent frames clean, 1 <= k <= T / 2.
    context = torch.zeros(batch, dtype=torch.long, device=device)
    if frames > 1:
        k = torch.randint(1, frames // 2 + 1, (batch,), device=device)
        context = torch.where(torch.rand(batch, device=device) < args.context_prob, k, context)
    is_context = torch.arange(frames, device=device)[None] < context[:, None]  # (B, T)
    sigma = s[:, None].expand(batch, frames)
    if args.frame_noise_prob:
        # Some videos draw a noise level per latent frame (as Diffusion Forcing trains): a frame
        # noisier than its neighbours is best predicted by carrying the objects over from them, so
        # these videos train the attention across frames that keeps one object one object.
        per_frame = torch.sigmoid(args.logit_mean + args.logit_std * torch.randn(batch, frames, device=device))
        sigma = torch.where((torch.rand(batch, device=device) < args.frame_noise_prob)[:, None], per_frame, sigma)
    sigma = sigma.masked_fill(is_context, 0.0)  # (B, T): 0 on context frames

    noise = torch.randn_like(latents)
    if args.noise_frame_correlation:
        noise = correlated_frame_noise(noise, args.noise_frame_correlation)
    sigma_5d = sigma[:, None, :, None, None]  # (B, 1, T, 1, 1)
    noisy = (1 - sigma_5d) * latents + sigma_5d * noise  # exactly x0 on context frames
    target = noise - latents
    # Timesteps per latent frame (B, T): diffusers' flow-matching timesteps are sigmas * 1000.
    inputs = dict(timestep=sigma * 1000, encoder_hidden_states=text, pooled_text=pooled, encoder_attention_mask=text_mask, frame_rate=frame_rate)
    self_condition = None
    if args.self_condition_prob:
        # Self-conditioning (Chen et al. 2022): some videos get the model's own clean estimate from
        # a first pass without one, as the sampler hands it the last step's; the rest get none, as
        # the first step has none. No gradient flows through the first pass.
        self_condition = torch.zeros_like(noisy)
        chosen = torch.rand(batch, device=device) < args.self_condition_prob
        if chosen.any():
            with torch.no_grad():
                first = model(hidden_states=noisy[chosen], **{k: v[chosen] for k, v in inputs.items()}, return_dict=False)[0]
            self_condition[chosen] = noisy[chosen] - sigma_5d[chosen] * first.float()
    prediction = model(
        hidden_states=noisy,
        **inputs,
        self_condition=self_condition,
        return_dict=False,
    )[0]
    weight = (~is_context)[:, None, :, None, None].float().expand(-1, -1, -1, *latents.shape[3:])  # (B, 1, T, H, W)
    if object_mask is not None and args.object_weight:
        # A weight that depends on the target biases the optimum towards the heavy targets: where
        # the noise hides where the object is, the best prediction under weight 1 + w on object
        # latents is (1 + w) p / (1 + w p) of an object at a place it covers with chance p, not p,
        # so the layout steps see several objects where one was asked for. (1 - sigma)**fade lets
        # the extra weight count only where the noise has stopped hiding the objects.
        # --object-weight-max-sigma instead drops it only above a level and keeps it whole below (at
        # 0.8 it lost held-out and two-object colours as the fades did; assets/next/README.md).
        fade = (1 - sigma).pow(args.object_weight_fade) * (sigma <= args.object_weight_max_sigma)
        fade = fade[:, None, :, None, None]  # (B, 1, T, 1, 1); 0**0 = 1
        weight = weight * (1 + args.object_weight * fade * object_mask)
    error = (prediction.float() - target).pow(2) * weight
    loss = error.sum() / (weight.sum() * channels)
    parts = {"context_frames": float(is_context.float().mean())}
    if args.temporal_weight:
        # Flicker, and objects that split, fade or appear, are errors that change from one latent
        # frame to the next; the velocity MSE weighs them like any other. This term compares the
        # frame-to-frame changes of the predicted clean video (x0 = x_s - s v; exact on context
        # frames, so the step from the context to the first new frame counts too) with the true ones.
        predicted_clean = noisy - sigma_5d * prediction.float()
        change_error = (predicted_clean.diff(dim=2) - latents.diff(dim=2)).pow(2)
        pair_weight = torch.maximum(weight[:, :, 1:], weight[:, :, :-1])  # pairs with a generated frame
        temporal = (change_error * pair_weight).sum() / (pair_weight.sum() * channels).clamp(min=1e-8)
        loss = loss + args.temporal_weight * temporal
        parts["temporal"] = float(temporal.detach())
    return loss, parts


def learning_rate(step: int, args) -> float:
    """Linear warm-up, then constant (as DiT trains) or, with --decay-steps, a cosine decay to a tenth."""
    warmup = min(1.0, (step + 1) / args.warmup_steps)
    if not args.decay_steps:
        return args.lr * warmup
    return args.lr * warmup * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / args.decay_steps))))


# ------------------------------------------------------------------------------------------------
# Contact sheets
# ------------------------------------------------------------------------------------------------


def sample_scenes(count: int) -> list[world.Scene]:
    """Fixed scenes for the contact sheets: the same prompts at every save of every run."""
    rng = np.random.default_rng(SAMPLE_SEED)
    return [world.sample_scene(rng) for _ in range(count)]


def labelled_row(frames: np.ndarray, label: str, every: int, label_width: int = 240) -> np.ndarray:
    """uint8 frames (T, H, W, 3) -> one row: the label, then every `every`-th frame, 2x size."""
    shown = np.concatenate([np.pad(f, ((2, 2), (2, 2), (0, 0))) for f in frames[::every]], axis=1)
    shown = shown.repeat(2, axis=0).repeat(2, axis=1)
    panel = Image.new("RGB", (label_width, shown.shape[0]), (255, 255, 255))
    ImageDraw.Draw(panel).multiline_text((6, 4), "\n".join(textwrap.wrap(label, 38)[:8]), fill=(0, 0, 0))
    return np.concatenate([np.asarray(panel), shown], axis=1)


@torch.no_grad()
def contact_sheet(pipe: TextToVideoPipeline, path: Path, args):
    """A PNG of samples from fixed prompts at the reference bucket (the eval's), the last row
    continuing the first scene from its true first frame."""
    aspect, duration, fps = REFERENCE_BUCKET
    height, width = presets.resolution(aspect, args.quality)
    num_frames = presets.num_frames(duration, fps)
    scenes = sample_scenes(args.sample_prompts)
    calls = [(world.describe(scene), None, world.describe(scene)) for scene in scenes]
    first_frame = world.render(scenes[0], height, width, 1, fps).frames  # (1, H, W, 3)
    calls.append((world.describe(scenes[0]), first_frame, "first frame given: " + world.describe(scenes[0])))
    rows = []
    for index, (prompt, context, label) in enumerate(calls):
        frames = pipe(
            prompt,
            height=height,
            width=width,
            num_frames=num_frames,
            frame_rate=fps,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            context=context,
            generator=torch.Generator("cpu").manual_seed(SAMPLE_SEED + index),
        ).frames[0]
        rows.append(labelled_row((frames * 255).round().astype(np.uint8), label, every=max(1, num_frames // 8)))
    width_px = max(row.shape[1] for row in rows)
    sheet = np.concatenate([np.pad(row, ((0, 0), (0, width_px - row.shape[1]), (0, 0)), constant_values=255) for row in rows])
    temp = path.with_suffix(".tmp.png")
    Image.fromarray(sheet).save(temp)
    os.replace(temp, path)


# ------------------------------------------------------------------------------------------------
# Checkpoints and export
# ------------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, model, ema, optimizer, step: int, args, fingerprint: str):
    temp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "args": vars(args),
            "config": dict(model.config),
            "vae": fingerprint,
            "hardware": history.hardware(),
        },
        temp,
    )
    os.replace(temp, path)  # a checkpoint is whole or absent, even if the run is killed mid-write


def start_from_blocks(model: SpatioTemporalTransformer, trained: SpatioTemporalTransformer) -> str:
    """Copy every weight of `trained` whose name and shape `model` shares; say what was left new.

    A token covers the same pixels whatever the VAE's compression (see the patch size above), so a
    transformer trained on one latent space hands its attention, MLP and conditioning layers to one
    for another: only the patch embedding and the output projection, which speak latent channels,
    start anew. The text binding and the world's motion need not be learnt again from noise.
    """
    target = model.state_dict()
    kept = copy_matching_weights(model, trained)
    new = sorted({name.rsplit(".", 1)[0] for name in target if name not in kept})
    return f"--init-transformer: {len(kept)} of {len(target)} tensors copied; new: {', '.join(new) or 'none'}"


def plain_config(config) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def export_transformer(run_dir: Path, model_dir: Path, args):
    """Write the run's EMA transformer (fp16) into model_dir, and the sampling defaults: steps and
    guidance into model_index.json, the shift into scheduler/. A model_dir that does not exist yet
    starts as a copy of the folder the run trained from."""
    checkpoint = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    if not (model_dir / "model_index.json").is_file():
        shutil.copytree(checkpoint["args"]["model"], model_dir, dirs_exist_ok=True)
    vae = CausalVideoVAE.from_pretrained(model_dir / "vae", torch_dtype=torch.float32)
    if vae_fingerprint(vae) != checkpoint["vae"]:
        raise ValueError(f"{model_dir / 'vae'} is not the VAE this transformer was trained with (fingerprint {checkpoint['vae']}); export into a folder with that VAE")

    # 1. The transformer: written beside, then each file moved into place whole.
    transformer = SpatioTemporalTransformer.from_config(plain_config(checkpoint["config"]))
    transformer.load_state_dict(checkpoint["ema"])
    with tempfile.TemporaryDirectory(dir=model_dir) as temp:
        transformer.to(torch.float16).save_pretrained(temp, safe_serialization=True)
        (model_dir / "transformer").mkdir(exist_ok=True)
        for file in Path(temp).iterdir():
            os.replace(file, model_dir / "transformer" / file.name)

    # 2. Sampling defaults; an argument left out keeps the folder's value.
    index_path = model_dir / "model_index.json"
    index = json.loads(index_path.read_text())
    index["default_num_inference_steps"] = args.steps if args.steps is not None else index.get("default_num_inference_steps", 20)
    index["default_guidance_scale"] = args.guidance if args.guidance is not None else index.get("default_guidance_scale", 5.0)
    index["default_guidance_interval"] = args.guidance_interval or index.get("default_guidance_interval", [0.0, 1.0])
    # Sampling must start from the kind of noise the transformer was trained on.
    index["noise_frame_correlation"] = checkpoint["args"].get("noise_frame_correlation") or 0.0
    index["prompt_vocabulary"] = world.caption_vocabulary()  # so the studio can say which words it never read
    temp_index = index_path.with_suffix(".tmp")
    temp_index.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    os.replace(temp_index, index_path)
    if args.shift is not None:
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(model_dir, subfolder="scheduler")
        FlowMatchEulerDiscreteScheduler.from_config(scheduler.config, shift=args.shift).save_pretrained(model_dir / "scheduler")

    run_args = checkpoint["args"]
    history.append_run(model_dir / "transformer", run_dir, checkpoint, continued=not run_args.get("transformer_size") or bool(run_args.get("init_transformer")))

    pipe = TextToVideoPipeline.from_pretrained(str(model_dir), dtype=torch.float32)  # the folder loads whole
    summary = {
        "exported": str(model_dir),
        "step": checkpoint["step"],
        "default_num_inference_steps": pipe.config.default_num_inference_steps,
        "default_guidance_scale": pipe.config.default_guidance_scale,
        "default_guidance_interval": pipe.config.default_guidance_interval,
        "shift": pipe.scheduler.config.shift,
    }
    print(json.dumps(summary))


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace):
    run_dir = Path(args.run_dir)
    if args.export:
        export_transformer(run_dir, Path(args.export), args)
        return
    if args.init_transformer and not args.transformer_size:
        raise ValueError("--init-transformer starts a new transformer: give --transformer-size too")
    if args.frame_position_lr_scale <= 0:
        raise ValueError(f"--frame-position-lr-scale must be above 0, got {args.frame_position_lr_scale}")
    if args.self_conditioning_lr_scale <= 0:
        raise ValueError(f"--self-conditioning-lr-scale must be above 0, got {args.self_conditioning_lr_scale}")
    if args.self_condition_prob is not None and not 0 <= args.self_condition_prob < 1:
        raise ValueError(f"--self-condition-prob must be at least 0 and below 1, got {args.self_condition_prob}")
    if args.self_conditioning and not args.transformer_size:
        raise ValueError("--self-conditioning builds a new transformer: give --transformer-size (and --init-transformer to keep trained weights)")
    if args.frame_position and not args.transformer_size:
        raise ValueError("--frame-position builds a new transformer: give --transformer-size (and --init-transformer to keep trained weights)")
    if args.noise_frame_correlation is not None and not 0 <= args.noise_frame_correlation < 1:
        raise ValueError(f"--noise-frame-correlation must be at least 0 and below 1, got {args.noise_frame_correlation}")
    if args.object_weight_fade < 0:
        raise ValueError(f"--object-weight-fade must be 0 or more, got {args.object_weight_fade}")
    if not 0 < args.object_weight_max_sigma <= 1:
        raise ValueError(f"--object-weight-max-sigma must be above 0 and at most 1, got {args.object_weight_max_sigma}")
    if not 0 <= args.focus_share <= 1 or (args.focus_share and not (args.focus_shapes and args.cache_latents)):
        raise ValueError(f"--focus-share must be in [0, 1] and needs --focus-shapes and --cache-latents, got {args.focus_share}")
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_flush_denormal(True)  # denormals made CPU steps 4x slower in the VAE's calibration runs
    torch.backends.cuda.matmul.allow_tf32 = True  # GPU matmuls in fp32 parts of the step
    accelerator = Accelerator(mixed_precision=precision.resolve(args.mixed_precision))
    device = accelerator.device

    # 1. Frozen parts from the model folder; the transformer from the checkpoint, a size, or the folder.
    pipe = TextToVideoPipeline.from_pretrained(args.model, dtype=torch.float32)
    vae = pipe.vae.to(device).eval().requires_grad_(False)
    pipe.text_encoder.to(device)
    fingerprint = vae_fingerprint(vae)
    checkpoint_path = run_dir / "checkpoint.pt"
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False) if checkpoint_path.exists() else None
    if args.noise_frame_correlation is None:  # the noise the run, or else the folder's transformer, trained on
        trained_on = checkpoint["args"].get("noise_frame_correlation") if checkpoint is not None else None
        args.noise_frame_correlation = trained_on if trained_on is not None else pipe.config.noise_frame_correlation
    torch.manual_seed(args.seed)  # a new transformer's initial weights
    if checkpoint is not None:
        model = SpatioTemporalTransformer.from_config(plain_config(checkpoint["config"]))
        if checkpoint["vae"] != fingerprint:
            accelerator.print(f"warning: {args.model}/vae is not the VAE this run started with; the transformer now learns other latents")
    elif args.transformer_size:
        # A token covers presets.PIXEL_MULTIPLE pixels on a side whatever the VAE: a 4x VAE gets 4x4 patches,
        # so a finer latent keeps small objects without making attention 4x longer.
        patch = max(1, presets.PIXEL_MULTIPLE // vae.spatial_compression_ratio)
        model = transformer_from_size(
            args.transformer_size, in_channels=vae.config.latent_channels, patch_size=(1, patch, patch), refiner_channels=args.refiner_channels,
            frame_position_embedding=args.frame_position, self_conditioning=args.self_conditioning,
        )
        if args.init_transformer:
            accelerator.print(start_from_blocks(model, SpatioTemporalTransformer.from_pretrained(Path(args.init_transformer) / "transformer")))
    else:
        model = pipe.transformer
    model.train()
    if not model.config.get("self_conditioning"):
        args.self_condition_prob = None  # no second input to train
    elif args.self_condition_prob is None:
        args.self_condition_prob = 0.5
    if args.train_refiner_only:
        if model.refiner is None:
            raise ValueError("--train-refiner-only: this transformer has no refiner; give --refiner-channels with --transformer-size")
        # The transformer is frozen, so backward runs through the refiner alone: a step costs about a forward.
        model.requires_grad_(False)
        model.refiner.requires_grad_(True)
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    # The frame position and the self-conditioning embedding start at zero among trained weights, and
    # at the trained weights' rate they barely moved (largest weight 0.007 after 660 and 686 steps), so
    # they learn at a multiple of --lr.
    new_inputs = {"frame_position.": args.frame_position_lr_scale, "self_condition_embed.": args.self_conditioning_lr_scale}
    param_groups = [{"params": [p for name, p in trainable if not name.startswith(tuple(new_inputs))], "lr_scale": 1.0}]
    param_groups += [{"params": [p for name, p in trainable if name.startswith(prefix)], "lr_scale": scale} for prefix, scale in new_inputs.items()]
    optimizer = torch.optim.AdamW([group for group in param_groups if group["params"]], lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.99))
    step = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        ema.load_state_dict(checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step = checkpoint["step"]
        accelerator.print(f"resumed from step {step}")
    model, optimizer = accelerator.prepare(model, optimizer)  # not the data: every process draws its own batches
    ema.to(device)
    # Contact sheets sample the EMA weights with the folder's defaults unless --steps/--guidance/--shift say otherwise.
    scheduler = pipe.scheduler
    if args.shift is not None:
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config, shift=args.shift)
    sampler = TextToVideoPipeline(
        vae=vae,
        transformer=ema,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        scheduler=scheduler,
        default_num_inference_steps=pipe.config.default_num_inference_steps,
        default_guidance_scale=pipe.config.default_guidance_scale,
        default_guidance_interval=args.guidance_interval or pipe.config.default_guidance_interval,
        noise_frame_correlation=args.noise_frame_correlation,
    )
    sampler.set_progress_bar_config(disable=True)
    accelerator.print(f"transformer: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters on {device} x {accelerator.num_processes}")

    # 2. Data: buckets; cached latents or clips rendered on the fly (seeded by the step and the
    #    process, so a resumed run and every GPU see new clips).
    buckets = make_buckets(vae, accelerator.unwrap_model(model).config.patch_size, args)
    text_states = TextStates(pipe.tokenizer, pipe.text_encoder, args.text_cache)
    rng = np.random.default_rng([args.seed, step, accelerator.process_index])
    torch.manual_seed(args.seed + step + 1_000_003 * accelerator.process_index)
    if args.cache_latents:
        compression = (vae.temporal_compression_ratio, vae.spatial_compression_ratio)
        cache = LatentCache(run_dir / "latents", buckets, args.cache_latents, fingerprint, compression, args.focus_shapes, args.focus_share)
        # bf16 encodes 3x faster on an AVX512-BF16 CPU and its latents differ from fp32 by under 1% of their std,
        # far below the noise the transformer learns to remove.
        encode_in_bf16 = precision.resolve(args.encode_precision, slow="fp32") == "bf16"
        encoder = copy.deepcopy(vae).to(torch.bfloat16) if encode_in_bf16 else vae
        cache.build(encoder, args.seed, args.encode_batch, accelerator)
        del encoder
        accelerator.wait_for_everyone()
        cache.load()
        batches = (cache.sample(rng) for _ in itertools.count())
    else:
        workers = args.workers if args.workers is not None else (min(8, (os.cpu_count() or 2) - 1) if torch.cuda.is_available() else 0)
        dataset = WorldBatches(buckets, [args.seed, step, accelerator.process_index], (vae.temporal_compression_ratio, vae.spatial_compression_ratio))
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=torch.cuda.is_available())
        batches = ((index, encode_latents(vae, frames), captions, masks) for index, frames, captions, masks in loader)
    accelerator.print(f"{len(buckets)} buckets, batch {min(b.batch_size for b in buckets)} to {max(b.batch_size for b in buckets)} videos")

    # 3. Train for the time budget.
    log = open(run_dir / "log.jsonl", "a") if accelerator.is_main_process else None
    started = last_save = last_log = time.time()
    steps_at_last_log = step
    window = []

    def save():
        if accelerator.is_main_process:
            save_checkpoint(checkpoint_path, accelerator.unwrap_model(model), ema, optimizer, step, args, fingerprint)
            if args.sample_prompts:
                contact_sheet(sampler, run_dir / "contact_sheet.png", args)
        accelerator.wait_for_everyone()

    while True:
        # Every process stops and saves at the same step (one that stopped alone would leave the
        # others waiting in DDP's all-reduce): the clocks are read on all and agreed on.
        out_of_time = time.time() - started >= args.minutes * 60 or (args.max_steps is not None and step >= args.max_steps)
        flags = torch.tensor([out_of_time, time.time() - last_save >= args.save_minutes * 60], dtype=torch.float32, device=device)
        done, save_due = (accelerator.reduce(flags, reduction="sum") > 0).tolist()
        if done:
            break
        if save_due:
            save()
            last_save = time.time()

        index, latents, captions, object_mask = next(batches)
        latents, object_mask = latents.to(device, non_blocking=True), torch.as_tensor(object_mask).to(device, non_blocking=True)
        text, text_mask, pooled = text_states(captions, device)
        frame_rate = torch.full((latents.shape[0],), float(buckets[index].fps), device=device)
        lr = learning_rate(step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with accelerator.autocast():
            loss, parts = flow_matching_loss(model, latents, text, text_mask, pooled, frame_rate, args, object_mask)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        with torch.no_grad():
            decay = min(args.ema_decay, (1 + step) / (10 + step))  # a short EMA at first, so early samples mean something
            for p_ema, p in zip(ema.parameters(), accelerator.unwrap_model(model).parameters()):
                p_ema.lerp_(p.detach(), 1 - decay)
        step += 1
        window.append({"loss": loss.item(), "grad_norm": float(grad_norm), **parts})

        if step % args.log_every == 0 and accelerator.is_main_process:
            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            seconds_per_step = (time.time() - last_log) / (step - steps_at_last_log)
            record = {"step": step, "minutes": round((time.time() - started) / 60, 2), "lr": lr, "sec_per_step": round(seconds_per_step, 3), **mean}
            window, last_log, steps_at_last_log = [], time.time(), step
            accelerator.print(json.dumps(record))
            log.write(json.dumps(record) + "\n")
            log.flush()

    save()
    accelerator.print(json.dumps({"step": step, "minutes": round((time.time() - started) / 60, 2), "saved": str(checkpoint_path)}))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/model", help="model folder: the VAE, MiniLM, scheduler (and the transformer to start from)")
    parser.add_argument("--run-dir", default="runs/dit", help="checkpoints, logs, contact sheets, latent cache (git-ignored)")
    parser.add_argument("--export", default=None, help="write the run's EMA transformer and sampling defaults into this model folder and stop")
    parser.add_argument("--transformer-size", choices=list(TRANSFORMER_SIZES), default=None, help="start a new transformer of this size instead of the folder's")
    parser.add_argument(
        "--init-transformer", default=None,
        help="with --transformer-size: start from the blocks of this model folder's transformer (trained on another VAE's latents)",
    )
    parser.add_argument("--refiner-channels", type=int, default=0, help="with --transformer-size: add a conv refiner of this width (0: none)")
    parser.add_argument(
        "--frame-position", action="store_true",
        help="with --transformer-size: tell every token where it is in the frame (starts at zero, so --init-transformer keeps the trained predictions)",
    )
    parser.add_argument(
        "--self-conditioning", action="store_true",
        help="with --transformer-size: give the transformer its previous clean estimate as an input (starts at zero, so --init-transformer keeps the trained predictions)",
    )
    parser.add_argument(
        "--self-condition-prob", type=float, default=None,
        help="share of training videos given the model's own clean estimate, for a self-conditioning transformer (default 0.5; the rest get none)",
    )
    parser.add_argument("--self-conditioning-lr-scale", type=float, default=10.0, help="the self-conditioning embedding's learning rate, as a multiple of --lr")
    parser.add_argument("--frame-position-lr-scale", type=float, default=10.0, help="the frame position's learning rate, as a multiple of --lr")
    parser.add_argument("--train-refiner-only", action="store_true", help="freeze everything but the refiner (a transformer just given one)")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this run")
    parser.add_argument("--max-steps", type=int, default=None, help="stop at this step (counted over resumes)")
    # data
    parser.add_argument("--quality", choices=list(presets.QUALITY_PRESETS), default=presets.DEFAULT_QUALITY, help="resolution of the buckets")
    parser.add_argument("--aspects", nargs="+", choices=list(presets.ASPECT_RATIOS), default=list(presets.ASPECT_RATIOS))
    parser.add_argument("--durations", nargs="+", type=float, default=[1.0, 2.0, 3.0, 4.0], help="seconds")
    parser.add_argument("--fps", nargs="+", type=int, choices=presets.FPS_CHOICES, default=list(presets.FPS_CHOICES))
    parser.add_argument("--batch-size", type=int, default=8, help="videos per batch at 16:9, 2 s, 15 fps; other buckets hold as many tokens")
    parser.add_argument("--cache-latents", type=int, default=0, help="encode this many clips per bucket once and train on them (0: render every batch)")
    parser.add_argument(
        "--focus-shapes", nargs="+", default=[], choices=list(world.SHAPES),
        help="shapes to show more of (see --focus-share); generated stars are read right far less often than other shapes",
    )
    parser.add_argument("--focus-share", type=float, default=0.0, help="share of cached clips drawn from those holding a --focus-shapes object")
    parser.add_argument("--encode-batch", type=int, default=8, help="clips per VAE call while building the cache")
    parser.add_argument(
        "--encode-precision", choices=["auto", "fp32", "bf16"], default="auto", help="VAE precision while building the cache (auto: bf16 where it is native)"
    )
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers rendering clips (default: 0 on CPU, up to 8 with a GPU)")
    parser.add_argument("--text-cache", type=int, default=4096, help="captions whose MiniLM states are kept")
    # loss
    parser.add_argument("--logit-mean", type=float, default=0.0, help="noise levels s = sigmoid(N(mean, std)), as SD3")
    parser.add_argument("--logit-std", type=float, default=1.0)
    parser.add_argument("--object-weight", type=float, default=4.0, help="extra loss weight on latents that cover an object")
    parser.add_argument(
        "--object-weight-fade", type=float, default=0.0,
        help="scale the extra object weight by (1 - sigma)**FADE, so it counts only at low noise levels (0: the same at every level)",
    )
    parser.add_argument(
        "--object-weight-max-sigma", type=float, default=1.0,
        help="give the extra object weight only to noise levels at or below this sigma (1: every level)",
    )
    parser.add_argument(
        "--temporal-weight", type=float, default=0.0, help="weight of a loss on the frame-to-frame changes of the predicted clean latents (0: off)"
    )
    parser.add_argument(
        "--noise-frame-correlation",
        type=float,
        default=None,
        help="share of the noise's variance that all latent frames of a video share (PYoCo's mixed noise; default: the folder's, 0 for independent frames)",
    )
    parser.add_argument("--context-prob", type=float, default=0.3, help="share of videos whose first latent frames are clean context")
    parser.add_argument(
        "--frame-noise-prob", type=float, default=0.0, help="share of videos whose latent frames each draw their own noise level (0: one level per video)"
    )
    # optimisation
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-steps", type=int, default=250)
    parser.add_argument("--decay-steps", type=int, default=0, help="cosine decay to lr / 10 over this many steps (0: constant after warm-up)")
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument(
        "--mixed-precision", choices=["auto", "no", "bf16", "fp16"], default="auto",
        help="autocast (auto: bf16 where it is native: it helps an AVX512-BF16 CPU, small, batch 8: 2.3 -> 1.9 s/step; an AVX2 CPU emulates its matmuls ~90x slower)",
    )
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute blocks in backward: less memory, ~15%% more time on a CPU")
    # logging, samples and export
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--save-minutes", type=float, default=10.0, help="checkpoint and contact sheet this often")
    parser.add_argument("--sample-prompts", type=int, default=4, help="fixed prompts in the contact sheet, plus one continuation (0: no contact sheets)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps for contact sheets and the exported default (default: the folder's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale for contact sheets and the exported default (default: the folder's)")
    parser.add_argument("--shift", type=float, default=None, help="scheduler shift for contact sheets and the export (default: the folder's)")
    parser.add_argument(
        "--guidance-interval", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
        help="noise levels (sigma) at which guidance applies, for contact sheets and the exported default (default: the folder's)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.guidance_interval is not None:
        try:
            check_guidance_interval(args.guidance_interval, "--guidance-interval")
        except ValueError as error:
            parser.error(str(error))
    return args


if __name__ == "__main__":
    main(parse_args())
