"""Video continuation in pipeline/pipeline_t2v.py: a `context` (pixels or latents) fixes the first
latent frames, which the transformer sees at timestep 0 and the scheduler never changes."""

import re

import numpy as np
import pytest
import torch

PROMPT = "a red ball bouncing on grass"
CALL = dict(height=16, width=32, num_frames=30, num_inference_steps=3, output_type="latent")  # latents (1, 16, 9, 2, 4)


def run(pipe, seed: int = 0, **overrides):
    return pipe(PROMPT, generator=torch.Generator().manual_seed(seed), **{**CALL, **overrides}).frames


def world_frames(num_frames: int) -> np.ndarray:
    """uint8 frames (T, 16, 32, 3): a gradient with a bright square moving right."""
    frames = np.zeros((num_frames, 16, 32, 3), np.uint8)
    frames[..., 2] = np.linspace(40, 200, 16, dtype=np.uint8)[None, :, None]
    for t in range(num_frames):
        frames[t, 5:11, 2 + t : 8 + t] = (220, 40, 40)
    return frames


def encoded(pipe, pixels: torch.Tensor) -> torch.Tensor:
    """Normalised posterior-mean latents of (1, 3, T, H, W) pixels in [-1, 1], computed here."""
    mean, std = pipe.vae.latent_stats()
    with torch.no_grad():
        return (pipe.vae.encode(pixels).latent_dist.mode() - mean) / std


def test_latent_context_is_kept_exactly(tiny_pipe):
    context = torch.randn(1, 16, 3, 2, 4, generator=torch.Generator().manual_seed(1))

    latents = run(tiny_pipe, context=context)

    assert latents.shape == (1, 16, 9, 2, 4)
    assert torch.equal(latents[:, :, :3], context)
    # The rest was generated, and generated from the context: it differs from a run without one.
    assert not torch.equal(latents[:, :, 3:], run(tiny_pipe)[:, :, 3:])


@pytest.mark.parametrize("num_frames", [1, 5])
def test_pixel_context_is_encoded_and_kept(tiny_pipe, num_frames):
    frames = world_frames(num_frames)  # one frame: animate a still image
    pixels = torch.from_numpy(frames).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]  # (1, 3, T, H, W)
    expected = encoded(tiny_pipe, pixels)  # (1, 16, 1 + (T - 1) / 4, 2, 4)

    from_numpy = run(tiny_pipe, context=frames)
    from_tensor = run(tiny_pipe, context=pixels)
    from_floats = run(tiny_pipe, context=frames.astype(np.float32) / 255)  # as the "np" output gives them

    t = expected.shape[2]
    assert t == 1 + (num_frames - 1) // 4
    torch.testing.assert_close(from_numpy[:, :, :t], expected, rtol=0, atol=1e-6)
    assert torch.equal(from_tensor, from_numpy)
    torch.testing.assert_close(from_floats, from_numpy, rtol=0, atol=1e-5)


def test_context_frames_get_timestep_zero_in_the_transformer(tiny_pipe):
    timesteps = []
    hook = tiny_pipe.transformer.register_forward_hook(lambda module, args, kwargs, output: timesteps.append(kwargs["timestep"].clone()), with_kwargs=True)
    try:
        run(tiny_pipe, context=torch.zeros(1, 16, 2, 2, 4))
    finally:
        hook.remove()

    assert len(timesteps) == CALL["num_inference_steps"]
    for timestep, t in zip(timesteps, tiny_pipe.scheduler.timesteps):
        assert timestep.shape == (2, 9)  # (guidance pair, latent frames)
        assert (timestep[:, :2] == 0).all() and (timestep[:, 2:] == t).all()


def test_one_context_serves_a_batch_and_a_batch_of_contexts_matches_single_runs(tiny_pipe):
    contexts = torch.randn(2, 16, 1, 2, 4, generator=torch.Generator().manual_seed(2))
    generators = [torch.Generator().manual_seed(s) for s in (3, 4)]

    batch = tiny_pipe([PROMPT, PROMPT], generator=generators, context=contexts, **CALL).frames
    shared = tiny_pipe([PROMPT, PROMPT], generator=torch.Generator().manual_seed(3), context=contexts[:1], **CALL).frames

    for index, seed in enumerate((3, 4)):
        torch.testing.assert_close(batch[index : index + 1], run(tiny_pipe, seed=seed, context=contexts[index : index + 1]), rtol=0, atol=1e-5)
    assert torch.equal(shared[:, :, :1], contexts[:1].expand(2, -1, -1, -1, -1))


def test_no_context_behaves_as_before(tiny_pipe):
    assert torch.equal(run(tiny_pipe, context=None), run(tiny_pipe))
    # The decoded frames of test_pipeline.py's pinned run, unchanged by the context feature.
    frames = tiny_pipe(PROMPT, generator=torch.Generator().manual_seed(0), **{**CALL, "num_inference_steps": 2, "output_type": "np"}).frames
    expected = np.array([0.58532, 0.44600, 0.68520, 0.57687, 0.49284, 0.50575, 0.54589, 0.51910, 0.63206])
    np.testing.assert_allclose(frames[0, -1, -3:, -1, :].flatten()[:9], expected, atol=1e-4)


def test_context_does_not_change_the_callers_tensors(tiny_pipe):
    noise = torch.randn(1, 16, 9, 2, 4, generator=torch.Generator().manual_seed(5))
    context = torch.randn(1, 16, 2, 2, 4, generator=torch.Generator().manual_seed(6))
    noise_copy, context_copy = noise.clone(), context.clone()

    run(tiny_pipe, latents=noise, context=context)

    assert torch.equal(noise, noise_copy) and torch.equal(context, context_copy)


BAD_CONTEXTS = {
    "pixels of the wrong height": np.zeros((5, 32, 32, 3), np.uint8),
    "pixels of the wrong width (tensor)": torch.zeros(1, 3, 5, 16, 16),
    "frames not 1 + 4k": np.zeros((4, 16, 32, 3), np.uint8),
    "as long as the video": np.zeros((33, 16, 32, 3), np.uint8),
    "not RGB": np.zeros((5, 16, 32, 4), np.uint8),
    "latents of the wrong size": torch.zeros(1, 16, 2, 4, 4),
    "as many latent frames as the video": torch.zeros(1, 16, 9, 2, 4),
    "neither pixels nor latents": torch.zeros(1, 7, 2, 2, 4),
    "more videos than prompts": torch.zeros(2, 16, 2, 2, 4),
    "a list": [np.zeros((16, 32, 3), np.uint8)],
}


@pytest.mark.parametrize("context", BAD_CONTEXTS.values(), ids=BAD_CONTEXTS.keys())
def test_bad_context_raises_a_value_error_naming_context(tiny_pipe, context):
    with pytest.raises(ValueError, match=re.escape("`context`")):
        run(tiny_pipe, context=context)
