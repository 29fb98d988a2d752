"""Train the causal video VAE (pipeline/vae.py) on clips of the procedural world.

    python -m training.train_vae --run-dir runs/vae --minutes 90           # train (resumes if runs/vae has a checkpoint)
    python -m training.train_vae --run-dir runs/vae --export assets/model  # EMA weights -> assets/model/vae (fp16)

One script for one CPU, one GPU or many (accelerate). What it does, top to bottom:

1. Clips come from a rolling buffer of rendered world clips of every aspect bucket: a few new clips
   replace the oldest at every step, so rendering costs little and the data never repeats for long.
2. Training samples are random crops of 1 + 4k frames, most of them centred near an object: the
   objects are a few percent of the pixels, and a crop of sky teaches nothing about stars.
3. The loss keeps small objects and exact colours: L1 + MSE with a heavy weight on (dilated) object
   pixels, plus an L1 loss on spatial gradients so edges and corners stay sharp, plus a small KL;
   optionally (--adversarial-weight) a patch critic, which L1 and MSE lack, against blurred points.
   With --freeze-encoder, --latent-noise decodes latents with noise added, so the decoder learns to
   turn the residual noise a transformer's samples end with (eval.denoise) into clean frames.
4. An EMA of the weights is what gets evaluated and exported.
5. Every few minutes: a checkpoint (model, EMA, optimizer, step, args), a log line, a contact sheet
   of reconstructions, and the reconstruction PSNR on held-out clips (whole frame and object pixels).
"""

import argparse
import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from einops import rearrange
from PIL import Image

from pipeline import presets
from pipeline.vae import CausalVideoVAE
from training import history, precision
from training.init_model import copy_matching_weights
from training.world import SHAPES, render, sample_scene

EVAL_SEED_OFFSET = 1_000_000_000  # evaluation clips use seeds above this; training seeds stay below


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


def render_world_clip(seed: int, aspect: str, num_frames: int, fps: int = 15, quality: str = "fast"):
    """(frames uint8 (T, H, W, 3), object mask bool (T, H, W)) of one world clip."""
    return render_scene_clip(sample_scene(np.random.default_rng(seed)), aspect, num_frames, fps, quality)


def render_scene_clip(scene, aspect: str, num_frames: int, fps: int = 15, quality: str = "fast"):
    """(frames, object mask) of a given scene, as render_world_clip."""
    clip = render(scene, *presets.resolution(aspect, quality), num_frames, fps)
    return clip.frames, clip.object_masks


