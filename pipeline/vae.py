"""CausalVideoVAE: a causal (2+1)D convolutional video autoencoder.

Design (after Kling's causal 3D VAE and Wan2.1's VAE, written afresh):

* Causal in time: every temporal convolution pads on the left only, so the latent of frame k never
  depends on later frames. The first frame is coded alone, then each group of 4 frames becomes one
  latent frame (4x temporal compression by default), so a video has 1 + 4k frames.
* (2+1)D convolutions: a 3x3 spatial convolution followed by a causal 3-tap temporal one. This is
  cheaper than full 3x3x3 kernels for the same receptive field, which matters on a CPU.
* Normalisation is per voxel over channels (RMS), never over time, so causality and streaming hold.
* A 2x2 pixel-unshuffle in front of the encoder (and a shuffle after the decoder) gives the first
  2x of the spatial compression (4x in the bundled VAE, 8x in the first one) for free, as in the
  calibration runs of issue 3.
* Streaming decode: the decoder runs over a few latent frames at a time and every causal layer
  keeps the last frames it saw in a `cache` dict keyed by the layer itself. Peak memory therefore
  depends on the chunk, not on the length of the video, and the result equals a whole decode.
* Spatial tiling: frames larger than a tile are decoded in overlapping tiles blended with linear
  ramps, so large frames fit in memory.
"""

