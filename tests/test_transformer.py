"""pipeline/transformer.py: shapes for every bucket, per-frame timesteps, 3D RoPE, checkpointing, the refiner,
the frame position, self-conditioning."""

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb

from pipeline import presets
from pipeline.transformer import FramePositionEmbedder, RotaryPositionEmbedding3D, SpatioTemporalTransformer, rope_axes_split

TEXT_TOKENS = 8


def inputs(batch: int, frames: int, height: int, width: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, TEXT_TOKENS, dtype=torch.long)
    mask[:, TEXT_TOKENS // 2 :] = 0  # half the text is padding, as a short prompt is
    return dict(
        hidden_states=torch.randn(batch, 16, frames, height, width, generator=generator),  # (B, C, T, H, W)
        timestep=torch.full((batch,), 500.0),
        encoder_hidden_states=torch.randn(batch, TEXT_TOKENS, 384, generator=generator),  # (B, L, D)
        pooled_text=torch.randn(batch, 384, generator=generator),
        encoder_attention_mask=mask,
    )


def bucket_latent_sizes() -> list[tuple[str, int, int]]:
    sizes = []
    for aspect in presets.ASPECT_RATIOS:
        height, width = presets.resolution(aspect, "fast")
        sizes.append((aspect, height // 8, width // 8))  # the VAE's 8x spatial compression
    return sizes


@pytest.mark.parametrize("aspect, height, width", bucket_latent_sizes())
@torch.no_grad()
def test_output_shape_equals_input_shape_for_every_bucket(tiny_transformer, aspect, height, width):
    for frames in (1, 2, 5):
        args = inputs(2, frames, height, width)
        output = tiny_transformer(**args).sample
        assert output.shape == args["hidden_states"].shape, (aspect, frames)
        assert output.abs().max() > 0  # the zero-initialised layers were perturbed: not trivially zero


@torch.no_grad()
def test_per_frame_timesteps(tiny_transformer):
    args = inputs(2, 3, 4, 6)
    per_batch = tiny_transformer(**args).sample

    args["timestep"] = torch.full((2, 3), 500.0)  # (B, T): one timestep per latent frame
    same = tiny_transformer(**args).sample
    args["timestep"] = torch.tensor([[0.0, 500.0, 500.0]] * 2)  # a clean first frame, as in continuation
    mixed = tiny_transformer(**args).sample

    assert same.shape == mixed.shape == args["hidden_states"].shape
    torch.testing.assert_close(same, per_batch, rtol=0, atol=1e-6)
    assert (mixed - per_batch)[:, :, 0].abs().max() > 1e-4  # the frame whose timestep changed changed


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_rotary_scores_depend_only_on_relative_position(axis):
    """RoPE's defining property: <R(p) q, R(p') k> is a function of p - p' alone, on each axis."""
    head_dim = 16  # the tiny transformer's: 32 hidden / 2 heads
    grid = (6, 5, 7)  # (frames, height, width) of tokens
    cos, sin = RotaryPositionEmbedding3D(head_dim)(*grid, device=torch.device("cpu"))  # (N, head_dim)
    assert cos.shape == sin.shape == (grid[0] * grid[1] * grid[2], head_dim)
    assert sum(rope_axes_split(head_dim)) == head_dim

    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, head_dim, generator=generator)
    tokens = len(cos)
    rotated_q = apply_rotary_emb(q.expand(1, 1, tokens, head_dim), (cos, sin), use_real=True)[0, 0].view(*grid, head_dim)
    rotated_k = apply_rotary_emb(k.expand(1, 1, tokens, head_dim), (cos, sin), use_real=True)[0, 0].view(*grid, head_dim)

    # Walk along `axis` from the origin: scores[i, j] = <q at position i, k at position j>.
    index = [0, 0, 0]
    along_q, along_k = [], []
    for position in range(grid[axis]):
        index[axis] = position
        along_q.append(rotated_q[tuple(index)])
        along_k.append(rotated_k[tuple(index)])
    scores = torch.stack(along_q) @ torch.stack(along_k).T  # (P, P)

    for offset in range(-grid[axis] + 1, grid[axis]):
        diagonal = torch.diagonal(scores, offset=offset)  # all pairs with the same p - p'
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal), rtol=0, atol=1e-5)
    # and the position is not ignored: different offsets give different scores
    assert (scores[0, 1:] - scores[0, 0]).abs().min() > 1e-4


@pytest.mark.parametrize("frames, height, width", [(2, 5, 6), (2, 4, 7), (1, 3, 3)])
def test_latent_sizes_the_patch_does_not_divide_are_rejected(tiny_transformer, frames, height, width):
    with pytest.raises(ValueError, match=f"H={height}, W={width}.*divisible by patch_size"):
        tiny_transformer(**inputs(1, frames, height, width))


