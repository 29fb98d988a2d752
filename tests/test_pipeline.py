"""pipeline/pipeline_t2v.py with tiny seeded models and the real MiniLM: outputs, seeds, batches,
folders, guidance, self-conditioning, input checks, the step callback and the prompt cache."""

import re

import numpy as np
import PIL.Image
import pytest
import torch

from pipeline.pipeline_t2v import TextToVideoPipeline
from pipeline.transformer import SpatioTemporalTransformer

PROMPT = "a red ball bouncing on grass"
# 30 frames is not 1 + 4k: the latents cover 33 and the decode is cut to 30. 16x32 pixels is the
# smallest non-square size the tiny models accept (8x VAE times 2x2 patches).
CALL = dict(height=16, width=32, num_frames=30, num_inference_steps=2)
LATENT_SHAPE = (1, 16, 9, 2, 4)  # (B, C, 1 + ceil(29 / 4), 16 / 8, 32 / 8)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run(pipe: TextToVideoPipeline, prompt=PROMPT, seed: int | list[int] = 0, **overrides):
    generator = [seeded(s) for s in seed] if isinstance(seed, list) else seeded(seed)
    return pipe(prompt, generator=generator, **{**CALL, **overrides}).frames


# --- outputs ---------------------------------------------------------------------------------------


def test_np_output_shape_and_values(tiny_pipe):
    frames = run(tiny_pipe)

    assert isinstance(frames, np.ndarray) and frames.dtype == np.float32
    assert frames.shape == (1, 30, 16, 32, 3)  # (B, T, H, W, 3)
    assert 0 <= frames.min() and frames.max() <= 1
    # Recorded once from this seeded run (CPU). It pins prompt encoding, noise, guidance, the
    # scheduler, latent statistics and the decode together; atol covers other CPUs' rounding.
    expected = np.array([0.58532, 0.44600, 0.68520, 0.57687, 0.49284, 0.50575, 0.54589, 0.51910, 0.63206])
    np.testing.assert_allclose(frames[0, -1, -3:, -1, :].flatten()[:9], expected, atol=1e-4)


def test_pil_and_latent_output_types(tiny_pipe):
    images = run(tiny_pipe, output_type="pil", num_frames=5)
    assert len(images) == 1 and len(images[0]) == 5
    assert all(isinstance(image, PIL.Image.Image) and image.mode == "RGB" and image.size == (32, 16) for image in images[0])

    latents = run(tiny_pipe, output_type="latent")
    assert isinstance(latents, torch.Tensor) and latents.shape == LATENT_SHAPE
    # The "np" frames are exactly these latents decoded.
    decoded = np.concatenate(list(tiny_pipe.iter_decode(latents, 30)), axis=1)
    np.testing.assert_array_equal(decoded, run(tiny_pipe))


def test_same_seed_same_frames_other_seed_other_frames(tiny_pipe):
    first, again, other = run(tiny_pipe, seed=7), run(tiny_pipe, seed=7), run(tiny_pipe, seed=8)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 1e-3


def test_batch_with_a_generator_list_equals_single_runs(tiny_pipe):
    prompts = [PROMPT, "a blue cube sliding to the left"]
    batch = run(tiny_pipe, prompt=prompts, seed=[3, 4])
    singles = [run(tiny_pipe, prompt=prompt, seed=seed) for prompt, seed in zip(prompts, [3, 4])]

    assert batch.shape == (2, 30, 16, 32, 3)
    for index, single in enumerate(singles):
        np.testing.assert_allclose(batch[index], single[0], atol=1e-4)
    assert np.abs(batch[0] - batch[1]).mean() > 1e-3


# --- folders ---------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_index.json", "scheduler", "text_encoder", "tokenizer", "transformer", "vae"]
    for model in ("vae", "transformer"):
        assert sorted(p.name for p in (tmp_path / model).iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    # MiniLM's weights belong to its package: the folder keeps only the wrapper's config.
    assert [p.name for p in (tmp_path / "text_encoder").iterdir()] == ["config.json"]
    assert (tmp_path / "scheduler" / "scheduler_config.json").is_file()
    assert any((tmp_path / "tokenizer").iterdir())
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]  # safetensors only

    loaded = TextToVideoPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.text_encoder) is type(tiny_pipe.text_encoder)
    np.testing.assert_array_equal(run(loaded, seed=5), run(tiny_pipe, seed=5))


