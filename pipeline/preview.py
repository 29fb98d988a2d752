"""Cheap latent -> RGB previews for live display while a video is being denoised.

Decoding every step's latents with the VAE would cost about as much as the final decode, at every
step. Instead a single linear map takes each latent pixel's channels to an RGB colour (the idea of
ComfyUI's "latent2rgb" previews and of Stable Diffusion's approximate decoders), and the small
image is blown up to the video's size with nearest-neighbour upsampling. That is one tiny matrix
product per step: far under 10% of a step's cost.

The map is not hand-written for one VAE: it is fitted, once per VAE, by encoding synthetic frames
(solid colours and gradients) and solving least squares from their latents to their pixels averaged
over each latent pixel's footprint. It is only as good as the VAE's latents are linear in colour;
a trained VAE's are close enough to show the layout and the colours of the scene.

What is previewed at a step is the sampler's current estimate of the clean video, not the noisy
latents: with flow matching, x_t = (1 - sigma) x0 + sigma * noise and the model predicts the
velocity v = noise - x0, so x0 = x_t - sigma * v (`denoised_estimate`).
"""

import numpy as np
import torch
import torch.nn.functional as F

from .vae import CausalVideoVAE

FIT_SIZE = 48  # pixels on a side of the synthetic fitting frames: 12x12 latent pixels at 4x, cheap to encode
FIT_RANDOM_COLOURS = 16  # solid colours beyond the corners of the RGB cube
FIT_RANDOM_GRADIENTS = 16  # two-colour gradients in the four directions
FIT_BATCH = 8  # clips encoded at once; bounds the fitting's memory
RIDGE = 1e-3  # keeps the solve stable when latent channels are (nearly) collinear, as in a random VAE


