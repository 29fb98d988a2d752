"""Live previews: the fitted latent -> RGB map, the clean-video estimate, and the preview strips."""

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler

from pipeline.preview import LatentPreviewer, denoised_estimate, step_estimate, synthetic_frames


class LinearVAE(torch.nn.Module):
    """A stand-in VAE whose latents are a known linear function of the colours (averaged over 8x8
    pixels) plus a bias, so the fitted map must recover the colours almost exactly."""

    spatial_compression_ratio = 8
    temporal_compression_ratio = 4

    def __init__(self, channels: int = 6):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.mix = torch.nn.Parameter(torch.randn(channels, 3, generator=generator))
        self.bias = torch.nn.Parameter(torch.randn(channels, generator=generator))

    def latent_stats(self, device=None, dtype=None):
        return torch.zeros(1, 1, 1, 1, 1), torch.full((1, 1, 1, 1, 1), 2.0)  # normalisation must be undone by the fit

    def encode(self, video):  # (B, 3, T, H, W) in [-1, 1]
        frames = video[:, :, ::4]  # (B, 3, t, H, W): one latent frame per 4 frames, the first alone
        pooled = F.avg_pool3d(frames, (1, 8, 8))  # (B, 3, t, h, w)
        z = torch.einsum("bcthw,kc->bkthw", pooled, self.mix) + self.bias.view(1, -1, 1, 1, 1)
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: z))


def test_synthetic_frames_are_colours_and_gradients_in_range():
    frames = synthetic_frames(size=48)
    assert frames.shape[1:] == (3, 48, 48) and len(frames) > 20
    assert frames.min() >= 0 and frames.max() <= 1
    solid = frames.flatten(2).std(dim=2).amax(dim=1) == 0
    assert solid.any() and not solid.all()  # both solids and gradients


@torch.no_grad()
def test_the_fit_recovers_a_linear_vaes_colours():
    vae = LinearVAE()
    previewer = LatentPreviewer(vae)
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.1, 0.6, 0.9]])  # (2, 3)
    video = colours[:, :, None, None, None].expand(2, 3, 5, 16, 24) * 2 - 1  # (B, 3, T, H, W)
    latents = vae.encode(video).latent_dist.mode() / 2  # normalised as the diffusion sees them
    frames = previewer.frames(latents)  # (B, t, H, W, 3)
    assert frames.shape == (2, 2, 16, 24, 3) and frames.dtype == np.uint8
    expected = (colours * 255).round().numpy()
    assert np.abs(frames.astype(float) - expected[:, None, None, None, :]).max() <= 2


def test_the_fit_runs_once_per_previewer(tiny_vae, monkeypatch):
    previewer = LatentPreviewer(tiny_vae)
    calls = []
    fit = previewer.fit
    monkeypatch.setattr(previewer, "fit", lambda: calls.append(1) or fit())
    first = previewer.weights
    assert previewer.weights is first and len(calls) == 1
    assert first.shape == (tiny_vae.config.latent_channels + 1, 3)


def test_strips_put_a_few_frames_side_by_side(tiny_vae):
    previewer = LatentPreviewer(tiny_vae)
    latents = torch.randn(2, 16, 9, 8, 14)  # (B, C, t, h, w): a 2 s clip at 16:9
    strips = previewer.strips(latents, max_frames=4, gap=2)
    assert len(strips) == 2 and strips[0].shape == (64, 4 * 112 + 3 * 2, 3)
    assert (strips[0][:, 112:114] == 255).all()  # the white gap
    assert previewer.strips(latents[:, :, :2])[0].shape == (64, 2 * 112 + 2, 3)  # fewer latent frames than asked


def test_the_step_estimate_is_the_clean_video_when_the_velocity_is_exact():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=2.0)
    scheduler.set_timesteps(4)
    generator = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(1, 4, 2, 3, 3, generator=generator), torch.randn(1, 4, 2, 3, 3, generator=generator)
    sigma = scheduler.sigmas[0]
    noisy = (1 - sigma) * clean + sigma * noise
    velocity = noise - clean  # what a perfect model predicts
    latents = scheduler.step(velocity, scheduler.timesteps[0], noisy, return_dict=False)[0]
    estimate = step_estimate(scheduler, 0, {"latents": latents, "noise_pred": velocity})
    torch.testing.assert_close(estimate, clean, atol=1e-5, rtol=0)
    assert step_estimate(scheduler, 0, {"latents": latents}) is latents  # no velocity: the noisy latents
    torch.testing.assert_close(denoised_estimate(noisy, velocity, sigma), clean, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_previews_take_any_float_latents(tiny_vae, dtype):
    frames = LatentPreviewer(tiny_vae).frames(torch.randn(1, 16, 2, 2, 3).to(dtype))
    assert frames.shape == (1, 2, 16, 24, 3) and frames.dtype == np.uint8


def test_previews_cost_under_a_tenth_of_a_run(tiny_pipe, tmp_path):
    """The live preview at every step must stay a small part of the run (here the tiny model, whose
    steps are the cheapest there are; on the bundled model the share is ~0.2%)."""
    from pipeline.generate import generate_videos
    from pipeline.recipe import Recipe

    previewer = LatentPreviewer(tiny_pipe.vae)
    previewer.weights  # noqa: B018  (the one-off fit happens at startup, not in a run)
    spent = []

    def on_step(pipe, step, timestep, tensors):
        started = time.perf_counter()
        previewer.strips(step_estimate(pipe.scheduler, step, tensors))
        spent.append(time.perf_counter() - started)
        return {}

    recipe = Recipe(prompt="a red ball bouncing on a black background", duration=2.0, steps=20, seed=1)
    started = time.perf_counter()
    generate_videos(tiny_pipe, [recipe], [tmp_path / "v.mp4"], on_step, ["latents", "noise_pred"])
    assert len(spent) == 20 and sum(spent) < 0.1 * (time.perf_counter() - started)