# --- starting noise --------------------------------------------------------------------------------


def frame_correlation(noise: torch.Tensor) -> float:
    """Mean correlation between every pair of latent frames of a (1, C, T, H, W) noise."""
    frames = noise[0].movedim(1, 0).flatten(1)  # (T, C * H * W)
    matrix = torch.corrcoef(frames)
    return float(matrix[~torch.eye(len(matrix), dtype=torch.bool)].mean())


def test_noise_frame_correlation_shares_the_noise_across_latent_frames(tiny_pipe, tmp_path):
    def starting_noise(pipe):  # (1, 16, 9, 16, 16) latents of seed 0
        return pipe.prepare_latents(1, 128, 128, 33, seeded(0), "cpu", torch.float32)

    independent = starting_noise(tiny_pipe)
    assert abs(frame_correlation(independent)) < 0.05

    tiny_pipe.register_to_config(noise_frame_correlation=0.6)
    tiny_pipe.save_pretrained(tmp_path)
    correlated = TextToVideoPipeline.from_pretrained(tmp_path)  # the folder keeps it
    assert correlated.config.noise_frame_correlation == 0.6
    noise = starting_noise(correlated)
    assert frame_correlation(noise) == pytest.approx(0.6, abs=0.05)
    assert noise.std().item() == pytest.approx(1.0, abs=0.05)  # still unit variance, as trained
    torch.testing.assert_close(noise, starting_noise(correlated))  # a seed stays a seed

    with pytest.raises(ValueError, match="noise_frame_correlation"):
        TextToVideoPipeline.from_components(tiny_pipe.vae, tiny_pipe.transformer, noise_frame_correlation=1.0)


# --- guidance interval -----------------------------------------------------------------------------


def transformer_batch_sizes(pipe, **overrides) -> tuple[list[int], np.ndarray]:
    """The batch size of every transformer call of one video (2 where guided, 1 where not) and its frames."""
    sizes = []
    hook = pipe.transformer.register_forward_pre_hook(lambda module, args, kwargs: sizes.append(kwargs["hidden_states"].shape[0]), with_kwargs=True)
    try:
        frames = run(pipe, **overrides)
    finally:
        hook.remove()
    return sizes, frames


def test_guidance_interval_guides_only_the_noise_levels_inside_it(tiny_pipe, tmp_path):
    four_steps = dict(num_inference_steps=4, guidance_scale=5.0)
    tiny_pipe.scheduler.set_timesteps(4)
    inside = [0.2 <= float(sigma) <= 0.8 for sigma in tiny_pipe.scheduler.sigmas[:4]]
    assert inside.count(True) not in (0, 4)  # the interval below cuts the schedule (shift 2: 1, 0.86, 0.67, 0.4)

    everywhere, guided_frames = transformer_batch_sizes(tiny_pipe, **four_steps)
    assert everywhere == [2, 2, 2, 2]  # the default interval, (0, 1), guides every step
    partly, partly_frames = transformer_batch_sizes(tiny_pipe, guidance_interval=(0.2, 0.8), **four_steps)
    assert partly == [2 if flag else 1 for flag in inside]  # outside: one pass, the text alone
    nowhere, nowhere_frames = transformer_batch_sizes(tiny_pipe, guidance_interval=(0.0, 0.0), **four_steps)
    assert nowhere == [1, 1, 1, 1]
    np.testing.assert_array_equal(nowhere_frames, run(tiny_pipe, num_inference_steps=4, guidance_scale=1.0))
    assert not np.array_equal(partly_frames, guided_frames) and not np.array_equal(partly_frames, nowhere_frames)

    tiny_pipe.register_to_config(default_guidance_interval=[0.2, 0.8])
    tiny_pipe.save_pretrained(tmp_path)
    loaded = TextToVideoPipeline.from_pretrained(tmp_path)  # the folder keeps it as its default
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.default_guidance_interval == [0.2, 0.8]
    assert transformer_batch_sizes(loaded, **four_steps)[0] == partly

    with pytest.raises(ValueError, match="default_guidance_interval"):
        TextToVideoPipeline.from_components(tiny_pipe.vae, tiny_pipe.transformer, default_guidance_interval=(0.9, 0.1))