def to_model_space(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., T, H, W, 3) -> float (..., 3, T, H, W) in [-1, 1]."""
    x = torch.from_numpy(frames).float().div(127.5).sub(1)
    return x.movedim(-1, -4)


class ClipBuffer:
    """A rolling buffer of rendered clips from which random crops are cut."""

    def __init__(self, size: int, clip_frames: int, fps_choices, rng: np.random.Generator, focus_shapes=(), focus_share: float = 0.0):
        self.rng = rng
        self.clip_frames = clip_frames
        self.fps_choices = fps_choices
        self.focus_shapes = tuple(focus_shapes)
        self.focus_share = focus_share
        self.clips = [self._new_clip() for _ in range(size)]
        self.next_slot = 0

    def _new_clip(self):
        aspect = self.rng.choice(list(presets.ASPECT_RATIOS))
        fps = int(self.rng.choice(self.fps_choices))
        return render_scene_clip(self.new_scene(), aspect, self.clip_frames, fps)

    def new_scene(self):
        def draw():
            return sample_scene(np.random.default_rng(int(self.rng.integers(EVAL_SEED_OFFSET))))

        scene = draw()
        # Redraw until a focus shape is in the scene, so the loss sees more of the shapes round trips
        # lose (stars, small triangles). Without focus the random stream is as before.
        focused = self.focus_shapes and self.rng.random() < self.focus_share
        while focused and not scene.holds_shape(self.focus_shapes):
            scene = draw()
        return scene

    def refresh(self, count: int):
        for _ in range(count):
            self.clips[self.next_slot] = self._new_clip()
            self.next_slot = (self.next_slot + 1) % len(self.clips)

    def sample_batch(self, batch_size: int, crop_frames: int, crop_size: int, object_centred: float):
        """(video (B, 3, T, S, S) in [-1, 1], object mask (B, 1, T, S, S))."""
        videos, masks = [], []
        for _ in range(batch_size):
            frames, mask = self.clips[self.rng.integers(len(self.clips))]
            t0 = self.rng.integers(frames.shape[0] - crop_frames + 1)
            frames, mask = frames[t0 : t0 + crop_frames], mask[t0 : t0 + crop_frames]
            height, width = frames.shape[1:3]
            size_y, size_x = min(crop_size, height), min(crop_size, width)
            object_pixels = np.argwhere(mask[0])
            if len(object_pixels) and self.rng.random() < object_centred:
                cy, cx = object_pixels[self.rng.integers(len(object_pixels))]
                cy += self.rng.integers(-size_y // 4, size_y // 4 + 1)
                cx += self.rng.integers(-size_x // 4, size_x // 4 + 1)
            else:
                cy, cx = self.rng.integers(height), self.rng.integers(width)
            y0 = int(np.clip(cy - size_y // 2, 0, height - size_y))
            x0 = int(np.clip(cx - size_x // 2, 0, width - size_x))
            videos.append(frames[:, y0 : y0 + size_y, x0 : x0 + size_x])
            masks.append(mask[:, y0 : y0 + size_y, x0 : x0 + size_x])
        video = to_model_space(np.stack(videos))  # (B, 3, T, S, S)
        mask = torch.from_numpy(np.stack(masks))[:, None].float()  # (B, 1, T, S, S)
        return video, mask


# ------------------------------------------------------------------------------------------------
# Loss and metrics
# ------------------------------------------------------------------------------------------------


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow a (B, 1, T, H, W) mask by `pixels` in space, so object edges count as object."""
    kernel = 2 * pixels + 1
    return F.max_pool3d(mask, (1, kernel, kernel), stride=1, padding=(0, pixels, pixels))


def spatial_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def reconstruction_loss(reconstruction, target, object_mask, posterior, args) -> tuple[torch.Tensor, dict]:
    weight = 1.0 + args.object_weight * dilate(object_mask, 1)  # (B, 1, T, H, W)
    error = reconstruction - target
    pixel = ((error.abs() + error.pow(2)) * weight).mean() / weight.mean()
    (gy_rec, gx_rec), (gy_tgt, gx_tgt) = spatial_gradients(reconstruction), spatial_gradients(target)
    edge = ((gy_rec - gy_tgt).abs() * weight[..., 1:, :]).mean() + ((gx_rec - gx_tgt).abs() * weight[..., :, 1:]).mean()
    kl = posterior.kl().mean() / reconstruction[0].numel()  # per pixel value, so the weight is size-free
    loss = pixel + args.edge_weight * edge + args.kl_weight * kl
    return loss, {"pixel": pixel.item(), "edge": edge.item(), "kl": kl.item()}