from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  (diffusers' loader looks this name up in this module)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from einops import rearrange

# A decode cache maps each causal layer to what it must remember between chunks: the last input
# frames of a temporal convolution, or a marker that the temporal upsampler has seen the first frame.
DecodeCache = dict[nn.Module, torch.Tensor | bool]


# ------------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------------


class ChannelRMSNorm(nn.Module):
    """RMS norm over channels at every (t, h, w): no statistics across frames, so it is causal."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.pow(2).mean(dim=1, keepdim=True).add(self.eps).rsqrt()
        return x * rms * self.weight.view(1, -1, 1, 1, 1)


class CausalConv3d(nn.Conv3d):
    """A 3D convolution padded in time on the left only (zeros before the first frame).

    With a `cache`, the left padding of a chunk is the end of the previous chunk instead of zeros,
    which makes chunked calls equal to one call over the whole video.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int], stride=(1, 1, 1)):
        kt, kh, kw = kernel_size
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=(0, kh // 2, kw // 2))
        self.time_context = kt - 1

    def forward(self, x: torch.Tensor, cache: DecodeCache | None = None) -> torch.Tensor:
        if self.time_context > 0:
            past = cache.get(self) if cache is not None else None
            if past is None:
                past = x.new_zeros(x.shape[0], x.shape[1], self.time_context, x.shape[3], x.shape[4])
            x = torch.cat([past, x], dim=2)  # (B, C, context + T, H, W)
            if cache is not None:
                cache[self] = x[:, :, -self.time_context :].detach()
        return super().forward(x)


class SpatioTemporalConv(nn.Module):
    """(2+1)D convolution: 3x3 in space, then a causal 3-tap convolution in time."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.spatial = nn.Conv3d(in_channels, out_channels, (1, 3, 3), padding=(0, 1, 1))
        self.temporal = CausalConv3d(out_channels, out_channels, (3, 1, 1))

    def forward(self, x: torch.Tensor, cache: DecodeCache | None = None) -> torch.Tensor:
        return self.temporal(self.spatial(x), cache)


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = ChannelRMSNorm(in_channels)
        self.conv1 = SpatioTemporalConv(in_channels, out_channels)
        self.norm2 = ChannelRMSNorm(out_channels)
        self.conv2 = SpatioTemporalConv(out_channels, out_channels)
        self.skip = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, cache: DecodeCache | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(F.silu(self.norm2(h)), cache)
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halves height and width (strided 3x3 conv) and, if asked, time (causal strided conv).

    In time, 1 + 2m frames become 1 + m: output i sees input frames 2i-2 .. 2i, so the first frame
    is coded alone and nothing looks ahead.
    """

    def __init__(self, channels: int, spatial: bool, temporal: bool):
        super().__init__()
        self.spatial = nn.Conv3d(channels, channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)) if spatial else nn.Identity()
        self.temporal = CausalConv3d(channels, channels, (3, 1, 1), stride=(2, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.spatial(x)
        return self.temporal(x) if self.temporal is not None else x


class Upsample(nn.Module):
    """Doubles height and width (nearest + 3x3 conv) and, if asked, time.

    In time, a causal conv makes two frames of every frame; the very first output frame is dropped
    so that 1 + m latent frames become 1 + 2m frames, mirroring Downsample. The cache remembers
    whether the first frame has already gone by, so streaming drops it exactly once.
    """

    def __init__(self, channels: int, spatial: bool, temporal: bool):
        super().__init__()
        self.spatial = spatial
        self.spatial_conv = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1)) if spatial else nn.Identity()
        self.temporal = CausalConv3d(channels, 2 * channels, (3, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor, cache: DecodeCache | None = None) -> torch.Tensor:
        if self.temporal is not None:
            is_first_chunk = cache is None or not cache.get(self, False)
            x = self.temporal(x, cache)  # (B, 2C, T, H, W)
            x = rearrange(x, "b (r c) t h w -> b c (t r) h w", r=2)  # (B, C, 2T, H, W)
            if is_first_chunk:
                x = x[:, :, 1:]  # frame 0 expands to one frame, not two
            if cache is not None:
                cache[self] = True
        if self.spatial:
            x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        return self.spatial_conv(x)


# ------------------------------------------------------------------------------------------------
# Encoder and decoder
# ------------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    def __init__(self, in_channels, latent_channels, patch_size, block_out_channels, layers_per_block, down_spatial, down_temporal):
        super().__init__()
        self.patch_size = patch_size
        self.conv_in = SpatioTemporalConv(in_channels * patch_size**2, block_out_channels[0])
        self.stages = nn.ModuleList()
        channels = block_out_channels[0]
        for level, out_channels in enumerate(block_out_channels):
            blocks = nn.ModuleList()
            for _ in range(layers_per_block):
                blocks.append(ResBlock(channels, out_channels))
                channels = out_channels
            stage = nn.Module()
            stage.blocks = blocks
            stage.down = Downsample(channels, down_spatial[level], down_temporal[level]) if (down_spatial[level] or down_temporal[level]) else None
            self.stages.append(stage)
        self.mid = nn.ModuleList([ResBlock(channels, channels), ResBlock(channels, channels)])
        self.norm_out = ChannelRMSNorm(channels)
        self.conv_out = SpatioTemporalConv(channels, 2 * latent_channels)  # mean and log-variance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        x = rearrange(x, "b c t (h p1) (w p2) -> b (c p1 p2) t h w", p1=p, p2=p)  # pixel-unshuffle
        x = self.conv_in(x)
        for stage in self.stages:
            for block in stage.blocks:
                x = block(x)
            if stage.down is not None:
                x = stage.down(x)
        for block in self.mid:
            x = block(x)
        return self.conv_out(F.silu(self.norm_out(x)))  # (B, 2 * latent_channels, t, h, w)


class Decoder(nn.Module):
    def __init__(self, out_channels, latent_channels, patch_size, block_out_channels, layers_per_block, down_spatial, down_temporal):
        super().__init__()
        self.patch_size = patch_size
        channels = block_out_channels[-1]
        self.conv_in = SpatioTemporalConv(latent_channels, channels)
        self.mid = nn.ModuleList([ResBlock(channels, channels), ResBlock(channels, channels)])
        self.stages = nn.ModuleList()
        # Mirror of the encoder: walk the levels from the deepest up, upsampling where it downsampled.
        for level in reversed(range(len(block_out_channels))):
            out_ch = block_out_channels[level]
            stage = nn.Module()
            stage.up = Upsample(channels, down_spatial[level], down_temporal[level]) if (down_spatial[level] or down_temporal[level]) else None
            blocks = nn.ModuleList()
            for _ in range(layers_per_block + 1):  # one more block than the encoder: decoding is the harder half
                blocks.append(ResBlock(channels, out_ch))
                channels = out_ch
            stage.blocks = blocks
            self.stages.append(stage)
        self.norm_out = ChannelRMSNorm(channels)
        self.conv_out = SpatioTemporalConv(channels, out_channels * patch_size**2)

    def forward(self, z: torch.Tensor, cache: DecodeCache | None = None) -> torch.Tensor:
        x = self.conv_in(z, cache)
        for block in self.mid:
            x = block(x, cache)
        for stage in self.stages:
            if stage.up is not None:
                x = stage.up(x, cache)
            for block in stage.blocks:
                x = block(x, cache)
        x = self.conv_out(F.silu(self.norm_out(x)), cache)
        p = self.patch_size
        return rearrange(x, "b (c p1 p2) t h w -> b c t (h p1) (w p2)", p1=p, p2=p)  # pixel-shuffle


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


class CausalVideoVAE(ModelMixin, ConfigMixin):
    r"""Causal video autoencoder with a diagonal Gaussian posterior.

    Videos are `(B, C, T, H, W)` in [-1, 1] with `T = 1 + temporal_compression_ratio * k`; latents are
    `(B, latent_channels, 1 + k, H / s, W / s)` with `s = spatial_compression_ratio`. Normalise latents
    for diffusion with `latents_mean` and `latents_std` from the config (measured after training).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 16,
        patch_size: int = 2,  # pixel-unshuffle factor in front of the encoder
        block_out_channels: tuple[int, ...] = (32, 64, 128),  # narrow where pixels are many: CPU time goes there
        layers_per_block: int = 2,
        down_spatial: tuple[bool, ...] = (True, True, False),  # halve H and W after each level
        down_temporal: tuple[bool, ...] = (True, True, False),  # halve T after each level
        latents_mean: tuple[float, ...] | None = None,  # per channel; None means 0
        latents_std: tuple[float, ...] | None = None,  # per channel; None means 1
        tile_latent_size: int = 32,  # decode frames larger than this many latent pixels in tiles
        tile_latent_overlap: int = 8,
    ):
        super().__init__()
        levels = len(block_out_channels)
        if len(down_spatial) != levels or len(down_temporal) != levels:
            raise ValueError("down_spatial and down_temporal need one entry per block_out_channels level")
        for name, stats in (("latents_mean", latents_mean), ("latents_std", latents_std)):
            if stats is not None and len(stats) != latent_channels:
                raise ValueError(f"{name} needs {latent_channels} values (one per latent channel), got {len(stats)}")
        args = (latent_channels, patch_size, block_out_channels, layers_per_block, down_spatial, down_temporal)
        self.encoder = Encoder(in_channels, *args)
        self.decoder = Decoder(in_channels, *args)
        self.use_tiling = False
        self.initialize_weights()

    def initialize_weights(self):
        # The posterior starts nearly deterministic (log-variance -8, std 0.02). With the usual
        # log-variance 0 the sampled latent is almost all noise at first, the decoder learns to
        # ignore it, the encoder gets no gradient, and training stalls at the mean colour.
        log_variance = self.encoder.conv_out.temporal
        latent_channels = self.config.latent_channels
        with torch.no_grad():
            log_variance.weight[latent_channels:] *= 0.1
            log_variance.bias[latent_channels:] = -8.0

    # --- geometry ------------------------------------------------------------------------------

    @property
    def spatial_compression_ratio(self) -> int:
        return self.config.patch_size * 2 ** sum(self.config.down_spatial)

    @property
    def temporal_compression_ratio(self) -> int:
        return 2 ** sum(self.config.down_temporal)

    def num_latent_frames(self, num_frames: int) -> int:
        """Latent frames needed to decode at least `num_frames` frames."""
        return 1 + -(-(num_frames - 1) // self.temporal_compression_ratio)

    def latent_stats(self, device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the latents, shaped (1, C, 1, 1, 1) to broadcast over videos."""
        channels = self.config.latent_channels
        mean = self.config.latents_mean or [0.0] * channels
        std = self.config.latents_std or [1.0] * channels
        shape = (1, channels, 1, 1, 1)
        return (
            torch.tensor(mean, device=device, dtype=dtype).view(shape),
            torch.tensor(std, device=device, dtype=dtype).view(shape),
        )

    def enable_tiling(self, tile_latent_size: int | None = None, tile_latent_overlap: int | None = None):
        tile = tile_latent_size if tile_latent_size is not None else self.config.tile_latent_size
        overlap = tile_latent_overlap if tile_latent_overlap is not None else self.config.tile_latent_overlap
        if not 0 <= overlap < tile:
            raise ValueError(f"tile_latent_overlap must be from 0 to tile_latent_size - 1 ({tile - 1}), got {overlap}")
        self.use_tiling = True
        if tile_latent_size is not None:
            self.register_to_config(tile_latent_size=tile_latent_size)
        if tile_latent_overlap is not None:
            self.register_to_config(tile_latent_overlap=tile_latent_overlap)

    def disable_tiling(self):
        self.use_tiling = False

    # --- encode --------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        frames = x.shape[2]
        ratio = self.temporal_compression_ratio
        if (frames - 1) % ratio != 0:
            raise ValueError(f"the VAE encodes 1 + {ratio}k frames; got {frames} frames")
        posterior = DiagonalGaussianDistribution(self.encoder(x))
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    # --- decode --------------------------------------------------------------------------------

    def iter_decode(self, z: torch.Tensor, chunk_latent_frames: int = 1) -> Iterator[torch.Tensor]:
        """Decode `z` a few latent frames at a time, yielding pixel chunks (B, C, t, H, W) in [-1, 1].

        The first chunk yields 1 + 4(n - 1) frames for n latent frames, every later chunk 4n.
        Memory stays that of one chunk, however long the video.
        """
        if chunk_latent_frames < 1:
            raise ValueError(f"chunk_latent_frames must be at least 1, got {chunk_latent_frames}")
        cache: DecodeCache = {}
        tiled = self.use_tiling and max(z.shape[-2:]) > self.config.tile_latent_size
        tile_caches: dict[tuple[int, int], DecodeCache] = {}
        for start in range(0, z.shape[2], chunk_latent_frames):
            chunk = z[:, :, start : start + chunk_latent_frames]
            if tiled:
                yield self._decode_tiled(chunk, tile_caches)
            else:
                yield self.decoder(chunk, cache).clamp(-1, 1)

    def decode(self, z: torch.Tensor, return_dict: bool = True, chunk_latent_frames: int | None = 1):
        """Decode latents to pixels. `chunk_latent_frames=None` decodes the whole video in one pass."""
        chunk = z.shape[2] if chunk_latent_frames is None else chunk_latent_frames
        video = torch.cat(list(self.iter_decode(z, chunk)), dim=2)
        if not return_dict:
            return (video,)
        return DecoderOutput(sample=video)

    def _decode_tiled(self, z: torch.Tensor, tile_caches: dict[tuple[int, int], DecodeCache]) -> torch.Tensor:
        """Decode overlapping spatial tiles and blend them with linear ramps over the overlap.

        Each tile keeps its own streaming cache (keyed by the tile's corner), so tiling and
        streaming combine.
        """
        tile, overlap = self.config.tile_latent_size, self.config.tile_latent_overlap
        stride = tile - overlap
        scale = self.spatial_compression_ratio
        height, width = z.shape[-2:]
        output = None
        weight_sum = None
        for top in _tile_starts(height, tile, stride):
            for left in _tile_starts(width, tile, stride):
                z_tile = z[..., top : top + tile, left : left + tile]
                decoded = self.decoder(z_tile, tile_caches.setdefault((top, left), {}))  # (B, C, t, h, w)
                if output is None:
                    output = decoded.new_zeros(*decoded.shape[:3], height * scale, width * scale)
                    weight_sum = decoded.new_zeros(1, 1, 1, height * scale, width * scale)
                weight = _blend_weight(decoded.shape[-2:], overlap * scale, top > 0, left > 0, top + tile < height, left + tile < width, decoded)
                rows = slice(top * scale, top * scale + decoded.shape[-2])
                cols = slice(left * scale, left * scale + decoded.shape[-1])
                output[..., rows, cols] += decoded * weight
                weight_sum[..., rows, cols] += weight
        return (output / weight_sum).clamp(-1, 1)

    # --- training forward ----------------------------------------------------------------------

    def forward(self, x: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None, latent_noise: torch.Tensor | float | None = None):
        """`latent_noise`: the std (broadcast over the latents) of Gaussian noise added before the
        decoder, which then learns to decode the slightly noisy latents that sampling ends with."""
        posterior = self.encode(x).latent_dist
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        if latent_noise is not None:
            z = z + latent_noise * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        # Training decodes in one pass: same numbers as streaming, fewer Python calls.
        reconstruction = self.decoder(z)
        return reconstruction, posterior


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]  # the last tile is flush with the edge


def _blend_weight(shape, ramp: int, ramp_top: bool, ramp_left: bool, ramp_bottom: bool, ramp_right: bool, like: torch.Tensor) -> torch.Tensor:
    """A (1, 1, 1, h, w) weight that rises linearly over `ramp` pixels on the sides shared with a neighbour."""
    height, width = shape

    def axis(size: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
        weight = torch.ones(size, dtype=like.dtype, device=like.device)
        steps = torch.arange(1, ramp + 1, dtype=like.dtype, device=like.device) / (ramp + 1)
        if ramp_start:
            weight[:ramp] = torch.minimum(weight[:ramp], steps)
        if ramp_end:
            weight[size - ramp :] = torch.minimum(weight[size - ramp :], steps.flip(0))  # not [-ramp:]: ramp may be 0
        return weight

    return (axis(height, ramp_top, ramp_bottom)[:, None] * axis(width, ramp_left, ramp_right)[None, :]).view(1, 1, 1, height, width)