def denoised_estimate(latents: torch.Tensor, velocity: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """The flow-matching estimate of the clean latents: x0 = x_sigma - sigma * v.

    Called after a scheduler step with that step's velocity and the new (next) sigma, this equals
    the estimate from before the step, since the Euler step moves along the same velocity.
    """
    return latents - sigma * velocity


def step_estimate(scheduler, step: int, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The clean-video estimate inside `callback_on_step_end(pipe, step, timestep, tensors)`.

    `tensors` holds the latents after the step and, when the pipeline was asked for it, the step's
    velocity as "noise_pred"; without it the noisy latents themselves are returned.
    """
    if "noise_pred" not in tensors:
        return tensors["latents"]
    sigma_next = scheduler.sigmas[step + 1].to(tensors["latents"].device)  # sigmas has steps + 1 entries, ending at 0
    return denoised_estimate(tensors["latents"], tensors["noise_pred"], sigma_next)


def synthetic_frames(size: int = FIT_SIZE, seed: int = 0) -> torch.Tensor:
    """Still images (N, 3, size, size) in [0, 1]: the RGB cube's corners, greys, random solid
    colours, and random two-colour gradients (horizontal, vertical and both diagonals)."""
    generator = torch.Generator().manual_seed(seed)
    corners = torch.tensor([[r, g, b] for r in (0.0, 1.0) for g in (0.0, 1.0) for b in (0.0, 1.0)])
    greys = torch.tensor([0.25, 0.5, 0.75]).unsqueeze(1).expand(3, 3)
    colours = torch.cat([corners, greys, torch.rand(FIT_RANDOM_COLOURS, 3, generator=generator)])
    solids = colours[:, :, None, None].expand(-1, -1, size, size)  # (N, 3, size, size)

    ramp = torch.linspace(0.0, 1.0, size)
    directions = [
        ramp.view(1, size).expand(size, size),  # left -> right
        ramp.view(size, 1).expand(size, size),  # top -> bottom
        (ramp.view(1, size) + ramp.view(size, 1)) / 2,  # top-left -> bottom-right
        (ramp.view(1, size) + ramp.flip(0).view(size, 1)) / 2,  # bottom-left -> top-right
    ]
    start = torch.rand(FIT_RANDOM_GRADIENTS, 3, generator=generator)
    end = torch.rand(FIT_RANDOM_GRADIENTS, 3, generator=generator)
    gradients = torch.stack(
        [
            start[i, :, None, None] + (end[i] - start[i])[:, None, None] * directions[i % len(directions)]
            for i in range(FIT_RANDOM_GRADIENTS)
        ]
    )  # (N, 3, size, size)
    return torch.cat([solids, gradients])


class LatentPreviewer:
    """Latents (B, C, t, h, w) in the diffusion's normalised space -> uint8 RGB frames.

    The fitted map (C + 1, 3), a weight per channel plus a bias, is cached on the previewer: make
    one previewer per VAE and keep it for the life of the studio.
    """

    def __init__(self, vae: CausalVideoVAE):
        self.vae = vae
        self._weights: torch.Tensor | None = None  # (C + 1, 3) float32 on the CPU, fitted on first use

    @property
    def weights(self) -> torch.Tensor:
        if self._weights is None:
            self._weights = self.fit()
        return self._weights

    @torch.no_grad()
    def fit(self) -> torch.Tensor:
        """Least squares from normalised latents to pixels (averaged over each latent pixel's
        footprint) over synthetic still clips; returns the (C + 1, 3) map."""
        vae = self.vae
        images = synthetic_frames()  # (N, 3, S, S)
        # Still clips of 1 + r frames give both kinds of latent frame: the first (coded alone) and a
        # later one (coding r frames); one map serves both.
        clip_frames = 1 + vae.temporal_compression_ratio
        param = next(vae.parameters())
        mean, std = vae.latent_stats(param.device, param.dtype)
        features, targets = [], []
        for batch in images.split(FIT_BATCH):
            clips = batch.unsqueeze(2).expand(-1, -1, clip_frames, -1, -1)  # (n, 3, T, S, S)
            z = vae.encode((clips * 2 - 1).to(param.device, param.dtype)).latent_dist.mode()  # (n, C, t, s, s)
            z = ((z - mean) / std).float().cpu()
            pooled = F.avg_pool2d(batch, vae.spatial_compression_ratio)  # (n, 3, s, s): what each latent pixel covers
            pooled = pooled.unsqueeze(2).expand(-1, -1, z.shape[2], -1, -1)  # (n, 3, t, s, s)
            features.append(z.permute(0, 2, 3, 4, 1).reshape(-1, z.shape[1]))  # (n*t*s*s, C)
            targets.append(pooled.permute(0, 2, 3, 4, 1).reshape(-1, 3))  # (n*t*s*s, 3)
        x = torch.cat(features).double()
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)  # (M, C + 1): a bias column
        y = torch.cat(targets).double()  # (M, 3)
        # Ridge-regularised normal equations; the bias (last row) is not shrunk.
        penalty = RIDGE * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
        penalty[-1, -1] = 0
        weights = torch.linalg.solve(x.T @ x + penalty, x.T @ y)  # (C + 1, 3)
        return weights.float()

    @torch.no_grad()
    def frames(self, latents: torch.Tensor, frame_indices: list[int] | None = None) -> np.ndarray:
        """uint8 RGB (B, t', H, W, 3) at the video's pixel size, one frame per latent frame
        (or only the latent frames in `frame_indices`)."""
        if frame_indices is not None:
            latents = latents[:, :, frame_indices]
        weights = self.weights.to(latents.device)
        rgb = torch.einsum("bcthw,cd->bthwd", latents.float(), weights[:-1]) + weights[-1]  # (B, t, h, w, 3)
        rgb = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        scale = self.vae.spatial_compression_ratio
        rgb = rgb.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)  # nearest: (B, t, H, W, 3)
        return rgb.numpy()

    def strips(self, latents: torch.Tensor, max_frames: int = 4, gap: int = 2) -> list[np.ndarray]:
        """One image per video: up to `max_frames` frames spread over the clip, side by side with
        `gap` white pixels between them; (H, k*W + (k-1)*gap, 3) uint8."""
        num_latent_frames = latents.shape[2]
        count = min(max_frames, num_latent_frames)
        indices = sorted({round(i * (num_latent_frames - 1) / max(count - 1, 1)) for i in range(count)})
        videos = self.frames(latents, indices)  # (B, k, H, W, 3)
        strips = []
        for video in videos:
            height = video.shape[1]
            spacer = np.full((height, gap, 3), 255, np.uint8)
            parts = [part for frame in video for part in (frame, spacer)][:-1]
            strips.append(np.concatenate(parts, axis=1))
        return strips