class FrameDiscriminator(nn.Module):
    """A small PatchGAN on single frames: one real/fake score per ~30-pixel patch.

    L1 and MSE are content with the average of every plausible edge, so a star's points come back as
    a round blob; a critic of local patches is the usual cure (taming-transformers, SD's VAE). It sees
    frames, not clips: sharpness is a per-frame property and 2D convolutions are cheap on a CPU.
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers, previous = [], 3
        for index, width in enumerate(channels):
            stride = 2 if index < len(channels) - 1 else 1
            layers += [nn.Conv2d(previous, width, 4, stride=stride, padding=1), nn.GroupNorm(8, width) if index else nn.Identity(), nn.LeakyReLU(0.2)]
            previous = width
        layers.append(nn.Conv2d(previous, 1, 4, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.layers(rearrange(video, "b c t h w -> (b t) c h w"))  # (B*T, 1, h', w') scores


def discriminator_loss(discriminator: FrameDiscriminator, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hinge loss: real patches above +1, reconstructed ones below -1."""
    real, fake = discriminator(target), discriminator(reconstruction.detach())
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def adversarial_term(discriminator, reconstruction, reconstruction_loss_value, last_layer_weight, weight: float) -> tuple[torch.Tensor, float]:
    """The generator's adversarial loss, scaled so its gradient at the decoder's last layer is
    `weight` times the reconstruction loss's there (taming-transformers' adaptive weight): the critic
    sharpens edges without ever outvoting the pixels."""
    generator_loss = -discriminator(reconstruction).mean()
    reconstruction_grad = torch.autograd.grad(reconstruction_loss_value, last_layer_weight, retain_graph=True)[0]
    generator_grad = torch.autograd.grad(generator_loss, last_layer_weight, retain_graph=True)[0]
    scale = (reconstruction_grad.norm() / (generator_grad.norm() + 1e-4)).clamp(max=1e4).detach()
    return weight * scale * generator_loss, generator_loss.item()


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB of videos in [-1, 1] (computed on the [0, 1] scale), optionally on masked pixels only."""
    squared = ((a - b) / 2).pow(2)
    if mask is not None:
        mask = mask.expand_as(squared)
        mse = (squared * mask).sum() / mask.sum().clamp(min=1)
    else:
        mse = squared.mean()
    return float(10 * torch.log10(1 / mse.clamp(min=1e-10)))


@torch.no_grad()
def reconstruction_metrics(vae: CausalVideoVAE, num_clips: int = 16, num_frames: int = 17, seed_offset: int = EVAL_SEED_OFFSET):
    """PSNR of whole held-out world clips (every aspect bucket) and of their object pixels (edges included)."""
    aspects = list(presets.ASPECT_RATIOS)
    whole, objects = [], []
    for index in range(num_clips):
        frames, mask = render_world_clip(seed_offset + index, aspects[index % len(aspects)], num_frames)
        video = to_model_space(frames)[None].to(vae.device, vae.dtype)
        reconstruction = vae.decode(vae.encode(video).latent_dist.mode()).sample.float().cpu()
        object_mask = dilate(torch.from_numpy(mask)[None, None].float(), 1)
        whole.append(psnr(reconstruction, video.float().cpu()))
        objects.append(psnr(reconstruction, video.float().cpu(), object_mask))
    return {"psnr": float(np.mean(whole)), "psnr_objects": float(np.mean(objects))}


@torch.no_grad()
def latent_statistics(vae: CausalVideoVAE, num_clips: int = 48, num_frames: int = 17) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the posterior means over world clips (for latent normalisation)."""
    aspects = list(presets.ASPECT_RATIOS)
    latents = []
    for index in range(num_clips):
        frames, _ = render_world_clip(2 * EVAL_SEED_OFFSET + index, aspects[index % len(aspects)], num_frames)
        video = to_model_space(frames)[None].to(vae.device, vae.dtype)
        z = vae.encode(video).latent_dist.mode().float()  # (1, C, t, h, w)
        latents.append(z.movedim(1, -1).reshape(-1, z.shape[1]))
    z = torch.cat(latents)  # (N, C)
    return z.mean(0).tolist(), z.std(0).clamp(min=1e-3).tolist()