# --- self-conditioning -----------------------------------------------------------------------------


def test_self_conditioning_hands_each_branch_its_own_last_estimate(tiny_pipe):
    # Each transformer call gets the clean latents (x_s - s v) that the same branch, unconditional or
    # text, estimated at the step before; the first call gets none, as the first training pass does.
    transformer = SpatioTemporalTransformer.from_config(tiny_pipe.transformer.config, self_conditioning=True).eval()
    transformer.load_state_dict(tiny_pipe.transformer.state_dict(), strict=False)
    with torch.no_grad():
        torch.nn.init.normal_(transformer.self_condition_embed.weight, std=0.5)
    pipe = TextToVideoPipeline(
        vae=tiny_pipe.vae, transformer=transformer, text_encoder=tiny_pipe.text_encoder, tokenizer=tiny_pipe.tokenizer, scheduler=tiny_pipe.scheduler
    )
    pipe.set_progress_bar_config(disable=True)
    calls = []
    hook = transformer.register_forward_hook(
        lambda module, args, kwargs, output: calls.append((kwargs["hidden_states"], kwargs["timestep"], kwargs["self_condition"], output[0])),
        with_kwargs=True,
    )
    try:
        frames = run(pipe, num_inference_steps=3, guidance_scale=5.0)
    finally:
        hook.remove()
    assert len(calls) == 3 and calls[0][2] is None
    for (noisy, timestep, _, velocity), (_, _, handed, _) in zip(calls, calls[1:]):
        estimate = noisy - timestep[:, None, :, None, None] / 1000 * velocity
        torch.testing.assert_close(handed, estimate)
        assert handed.shape[0] == 2 and not torch.equal(handed[0], handed[1])  # unconditional, text
    np.testing.assert_array_equal(run(pipe, num_inference_steps=3, guidance_scale=5.0), frames)  # same seed, same video
    assert not np.array_equal(run(tiny_pipe, num_inference_steps=3, guidance_scale=5.0), frames)  # the estimates count


# --- vocabulary ------------------------------------------------------------------------------------


def test_unfamiliar_words_are_those_no_training_caption_used(tiny_pipe, tmp_path):
    assert tiny_pipe.unfamiliar_words("a purple cat") == []  # a folder that lists no vocabulary: no opinion
    tiny_pipe.register_to_config(prompt_vocabulary=["red", "a", "ball", "on", "grass"])
    assert tiny_pipe.unfamiliar_words("A RED ball, 3 cats, a cat-like ball on grass") == ["cats", "cat", "like"]
    assert tiny_pipe.unfamiliar_words("一个红球") == ["一个红球"]  # letters of any script are words
    tiny_pipe.save_pretrained(tmp_path)
    loaded = TextToVideoPipeline.from_pretrained(tmp_path)
    assert loaded.config.prompt_vocabulary == ["a", "ball", "grass", "on", "red"]
    assert loaded.unfamiliar_words("a red dog") == ["dog"]


# --- input checks ----------------------------------------------------------------------------------


def bad_call(name: str, value, **others):
    label = type(value).__name__ if isinstance(value, torch.Tensor) or name == "generator" else repr(value)
    return pytest.param(name, {name: value, **others}, id=f"{name}={label}")


