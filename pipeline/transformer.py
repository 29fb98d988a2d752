"""SpatioTemporalTransformer: a Diffusion Transformer over video latents.

Kling's published design, written in the shape of DiT's `models.py` (Peebles & Xie, 2023):

* Patches of the latent grid, each one token: `patch_size` (time, height, width), 1x2x2 by default;
  the bundled model cuts its 4x VAE's latents into 1x4x4.
* 3D rotary position embedding: each attention head's channels are split between time, height and
  width, and each part is rotated by its own coordinate (RoFormer, Su et al. 2021; as in Wan and
  CogVideoX). Positions are in patch units, so every aspect ratio and length uses the same scale.
* Full joint self-attention over all video tokens (space and time together), with
  torch's scaled_dot_product_attention.
* Cross-attention from video tokens to the text encoder's token states, with the text mask.
* adaLN-zero: the timestep, the frame rate and the pooled text vector make a conditioning vector
  that shifts, scales and gates every block. The gates start at zero so that each block starts as
  the identity, which DiT found to train best.
* The timestep may be given per latent frame: frames given as clean context get t = 0, so the same
  model continues a video or animates a first frame.
* An optional refiner (`refiner_channels`): a small 3D conv net on the latent grid that corrects the
  velocity from the noisy latents, the transformer's velocity and the noise level. A token carries a
  whole patch (4x4 latents of 16 channels are 256 numbers, as wide as the token itself), which leaves
  the transformer little room for the fine detail that tells low noise from signal; a conv across
  patch borders sees it. Its last layer starts at zero, so a transformer that gains one starts with
  exactly its old predictions.
* An optional frame position (`frame_position_embedding`): where each token sits as a fraction of
  the frame's height and width, added to it through a projection that starts at zero. RoPE's
  relative offsets cannot say where the frame ends, and the world's physics happens at its edges.
* Optional self-conditioning (`self_conditioning`; Chen et al. 2022, "Analog Bits"): the clean
  latents the model estimated at the previous sampling step come in as a second patch embedding,
  which starts at zero. The first steps decide where the objects go; a model that sees its last
  estimate can keep to one layout instead of drawing each step's guess again.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  (diffusers' loader looks this name up in this module)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, apply_rotary_emb, get_1d_rotary_pos_embed
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from einops import rearrange

# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def rope_axes_split(head_dim: int) -> tuple[int, int, int]:
    """Split a head's channels between (time, height, width): a quarter to time, the rest shared by
    height and width, each part even so that channels pair up for rotation."""
    time_dim = 2 * (head_dim // 8)
    height_dim = 2 * ((head_dim - time_dim) // 4)
    width_dim = head_dim - time_dim - height_dim
    return time_dim, height_dim, width_dim


# ------------------------------------------------------------------------------------------------
# Embedders
# ------------------------------------------------------------------------------------------------


class RotaryPositionEmbedding3D(nn.Module):
    """cos and sin tables (N, head_dim) for a (frames, height, width) grid of tokens."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.axes_dim = rope_axes_split(head_dim)
        self.theta = theta

    def forward(self, frames: int, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        grid = torch.stack(
            torch.meshgrid(
                torch.arange(frames, device=device),
                torch.arange(height, device=device),
                torch.arange(width, device=device),
                indexing="ij",
            ),
            dim=-1,
        ).reshape(-1, 3)  # (N, 3): the (t, h, w) of every token, in the order tokens are flattened
        cos_parts, sin_parts = [], []
        for axis, dim in enumerate(self.axes_dim):
            cos, sin = get_1d_rotary_pos_embed(dim, grid[:, axis].float(), theta=self.theta, use_real=True)
            cos_parts.append(cos)  # (N, dim)
            sin_parts.append(sin)
        return torch.cat(cos_parts, dim=-1), torch.cat(sin_parts, dim=-1)  # (N, head_dim) each


class FramePositionEmbedder(nn.Module):
    """Where a token sits in the frame, as a vector added to it.

    RoPE gives attention only relative offsets, so without this the blocks cannot tell the bottom
    edge that bouncers rebound from, or the edges that movers reflect off, from the middle of the
    frame. Each token's centre is measured as a fraction of the frame's height and width (the same
    numbers in every aspect ratio and resolution), expanded into sinusoids, plus the frame's aspect
    ratio, and projected by a layer that starts at zero: a trained transformer given this predicts
    exactly what it did and learns to use it.
    """

    def __init__(self, hidden_size: int, frequencies: int = 8):
        super().__init__()
        self.frequencies = frequencies
        self.proj = nn.Linear(4 * frequencies + 1, hidden_size)

    def forward(self, frames: int, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        rows = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height  # (H,) in (0, 1)
        cols = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width  # (W,)
        rows, cols = torch.meshgrid(rows, cols, indexing="ij")
        # Half-wave multiples of pi: the lowest frequency tells top from bottom, the higher ones how near an edge.
        angles = torch.stack([rows, cols], dim=-1)[..., None] * math.pi * torch.arange(1, self.frequencies + 1, device=device)  # (H, W, 2, F)
        features = torch.cat([angles.sin().flatten(-2), angles.cos().flatten(-2)], dim=-1)  # (H, W, 4F)
        aspect = torch.full((height, width, 1), math.log(width / height), device=device)
        features = torch.cat([features, aspect], dim=-1).reshape(1, height * width, -1)  # (1, H*W, 4F + 1)
        # Projected once for a frame's tokens, then repeated: every latent frame has the same layout.
        return self.proj(features.to(dtype)).repeat(1, frames, 1)  # (1, N, D), tokens ordered (t, h, w)


class ConditionEmbedder(nn.Module):
    """Timestep (+ frame rate) + pooled text -> one conditioning vector per latent frame."""

    def __init__(self, hidden_size: int, pooled_text_dim: int, frequency_dim: int = 256):
        super().__init__()
        self.time_proj = Timesteps(frequency_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(frequency_dim, hidden_size)
        self.frame_rate_embed = TimestepEmbedding(frequency_dim, hidden_size)
        self.text_embed = nn.Sequential(nn.Linear(pooled_text_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, timestep: torch.Tensor, frame_rate: torch.Tensor, pooled_text: torch.Tensor, dtype) -> torch.Tensor:
        # timestep: (B, T); frame_rate: (B,); pooled_text: (B, D_text)
        batch, frames = timestep.shape
        t_emb = self.time_embed(self.time_proj(timestep.flatten()).to(dtype)).view(batch, frames, -1)  # (B, T, D)
        # The frame rate is small (8..30); scaled by 10 its sinusoids vary as much as a timestep's.
        fps_emb = self.frame_rate_embed(self.time_proj(frame_rate * 10).to(dtype))  # (B, D)
        text_emb = self.text_embed(pooled_text.to(dtype))  # (B, D)
        return t_emb + (fps_emb + text_emb)[:, None]  # (B, T, D)


# ------------------------------------------------------------------------------------------------
# Attention and the block
# ------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention with RMS-normalised queries and keys (stable at bf16) and optional RoPE."""

    def __init__(self, hidden_size: int, num_heads: int, context_dim: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        head_dim = hidden_size // num_heads
        context_dim = context_dim or hidden_size
        self.to_q = nn.Linear(hidden_size, hidden_size)
        self.to_k = nn.Linear(context_dim, hidden_size)
        self.to_v = nn.Linear(context_dim, hidden_size)
        self.norm_q = nn.RMSNorm(head_dim, eps=1e-6)
        self.norm_k = nn.RMSNorm(head_dim, eps=1e-6)
        self.to_out = nn.Linear(hidden_size, hidden_size)

    def forward(self, x, context=None, rotary=None, mask=None) -> torch.Tensor:
        context = x if context is None else context
        heads = self.num_heads
        q = self.norm_q(rearrange(self.to_q(x), "b n (h d) -> b h n d", h=heads))  # (B, heads, N, d)
        k = self.norm_k(rearrange(self.to_k(context), "b n (h d) -> b h n d", h=heads))  # (B, heads, L, d)
        v = rearrange(self.to_v(context), "b n (h d) -> b h n d", h=heads)
        if rotary is not None:
            q = apply_rotary_emb(q, rotary, use_real=True)
            k = apply_rotary_emb(k, rotary, use_real=True)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class TransformerBlock(nn.Module):
    """Self-attention over all video tokens, cross-attention to text, MLP; adaLN-zero around both
    self-attention and MLP (cross-attention is left unmodulated, as in PixArt and Wan)."""

    def __init__(self, hidden_size: int, num_heads: int, text_dim: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.cross_attn = Attention(hidden_size, num_heads, context_dim=text_dim)
        self.norm3 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, mlp_hidden), nn.GELU(approximate="tanh"), nn.Linear(mlp_hidden, hidden_size))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x, condition, rotary, text, text_mask) -> torch.Tensor:
        # x: (B, N, D); condition: (B, N, D), already expanded from frames to tokens
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(condition).chunk(6, dim=-1)
        x = x + gate_msa * self.self_attn(modulate(self.norm1(x), shift_msa, scale_msa), rotary=rotary)
        x = x + self.cross_attn(self.norm2(x), context=text, mask=text_mask)
        x = x + gate_mlp * self.mlp(modulate(self.norm3(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_volume: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_volume * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x, condition) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(condition).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class LatentRefiner(nn.Module):
    """Velocity correction from (noisy latents, velocity, the clean latents they imply, noise level),
    three 3x3x3 convolutions over (time, height, width) of the latent grid."""

    def __init__(self, latent_channels: int, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(3 * latent_channels + 1, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv3d(channels, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv3d(channels, latent_channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, noisy: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        # noisy, velocity: (B, C, T, H, W); sigma: (B, T) in [0, 1]
        sigma_5d = sigma[:, None, :, None, None].to(velocity.dtype)
        clean = noisy.to(velocity.dtype) - sigma_5d * velocity  # x0 = x_s - s v, the flow's own estimate
        sigma_map = sigma_5d.expand(-1, 1, -1, *velocity.shape[3:])
        return self.net(torch.cat([noisy.to(velocity.dtype), velocity, clean, sigma_map], dim=1))


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


class SpatioTemporalTransformer(ModelMixin, ConfigMixin):
    r"""Predicts the flow-matching velocity of video latents `(B, C, T, H, W)` given text.

    `T`, `H` and `W` may be anything the patch size divides, so one model serves every duration and
    aspect ratio.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 16,  # the VAE's latent channels
        out_channels: int | None = None,  # defaults to in_channels
        patch_size: tuple[int, int, int] = (1, 2, 2),  # (time, height, width)
        hidden_size: int = 256,
        num_layers: int = 8,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        text_dim: int = 384,  # MiniLM's token states
        pooled_text_dim: int = 384,  # MiniLM's sentence vector
        rope_theta: float = 10000.0,
        default_frame_rate: float = 15.0,  # used when a caller gives none
        refiner_channels: int = 0,  # 0: no refiner (see LatentRefiner)
        frame_position_embedding: bool = False,  # add where each token is in the frame (see FramePositionEmbedder)
        self_conditioning: bool = False,  # take the previous step's clean estimate as a second input
    ):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        self.out_channels = out_channels or in_channels
        patch_volume = patch_size[0] * patch_size[1] * patch_size[2]
        self.patch_embed = nn.Linear(in_channels * patch_volume, hidden_size)
        # No bias, so that zeros and no estimate at all are the same input.
        self.self_condition_embed = nn.Linear(in_channels * patch_volume, hidden_size, bias=False) if self_conditioning else None
        self.condition_embed = ConditionEmbedder(hidden_size, pooled_text_dim)
        self.rotary = RotaryPositionEmbedding3D(hidden_size // num_heads, rope_theta)
        self.frame_position = FramePositionEmbedder(hidden_size) if frame_position_embedding else None
        self.blocks = nn.ModuleList([TransformerBlock(hidden_size, num_heads, text_dim, mlp_ratio) for _ in range(num_layers)])
        self.final_layer = FinalLayer(hidden_size, patch_volume, self.out_channels)
        self.refiner = LatentRefiner(self.out_channels, refiner_channels) if refiner_channels else None
        self.gradient_checkpointing = False
        self.initialize_weights()

    def initialize_weights(self):
        # Xavier for every linear layer, as DiT does.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # The timestep MLP starts small and smooth (DiT: normal, std 0.02).
        nn.init.normal_(self.condition_embed.time_embed.linear_1.weight, std=0.02)
        nn.init.normal_(self.condition_embed.time_embed.linear_2.weight, std=0.02)
        # adaLN-zero: gates (and shifts and scales) start at zero so every block starts as the
        # identity and the network as a whole predicts zero velocity; DiT found this trains best.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
            # Cross-attention has no gate, so its output projection starts at zero instead.
            nn.init.zeros_(block.cross_attn.to_out.weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if self.frame_position is not None:
            nn.init.zeros_(self.frame_position.proj.weight)
            nn.init.zeros_(self.frame_position.proj.bias)
        if self.self_condition_embed is not None:
            nn.init.zeros_(self.self_condition_embed.weight)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_text: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        frame_rate: torch.Tensor | float | None = None,
        self_condition: torch.Tensor | None = None,
        return_dict: bool = True,
    ):
        r"""
        Args:
            hidden_states: noisy latents `(B, C, T, H, W)`.
            timestep: `(B,)` or `(B, T)` in [0, 1000]; per-frame values let clean context frames
                carry t = 0.
            encoder_hidden_states: text token states `(B, L, text_dim)`.
            pooled_text: sentence vectors `(B, pooled_text_dim)`.
            encoder_attention_mask: `(B, L)`, 1 for real tokens, 0 for padding.
            frame_rate: frames per second of the video, `(B,)` or a number.
            self_condition: the clean latents `(B, C, T, H, W)` estimated at the previous step,
                for a model with `self_conditioning`; None (the first step) counts as zeros.
        """
        batch, _, frames, height, width = hidden_states.shape
        pt, ph, pw = self.config.patch_size
        if frames % pt or height % ph or width % pw:
            raise ValueError(f"latent size (T={frames}, H={height}, W={width}) must be divisible by patch_size {tuple(self.config.patch_size)}")
        grid = (frames // pt, height // ph, width // pw)
        dtype = self.patch_embed.weight.dtype

        # 1. Conditioning per latent frame, then per token (every token of a frame shares it).
        timestep = torch.as_tensor(timestep, device=hidden_states.device, dtype=torch.float32)
        if timestep.ndim == 0:
            timestep = timestep.expand(batch)
        if timestep.ndim == 1:
            timestep = timestep[:, None].expand(batch, frames)
        frame_sigma = timestep / 1000  # (B, T): the refiner's noise level per latent frame
        timestep = timestep[:, ::pt]  # (B, T / pt): one value per patch in time
        if frame_rate is None:
            frame_rate = self.config.default_frame_rate
        frame_rate = torch.as_tensor(frame_rate, device=hidden_states.device, dtype=torch.float32).expand(batch)
        condition = self.condition_embed(timestep, frame_rate, pooled_text, dtype)  # (B, T', D)
        condition = condition.repeat_interleave(grid[1] * grid[2], dim=1)  # (B, N, D)

        # 2. Patchify and embed.
        def patchify(latents):  # (B, C, T, H, W) -> (B, N, C*p)
            return rearrange(latents, "b c (t pt) (h ph) (w pw) -> b (t h w) (c pt ph pw)", pt=pt, ph=ph, pw=pw).to(dtype)

        x = self.patch_embed(patchify(hidden_states))  # (B, N, D)
        if self.self_condition_embed is not None and self_condition is not None:
            x = x + self.self_condition_embed(patchify(self_condition))
        if self.frame_position is not None:
            x = x + self.frame_position(*grid, device=x.device, dtype=dtype)
        rotary = self.rotary(*grid, device=x.device)

        text = encoder_hidden_states.to(dtype)
        text_mask = None
        if encoder_attention_mask is not None:
            text_mask = encoder_attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L): broadcast over heads and queries

        # 3. Transformer blocks.
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, condition, rotary, text, text_mask)
            else:
                x = block(x, condition, rotary, text, text_mask)

        # 4. Project back to patches and unpatchify.
        x = self.final_layer(x, condition)  # (B, N, C_out*p)
        output = rearrange(
            x, "b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)", t=grid[0], h=grid[1], w=grid[2], pt=pt, ph=ph, pw=pw
        )  # (B, C_out, T, H, W)
        if self.refiner is not None:
            output = output + self.refiner(hidden_states, output, frame_sigma)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)


# ------------------------------------------------------------------------------------------------
# Size presets
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransformerSize:
    hidden_size: int
    num_layers: int
    num_heads: int


TRANSFORMER_SIZES: dict[str, TransformerSize] = {
    "tiny": TransformerSize(hidden_size=32, num_layers=2, num_heads=2),  # unit tests
    "small": TransformerSize(hidden_size=256, num_layers=8, num_heads=4),  # the bundled CPU model
    # "small" grown by depth: --init-transformer copies small's 8 blocks, and the 4 new ones start as
    # the identity (adaLN-Zero gates), so training resumes from small's function. 1.5x the time.
    "medium": TransformerSize(hidden_size=256, num_layers=12, num_heads=4),
    "base": TransformerSize(hidden_size=512, num_layers=16, num_heads=8),  # one GPU
    "large": TransformerSize(hidden_size=1024, num_layers=24, num_heads=16),  # several GPUs
}


def transformer_from_size(name: str, **overrides) -> SpatioTemporalTransformer:
    if name not in TRANSFORMER_SIZES:
        raise ValueError(f"transformer size must be one of {list(TRANSFORMER_SIZES)}, got {name!r}")
    size = TRANSFORMER_SIZES[name]
    return SpatioTemporalTransformer(**{**size.__dict__, **overrides})
