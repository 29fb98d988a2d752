"""pipeline/vae.py: geometry, causality, streaming and tiled decode, config round trips."""

import pytest
import torch

from pipeline.vae import CausalVideoVAE

HEIGHT, WIDTH = 16, 24  # not square, so a swapped H and W shows


def random_video(frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, HEIGHT, WIDTH, generator=generator) * 2 - 1  # (B, C, T, H, W) in [-1, 1]


def random_latents(frames: int, height: int = 2, width: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 16, frames, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("frames", [1, 5, 9, 17])
@torch.no_grad()
def test_latent_and_decoded_shapes(tiny_vae, frames):
    assert (tiny_vae.spatial_compression_ratio, tiny_vae.temporal_compression_ratio) == (8, 4)

    latents = tiny_vae.encode(random_video(frames)).latent_dist.mode()
    decoded = tiny_vae.decode(latents).sample

    latent_frames = 1 + (frames - 1) // 4
    assert latents.shape == (1, 16, latent_frames, HEIGHT // 8, WIDTH // 8)
    assert tiny_vae.num_latent_frames(frames) == latent_frames
    assert decoded.shape == (1, 3, frames, HEIGHT, WIDTH)
    assert decoded.abs().max() <= 1


def latent_index(frame: int) -> int:
    """The latent frame that codes pixel frame `frame`: frame 0 alone, then groups of 4."""
    return 0 if frame == 0 else 1 + (frame - 1) // 4


@pytest.mark.parametrize("changed_frame", [0, 1, 4, 5, 8])
@torch.no_grad()
def test_encoder_is_causal(tiny_vae, changed_frame):
    video = random_video(9)
    edited = video.clone()
    edited[:, :, changed_frame] = -video[:, :, changed_frame]

    before = tiny_vae.encode(video).latent_dist.mean  # (1, 16, 3, 2, 3)
    after = tiny_vae.encode(edited).latent_dist.mean

    first_changed = latent_index(changed_frame)
    torch.testing.assert_close(after[:, :, :first_changed], before[:, :, :first_changed], rtol=0, atol=1e-6)
    for index in range(first_changed, before.shape[2]):
        assert (after[:, :, index] - before[:, :, index]).abs().max() > 1e-3, f"latent frame {index} ignored frame {changed_frame}"


@torch.no_grad()
def test_decoder_is_causal(tiny_vae):
    latents = random_latents(3)
    edited = latents.clone()
    edited[:, :, 1] += 1.0  # latent frame 1 decodes to pixel frames 1..4

    before, after = tiny_vae.decode(latents).sample, tiny_vae.decode(edited).sample

    torch.testing.assert_close(after[:, :, :1], before[:, :, :1], rtol=0, atol=1e-6)
    assert (after[:, :, 1:] - before[:, :, 1:]).abs().amax(dim=(0, 1, 3, 4)).min() > 1e-3  # every later frame moved


@torch.no_grad()
def test_streaming_decode_equals_whole_decode(tiny_vae):
    latents = random_latents(5)
    whole = tiny_vae.decode(latents, chunk_latent_frames=None).sample

    for chunk in (1, 2):
        streamed = tiny_vae.decode(latents, chunk_latent_frames=chunk).sample
        torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-5)

    # The first chunk of n latent frames yields 1 + 4(n - 1) frames, every later one 4n.
    assert [c.shape[2] for c in tiny_vae.iter_decode(latents, chunk_latent_frames=2)] == [5, 8, 4]
    with pytest.raises(ValueError, match="chunk_latent_frames"):
        next(tiny_vae.iter_decode(latents, chunk_latent_frames=0))


@torch.no_grad()
def test_tiled_decode_is_close_to_untiled(tiny_vae):
    latents = random_latents(2, height=6, width=7)
    whole = tiny_vae.decode(latents, chunk_latent_frames=None).sample

    tiny_vae.enable_tiling(tile_latent_size=4, tile_latent_overlap=2)  # 2x2 tiles over a 6x7 latent
    tiled = tiny_vae.decode(latents, chunk_latent_frames=None).sample
    streamed_tiled = tiny_vae.decode(latents, chunk_latent_frames=1).sample
    tiny_vae.disable_tiling()

    # Tiling is not exact: near a seam a tile's convolutions see zero padding where the whole frame
    # has neighbours, and the decoder's receptive field (tens of pixels) is wider than the blended
    # overlap. With random weights nothing makes those seams small, so an exact bound would be a lie.
    # What must hold: the error is a small fraction of the signal's spread (measured: ~3% of the std
    # in the mean, ~0.07 at worst), with no tile misplaced or unweighted (which would be ~100%).
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().mean() < 0.1 * whole.std()
    assert (tiled - whole).abs().max() < 0.25
    # Tiling and streaming combine: each tile keeps its own streaming cache.
    torch.testing.assert_close(streamed_tiled, tiled, rtol=0, atol=1e-5)


@torch.no_grad()
def test_tiling_without_overlap(tiny_vae):
    latents = random_latents(1, height=6, width=6)
    tiny_vae.enable_tiling(tile_latent_size=3, tile_latent_overlap=0)  # butted tiles, no blending
    tiled = tiny_vae.decode(latents).sample
    assert tiled.shape == (1, 3, 1, 48, 48) and torch.isfinite(tiled).all()
    with pytest.raises(ValueError, match="tile_latent_overlap"):
        tiny_vae.enable_tiling(tile_latent_size=4, tile_latent_overlap=4)


def test_encode_rejects_frame_counts_that_are_not_1_plus_4k(tiny_vae):
    with pytest.raises(ValueError, match="1 \\+ 4k frames; got 6 frames"):
        tiny_vae.encode(random_video(6))


def test_latent_stats_broadcast_over_latents():
    channels = 16
    mean_values = [0.1 * c for c in range(channels)]
    std_values = [1.0 + c for c in range(channels)]
    vae = CausalVideoVAE(block_out_channels=(8,), down_spatial=(True,), down_temporal=(True,), latents_mean=mean_values, latents_std=std_values)

    mean, std = vae.latent_stats(dtype=torch.float32)

    assert mean.shape == std.shape == (1, channels, 1, 1, 1)
    latents = torch.zeros(2, channels, 3, 4, 5)
    assert (latents * std + mean).shape == latents.shape
    torch.testing.assert_close(mean.flatten(), torch.tensor(mean_values))
    torch.testing.assert_close(std.flatten(), torch.tensor(std_values))
    # Without measured statistics the latents pass through unchanged.
    default_mean, default_std = CausalVideoVAE(block_out_channels=(8,), down_spatial=(True,), down_temporal=(True,)).latent_stats()
    assert torch.equal(default_mean, torch.zeros(1, channels, 1, 1, 1)) and torch.equal(default_std, torch.ones(1, channels, 1, 1, 1))
    with pytest.raises(ValueError, match="latents_mean"):
        CausalVideoVAE(block_out_channels=(8,), down_spatial=(True,), down_temporal=(True,), latents_mean=[0.0])


@torch.no_grad()
def test_save_and_load_round_trip(tiny_vae, tmp_path):
    tiny_vae.save_pretrained(tmp_path)
    loaded = CausalVideoVAE.from_pretrained(tmp_path).eval()

    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    assert list(loaded.config.block_out_channels) == [8, 16, 16] and loaded.spatial_compression_ratio == 8
    video = random_video(5)
    latents = tiny_vae.encode(video).latent_dist.mode()
    assert torch.equal(loaded.encode(video).latent_dist.mode(), latents)
    assert torch.equal(loaded.decode(latents).sample, tiny_vae.decode(latents).sample)