BAD_INPUTS = [
    bad_call("prompt", 42),
    bad_call("prompt", []),
    bad_call("prompt", ["fine", None]),
    bad_call("negative_prompt", 3),
    bad_call("negative_prompt", ["a", "b", "c"], prompt=["one", "two"]),
    bad_call("height", 24),
    bad_call("height", 0),
    bad_call("width", 40),
    bad_call("width", 32.0),
    bad_call("num_frames", 0),
    bad_call("num_frames", 100_000),
    bad_call("num_frames", 2.5),
    bad_call("num_inference_steps", 0),
    bad_call("num_inference_steps", 1.5),
    bad_call("guidance_scale", 0.5),
    bad_call("guidance_scale", "5"),
    bad_call("guidance_interval", (0.8, 0.2)),
    bad_call("guidance_interval", (0.0, 1.5)),
    bad_call("guidance_interval", 0.8),
    bad_call("generator", [seeded(0)], prompt=["one", "two"]),
    bad_call("latents", torch.zeros(1, 16, 8, 2, 4)),  # one latent frame short of 30 frames
    bad_call("output_type", "mp4"),
    bad_call("callback_on_step_end_tensor_inputs", ["latents", "noise"]),
]


@pytest.mark.parametrize("name, kwargs", BAD_INPUTS)
def test_bad_inputs_raise_a_value_error_naming_the_argument(tiny_pipe, name, kwargs):
    arguments = {"prompt": PROMPT, **CALL, **kwargs}
    with pytest.raises(ValueError, match=re.escape(f"`{name}`")):
        tiny_pipe(**arguments)


# --- the step callback -----------------------------------------------------------------------------


def test_callback_is_called_once_per_step_with_the_latents(tiny_pipe):
    calls = []

    def callback(pipe, step, timestep, tensors):
        calls.append((step, float(timestep), tuple(tensors["latents"].shape), tuple(tensors["noise_pred"].shape)))
        return {}

    run(tiny_pipe, num_inference_steps=3, output_type="latent", callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents", "noise_pred"])

    assert [step for step, *_ in calls] == [0, 1, 2]
    assert [t for _, t, *_ in calls] == pytest.approx(tiny_pipe.scheduler.timesteps.tolist())
    assert all(latents_shape == noise_shape == LATENT_SHAPE for _, _, latents_shape, noise_shape in calls)


def test_callback_can_interrupt_and_the_next_call_runs_whole(tiny_pipe):
    steps, kept = [], {}

    def stop_after_step_one(pipe, step, timestep, tensors):
        steps.append(step)
        kept["latents"] = tensors["latents"].clone()
        if step == 1:
            pipe._interrupt = True
        return {}

    latents = run(tiny_pipe, num_inference_steps=4, output_type="latent", callback_on_step_end=stop_after_step_one)

    assert steps == [0, 1]  # the loop stopped after the step that asked
    assert torch.equal(latents, kept["latents"])  # and kept that step's latents
    steps.clear()
    run(tiny_pipe, num_inference_steps=4, output_type="latent", callback_on_step_end=lambda pipe, step, t, tensors: steps.append(step) or {})
    assert steps == [0, 1, 2, 3]  # an interrupt does not leak into the next call


# --- the prompt cache ------------------------------------------------------------------------------


def test_prompt_cache_returns_identical_encodings(tiny_pipe):
    encoder_calls = []
    hook = tiny_pipe.text_encoder.register_forward_hook(lambda module, args, output: encoder_calls.append(args[0].shape[0]))
    try:
        first = tiny_pipe.encode_prompt([PROMPT])
        again = tiny_pipe.encode_prompt([PROMPT])
        batch = tiny_pipe.encode_prompt(["another prompt", PROMPT])
    finally:
        hook.remove()

    assert len(encoder_calls) == 2  # PROMPT once, "another prompt" once; the repeats came from the cache
    for part_first, part_again, part_batch in zip(first, again, batch):
        assert torch.equal(part_first, part_again)
        assert torch.equal(part_batch[1:], part_first)  # the same encoding whatever batch it sits in
    states, mask, pooled = first
    assert states.shape == (1, tiny_pipe.text_encoder.config.max_length, 384) and mask.shape == states.shape[:2] and pooled.shape == (1, 384)
    assert not torch.equal(batch[2][0], batch[2][1])  # a different prompt, a different vector