def contact_sheet(vae: CausalVideoVAE, path: Path, num_clips: int = 4, num_frames: int = 9):
    """A PNG: for a few held-out clips, every other frame, the original above its reconstruction."""
    rows = []
    for index, aspect in enumerate(["16:9", "1:1", "9:16", "21:9"][:num_clips]):
        frames, _ = render_world_clip(EVAL_SEED_OFFSET + 100 + index, aspect, num_frames)
        video = to_model_space(frames)[None].to(vae.device, vae.dtype)
        with torch.no_grad():
            reconstruction = vae.decode(vae.encode(video).latent_dist.mode()).sample.float().cpu()[0]
        recon_frames = ((reconstruction.movedim(0, -1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        for source in (frames, recon_frames):
            row = np.concatenate([np.pad(f, ((2, 2), (2, 2), (0, 0))) for f in source[::2]], axis=1)
            rows.append(row)
    width = max(row.shape[1] for row in rows)
    sheet = np.concatenate([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows], axis=0)
    Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST).save(path)


# ------------------------------------------------------------------------------------------------
# Checkpoints and export
# ------------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, model, ema, optimizer, step: int, args, best: dict, critic: tuple | None = None, anchor_encoder=None):
    temp = path.with_suffix(".tmp")
    state = {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "args": vars(args), "best": best, "config": dict(model.config), "hardware": history.hardware()}
    if critic is not None:
        state["discriminator"], state["discriminator_optimizer"] = critic[0].state_dict(), critic[1].state_dict()
    if anchor_encoder is not None:
        state["anchor_encoder"] = anchor_encoder.state_dict()
    torch.save(state, temp)
    os.replace(temp, path)  # a checkpoint is whole or absent, even if the run is killed mid-write


def export_vae(run_dir: Path, model_dir: Path):
    """Write the run's EMA weights, with measured latent statistics, to model_dir/vae in fp16."""
    checkpoint = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    config = {k: v for k, v in checkpoint["config"].items() if not k.startswith("_")}
    vae = CausalVideoVAE.from_config(config)
    vae.load_state_dict(checkpoint["ema"])
    vae.eval()
    run_args = checkpoint["args"]
    keeps_latent_space = bool(run_args.get("freeze_encoder") or run_args.get("anchor_weight"))
    if not keeps_latent_space:
        # A frozen or anchored encoder keeps the latent space, statistics included, that a
        # transformer was trained on; only a freely retrained encoder gets its statistics measured anew.
        mean, std = latent_statistics(vae)
        vae.register_to_config(latents_mean=mean, latents_std=std)
    metrics = reconstruction_metrics(vae)
    vae.to(torch.float16).save_pretrained(model_dir / "vae", safe_serialization=True)
    history.append_run(model_dir / "vae", run_dir, checkpoint, continued=bool(run_args.get("init_from")) or keeps_latent_space)
    print(json.dumps({"exported": str(model_dir / "vae"), "step": checkpoint["step"], **metrics}))


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def spatial_downsamples(compression: int, levels: int) -> tuple[bool, ...]:
    """down_spatial of a new VAE: the 2x2 pixel-unshuffle gives the first 2x, then one halving per level."""
    halvings = compression.bit_length() - 2  # log2(compression) - 1
    if halvings > levels:
        raise ValueError(f"--spatial-compression {compression} needs {halvings} levels in --channels, got {levels}")
    return tuple(level < halvings for level in range(levels))


def with_spatial_compression(trained: CausalVideoVAE, compression: int) -> CausalVideoVAE:
    """A VAE like `trained` but with another spatial compression, starting from its weights.

    Only the spatial down/upsampling convolutions of the dropped (or added) halvings differ; every
    other layer keeps its trained weights, so colours, textures and the latent head are not learnt
    again from noise. The latent statistics are measured anew at export.
    """
    config = {k: v for k, v in trained.config.items() if not k.startswith("_")}
    config["down_spatial"] = spatial_downsamples(compression, levels=len(config["block_out_channels"]))
    model = CausalVideoVAE.from_config(config)
    kept = copy_matching_weights(model, trained)
    print(f"--spatial-compression {compression}: {len(kept)} of {len(model.state_dict())} tensors from the {trained.spatial_compression_ratio}x VAE")
    return model


def with_latent_channels(trained: CausalVideoVAE, latent_channels: int) -> CausalVideoVAE:
    """A VAE like `trained` with more latent channels, decoding exactly as `trained` at the start.

    Every layer but the latent head and the decoder's first convolution keeps its trained weights.
    The old channels keep theirs too; the decoder reads the new ones through zero weights, so the
    grown VAE starts with the trained one's reconstructions, and the new channels (a fresh
    encoder head, nearly deterministic like a new VAE's) gain weight only where they carry detail
    the old ones lost (stars' points among frames that share a latent frame).
    """
    old = trained.config.latent_channels
    if latent_channels <= old:
        raise ValueError(f"--latent-channels can only grow a trained VAE, from {old}, got {latent_channels}")
    config = {k: v for k, v in trained.config.items() if not k.startswith("_")}
    config.update(latent_channels=latent_channels, latents_mean=None, latents_std=None)  # measured anew at export
    model = CausalVideoVAE.from_config(config)
    copy_matching_weights(model, trained)
    # The encoder head's outputs are [means, log-variances]: old channel c goes to c, old
    # log-variance c to latent_channels + c, in both the spatial and the temporal convolution.
    old_rows = torch.cat([torch.arange(old), old + torch.arange(old)])
    new_rows = torch.cat([torch.arange(old), latent_channels + torch.arange(old)])
    head, trained_head = model.encoder.conv_out, trained.encoder.conv_out
    with torch.no_grad():
        head.spatial.weight[new_rows] = trained_head.spatial.weight[old_rows]
        head.spatial.bias[new_rows] = trained_head.spatial.bias[old_rows]
        head.temporal.weight[new_rows] = 0.0
        head.temporal.weight[new_rows[:, None], new_rows] = trained_head.temporal.weight[old_rows[:, None], old_rows]
        head.temporal.bias[new_rows] = trained_head.temporal.bias[old_rows]
        reader = model.decoder.conv_in.spatial
        reader.weight[:, :old] = trained.decoder.conv_in.spatial.weight
        reader.weight[:, old:] = 0.0
    print(f"--latent-channels {latent_channels}: grown from the {old}-channel VAE; it decodes as that one at the start")
    return model


def main(args: argparse.Namespace):
    run_dir = Path(args.run_dir)
    if args.export:
        export_vae(run_dir, Path(args.export))
        return
    if args.latent_noise < 0 or (args.latent_noise and not args.freeze_encoder):
        raise ValueError(f"--latent-noise must be 0 or more and needs --freeze-encoder (a trained encoder would outgrow the noise), got {args.latent_noise}")
    if not 0 <= args.focus_share <= 1 or (args.focus_share and not args.focus_shapes):
        raise ValueError(f"--focus-share must be in [0, 1] and needs --focus-shapes, got {args.focus_share}")
    if args.anchor_weight < 0 or (args.anchor_weight and args.freeze_encoder):
        raise ValueError(f"--anchor-weight must be 0 or more and cannot go with --freeze-encoder (a frozen encoder cannot drift), got {args.anchor_weight}")
    if args.anchor_weight and not args.init_from and not (run_dir / "checkpoint.pt").exists():
        raise ValueError("--anchor-weight needs an encoder to stay near: give --init-from, or resume an anchored run")
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_flush_denormal(True)  # denormals made CPU steps 4x slower in the calibration runs

    # 1. Model, EMA, optimizer; resume if the run folder has a checkpoint.
    accelerator = Accelerator(mixed_precision=precision.resolve(args.mixed_precision))
    checkpoint_path = run_dir / "checkpoint.pt"
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False) if checkpoint_path.exists() else None
    if checkpoint is not None:
        model = CausalVideoVAE.from_config({k: v for k, v in checkpoint["config"].items() if not k.startswith("_")})
    elif args.init_from:
        # A fresh machine has no run folder: go on from the weights a model folder ships
        # (the optimizer state starts anew).
        model = CausalVideoVAE.from_pretrained(Path(args.init_from) / "vae", torch_dtype=torch.float32)
        if args.spatial_compression is not None and args.spatial_compression != model.spatial_compression_ratio:
            model = with_spatial_compression(model, args.spatial_compression)
        if args.latent_channels not in (None, model.config.latent_channels):
            if args.freeze_encoder or args.anchor_weight:
                raise ValueError("--latent-channels makes a new latent space: it cannot go with --freeze-encoder or --anchor-weight, which keep the old one")
            model = with_latent_channels(model, args.latent_channels)
    else:
        torch.manual_seed(args.seed)
        model = CausalVideoVAE(
            block_out_channels=tuple(args.channels),
            layers_per_block=args.layers_per_block,
            latent_channels=args.latent_channels or 16,
            down_spatial=spatial_downsamples(args.spatial_compression or 8, levels=len(args.channels)),
        )
    if args.freeze_encoder:
        if checkpoint is None and not args.init_from:
            raise ValueError("--freeze-encoder needs a trained encoder: give --init-from or resume a run")
        model.encoder.requires_grad_(False)
    anchor_encoder = None
    if args.anchor_weight:
        # The encoder the run started from, frozen: its latents are the space a transformer was trained on.
        if checkpoint is not None and "anchor_encoder" in checkpoint:
            anchor_encoder = copy.deepcopy(model.encoder)
            anchor_encoder.load_state_dict(checkpoint["anchor_encoder"])
        elif checkpoint is None and args.init_from:
            anchor_encoder = copy.deepcopy(model.encoder)
        else:
            raise ValueError("--anchor-weight needs the encoder to stay near: start a new run with --init-from, or resume an anchored one")
        anchor_encoder.requires_grad_(False).eval()
    ema = copy.deepcopy(model).requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    step, best = 0, {}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        ema.load_state_dict(checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, best = checkpoint["step"], checkpoint.get("best", {})
        accelerator.print(f"resumed from step {step}")
    critic = None
    if args.adversarial_weight > 0:
        discriminator = FrameDiscriminator()
        discriminator_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.5, 0.9))
        if checkpoint is not None and "discriminator" in checkpoint:
            discriminator.load_state_dict(checkpoint["discriminator"])
            discriminator_optimizer.load_state_dict(checkpoint["discriminator_optimizer"])
        critic = accelerator.prepare(discriminator, discriminator_optimizer)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema.to(accelerator.device)
    if anchor_encoder is not None:
        anchor_encoder.to(accelerator.device)
    # Only trained weights are averaged: a frozen encoder is left bit for bit (a lerp turns its -0.0 into +0.0).
    ema_pairs = [(p_ema, p) for p_ema, p in zip(ema.parameters(), accelerator.unwrap_model(model).parameters()) if p.requires_grad]
    accelerator.print(f"VAE: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {sum(p.numel() for p in trained) / 1e6:.2f}M trained, on {accelerator.device}")

    # 2. Data: a rolling buffer of clips (seeded by the step so a resumed run sees new clips).
    rng = np.random.default_rng(args.seed + step)
    buffer = ClipBuffer(args.buffer_clips, args.clip_frames, presets.FPS_CHOICES, rng, args.focus_shapes, args.focus_share)

    # 3. Train for the time budget.
    log = open(run_dir / "log.jsonl", "a")
    started = last_save = time.time()
    window = []
    _, latent_std = accelerator.unwrap_model(model).latent_stats(accelerator.device, torch.float32)  # the config's statistics: read once, used by --latent-noise
    while time.time() - started < args.minutes * 60 and (args.max_steps is None or step < args.max_steps):
        buffer.refresh(args.refresh_per_step)
        video, mask = buffer.sample_batch(args.batch_size, args.crop_frames, args.crop_size, args.object_centred)
        video, mask = video.to(accelerator.device), mask.to(accelerator.device)
        # Cosine decay after a short warm-up, over the whole planned run.
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / args.decay_steps))))
        for group in optimizer.param_groups:
            group["lr"] = lr
        adversarial = critic is not None and step >= args.adversarial_start
        latent_noise = None
        if args.latent_noise:
            # Per clip a level uniform in [0, --latent-noise], in units of each channel's latent std.
            latent_noise = torch.rand(video.shape[0], 1, 1, 1, 1, device=video.device) * args.latent_noise * latent_std
        with accelerator.autocast():
            reconstruction, posterior = model(video, latent_noise=latent_noise)
            reconstruction = reconstruction.float()
            loss, parts = reconstruction_loss(reconstruction, video, mask, posterior, args)
            if anchor_encoder is not None:
                with torch.no_grad():
                    anchor_mean = DiagonalGaussianDistribution(anchor_encoder(video)).mean
                drift = ((posterior.mean.float() - anchor_mean.float()) / latent_std).pow(2).mean()
                loss = loss + args.anchor_weight * drift
                parts["drift"] = drift.item()
            if adversarial:
                last_layer = accelerator.unwrap_model(model).decoder.conv_out.temporal.weight
                generator_term, parts["generator"] = adversarial_term(critic[0], reconstruction, loss, last_layer, args.adversarial_weight)
                loss = loss + generator_term
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        if adversarial:
            for group in critic[1].param_groups:
                group["lr"] = lr
            with accelerator.autocast():
                critic_loss = discriminator_loss(critic[0], reconstruction, video)
            critic[1].zero_grad(set_to_none=True)
            accelerator.backward(critic_loss)
            critic[1].step()
            parts["critic"] = critic_loss.item()
        with torch.no_grad():
            decay = min(args.ema_decay, (1 + step) / (10 + step))
            for p_ema, p in ema_pairs:
                p_ema.lerp_(p.detach(), 1 - decay)
        step += 1
        window.append({"loss": loss.item(), **parts})

        if step % args.log_every == 0:
            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            window = []
            record = {"step": step, "minutes": round((time.time() - started) / 60, 2), "lr": lr, **mean}
            accelerator.print(json.dumps(record))
            log.write(json.dumps(record) + "\n")
            log.flush()

        if time.time() - last_save > args.save_minutes * 60:
            last_save = time.time()
            ema.eval()
            metrics = reconstruction_metrics(ema, num_clips=args.eval_clips)
            contact_sheet(ema, run_dir / "contact_sheet.png")
            record = {"step": step, "eval": metrics}
            accelerator.print(json.dumps(record))
            log.write(json.dumps(record) + "\n")
            log.flush()
            save_checkpoint(checkpoint_path, accelerator.unwrap_model(model), ema, optimizer, step, args, best, critic, anchor_encoder)

    save_checkpoint(checkpoint_path, accelerator.unwrap_model(model), ema, optimizer, step, args, best, critic, anchor_encoder)
    metrics = reconstruction_metrics(ema, num_clips=args.eval_clips)
    contact_sheet(ema, run_dir / "contact_sheet.png")
    accelerator.print(json.dumps({"step": step, "final_eval": metrics}))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/vae", help="checkpoints, logs and contact sheets (git-ignored)")
    parser.add_argument("--export", default=None, help="write the run's EMA VAE into this model folder and stop")
    parser.add_argument("--init-from", default=None, help="with no checkpoint in --run-dir, start from this model folder's VAE (e.g. assets/model)")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this run")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--decay-steps", type=int, default=20000, help="steps over which the learning rate decays")
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128], help="block_out_channels of a new model")
    parser.add_argument("--layers-per-block", type=int, default=2)
    parser.add_argument(
        "--latent-channels", type=int, default=None,
        help="channels of the latent (default 16, or the --init-from VAE's); more than that VAE's grows it (see with_latent_channels)",
    )
    parser.add_argument(
        "--spatial-compression", type=int, choices=[2, 4, 8, 16], default=None,
        help="pixels per latent cell along each side (default 8, or the --init-from VAE's); 4 keeps small objects, "
        "and with --init-from a VAE of another compression starts from its weights",
    )
    parser.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="train the decoder only: the latent space, and a transformer trained on it, stay valid",
    )
    parser.add_argument(
        "--latent-noise",
        type=float,
        default=0.0,
        help="with --freeze-encoder: add Gaussian noise of up to this many latent stds before decoding, so the decoder "
        "turns the residual noise a transformer leaves (eval.denoise) into clean frames instead of speckle",
    )
    parser.add_argument(
        "--anchor-weight",
        type=float,
        default=0.0,
        help="train the encoder too, but keep its latent means near the starting encoder's (squared drift in latent stds, "
        "times this weight), so a transformer trained on the latent space stays valid while the encoder learns detail",
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop-frames", type=int, default=9, help="1 + 4k frames per training crop")
    parser.add_argument("--crop-size", type=int, default=64, help="pixels, square; 32 made the decoder invent objects on whole frames")
    parser.add_argument("--object-centred", type=float, default=0.8, help="share of crops centred near an object")
    parser.add_argument("--clip-frames", type=int, default=17)
    parser.add_argument(
        "--focus-shapes", nargs="+", default=[], choices=list(SHAPES),
        help="shapes to show more of (see --focus-share); round trips lose stars' points first",
    )
    parser.add_argument("--focus-share", type=float, default=0.0, help="share of training clips redrawn until they hold a --focus-shapes object")
    parser.add_argument("--buffer-clips", type=int, default=256)
    parser.add_argument("--refresh-per-step", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-4, help="2e-3 stalled with L1 in the loss")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--object-weight", type=float, default=8.0, help="extra loss weight on (dilated) object pixels")
    parser.add_argument("--edge-weight", type=float, default=0.1, help="weight of the spatial-gradient L1 loss")
    parser.add_argument("--kl-weight", type=float, default=1e-4)
    parser.add_argument(
        "--adversarial-weight", type=float, default=0.0,
        help="weight of a patch critic's loss relative to the reconstruction loss (0: none); sharpens star points and corners",
    )
    parser.add_argument("--adversarial-start", type=int, default=0, help="step (counted over resumes) at which the critic joins in")
    parser.add_argument("--mixed-precision", choices=["auto", "no", "bf16", "fp16"], default="auto", help="autocast (auto: bf16 where it is native)")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--save-minutes", type=float, default=5.0)
    parser.add_argument("--eval-clips", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