def test_gradient_checkpointing_gives_the_same_gradients(tiny_transformer):
    args = inputs(2, 2, 4, 4)
    tiny_transformer.train()

    def gradients() -> dict[str, torch.Tensor]:
        tiny_transformer.zero_grad()
        tiny_transformer(**args).sample.pow(2).mean().backward()
        return {name: p.grad.clone() for name, p in tiny_transformer.named_parameters() if p.grad is not None}

    plain = gradients()
    tiny_transformer.enable_gradient_checkpointing()
    assert tiny_transformer.gradient_checkpointing
    checkpointed = gradients()

    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_a_refiner_starts_as_the_identity_and_travels_with_the_folder(tiny_transformer, tmp_path):
    # A transformer given a refiner predicts exactly what it did (the refiner's last layer is zero),
    # so training resumes from the trained function; once trained, it changes the velocity and its
    # weights and width travel with the folder.
    refined = SpatioTemporalTransformer.from_config(tiny_transformer.config, refiner_channels=8).eval()
    missing, unexpected = refined.load_state_dict(tiny_transformer.state_dict(), strict=False)
    assert not unexpected and missing and all(name.startswith("refiner.") for name in missing)
    args = inputs(1, 3, 8, 8)
    args["timestep"] = torch.tensor([[0.0, 300.0, 300.0]])  # a clean context frame, then noisy ones
    with torch.no_grad():
        torch.testing.assert_close(refined(**args).sample, tiny_transformer.eval()(**args).sample, rtol=0, atol=0)
        torch.nn.init.normal_(refined.refiner.net[-1].weight, std=0.1)
        corrected = refined(**args).sample
        assert (corrected - tiny_transformer(**args).sample).abs().max() > 1e-3
        refined.save_pretrained(tmp_path / "transformer")
        reloaded = SpatioTemporalTransformer.from_pretrained(tmp_path / "transformer").eval()
        assert reloaded.config.refiner_channels == 8
        torch.testing.assert_close(reloaded(**args).sample, corrected, rtol=0, atol=1e-6)


def test_frame_position_tells_edges_apart_in_every_aspect_ratio():
    # RoPE alone is blind to where the frame ends; this embedding is not: the top row differs from
    # the bottom one, and a token a given fraction of the way down gets the same vector in a short
    # grid as in a tall one, so "the bottom edge" means the same at every size and aspect.
    embedder = FramePositionEmbedder(hidden_size=16, frequencies=4)
    cpu = torch.device("cpu")
    with torch.no_grad():
        torch.nn.init.normal_(embedder.proj.weight)
        short = embedder(2, 4, 4, cpu, torch.float32).reshape(2, 4, 4, 16)  # (T, H, W, D)
        assert (short[0, 0, 0] - short[0, -1, 0]).abs().max() > 1e-3
        torch.testing.assert_close(short[0], short[1])  # the same in every latent frame
        embedder.proj.weight[:, -1] = 0  # leave out the aspect feature: only the place in the frame remains
        short = embedder(1, 4, 4, cpu, torch.float32).reshape(4, 4, 16)
        tall = embedder(1, 12, 4, cpu, torch.float32).reshape(12, 4, 16)
    # Row centres are (i + 0.5) / H: rows 0..3 of 4 sit where rows 1, 4, 7, 10 of 12 sit.
    torch.testing.assert_close(short, tall[1::3])


def test_frame_position_starts_as_the_identity_and_travels_with_the_folder(tiny_transformer, tmp_path):
    # A trained transformer given the frame position predicts exactly what it did (the projection
    # starts at zero); once it has learned, the predictions change and the weights reload.
    placed = SpatioTemporalTransformer.from_config(tiny_transformer.config, frame_position_embedding=True).eval()
    missing, unexpected = placed.load_state_dict(tiny_transformer.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == ["frame_position.proj.bias", "frame_position.proj.weight"]
    args = inputs(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(placed(**args).sample, tiny_transformer.eval()(**args).sample, rtol=0, atol=0)
        torch.nn.init.normal_(placed.frame_position.proj.weight, std=0.5)
        moved = placed(**args).sample
        assert (moved - tiny_transformer(**args).sample).abs().max() > 1e-4
        placed.save_pretrained(tmp_path / "transformer")
        reloaded = SpatioTemporalTransformer.from_pretrained(tmp_path / "transformer").eval()
        assert reloaded.config.frame_position_embedding
        torch.testing.assert_close(reloaded(**args).sample, moved, rtol=0, atol=1e-6)


def test_self_conditioning_starts_as_the_identity_and_no_estimate_is_zeros(tiny_transformer, tmp_path):
    # A trained transformer given self-conditioning predicts exactly what it did, whatever estimate
    # it is handed (the embedding starts at zero). Once it has learned, an estimate changes the
    # prediction, no estimate (the first sampling step) is the same as zeros, and the weights reload.
    conditioned = SpatioTemporalTransformer.from_config(tiny_transformer.config, self_conditioning=True).eval()
    missing, unexpected = conditioned.load_state_dict(tiny_transformer.state_dict(), strict=False)
    assert not unexpected and missing == ["self_condition_embed.weight"]
    args = inputs(1, 3, 8, 8)
    estimate = torch.randn_like(args["hidden_states"])
    with torch.no_grad():
        plain = tiny_transformer.eval()(**args).sample
        torch.testing.assert_close(conditioned(**args, self_condition=estimate).sample, plain, rtol=0, atol=0)
        torch.nn.init.normal_(conditioned.self_condition_embed.weight, std=0.5)
        without = conditioned(**args).sample
        torch.testing.assert_close(conditioned(**args, self_condition=torch.zeros_like(estimate)).sample, without, rtol=0, atol=0)
        moved = conditioned(**args, self_condition=estimate).sample
        assert (moved - without).abs().max() > 1e-4
        conditioned.save_pretrained(tmp_path / "transformer")
        reloaded = SpatioTemporalTransformer.from_pretrained(tmp_path / "transformer").eval()
        assert reloaded.config.self_conditioning
        torch.testing.assert_close(reloaded(**args, self_condition=estimate).sample, moved, rtol=0, atol=1e-6)
