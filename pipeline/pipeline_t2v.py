"""TextToVideoPipeline: prompt -> MiniLM -> flow-matching denoising with the transformer -> causal VAE.

Laid out like diffusers' WanPipeline: `__call__` is a numbered recipe, `check_inputs` names the
argument at fault, the scheduler (diffusers' FlowMatchEulerDiscreteScheduler) stays behind
`set_timesteps` / `step`, and each step's latents go to `callback_on_step_end` for live previews.

Continuation: a `context` (pixel frames or latents) fixes the first latent frames of the video. They
are clean (timestep 0 in the transformer, as in training) and kept as they are at every step, so the
model continues a video, or with one frame animates a still image.
"""

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from . import presets
from .recipe import prompt_words
from .text_encoder import MiniLMTextEncoder, load_tokenizer
from .transformer import SpatioTemporalTransformer
from .vae import CausalVideoVAE

MAX_NUM_FRAMES = presets.num_frames(presets.MAX_DURATION, max(presets.FPS_CHOICES))
OUTPUT_TYPES = ("np", "pil", "latent")
PROMPT_CACHE_SIZE = 64  # encoded prompts kept; the studio re-runs the same prompt with new seeds


def correlated_frame_noise(noise: torch.Tensor, correlation: float, generator=None) -> torch.Tensor:
    """Unit-variance noise (B, C, T, H, W) whose latent frames share `correlation` of their variance
    (the "mixed" noise of PYoCo, Ge et al., 2023), so that the layout the first sampling steps read
    out of the noise can be one layout for the whole clip rather than one per latent frame. Training
    and sampling must draw the same kind of noise."""
    shared = randn_tensor((*noise.shape[:2], 1, *noise.shape[3:]), generator=generator, device=noise.device, dtype=noise.dtype)
    return (1 - correlation) ** 0.5 * noise + correlation**0.5 * shared


@dataclass
class TextToVideoPipelineOutput(BaseOutput):
    r"""
    frames: `np.ndarray` (B, T, H, W, 3) in [0, 1] for "np", a list of lists of PIL images for
    "pil", or the latents (B, C, t, h, w) for "latent".
    """

    frames: np.ndarray | list[list[PIL.Image.Image]] | torch.Tensor


def check_guidance_interval(interval, name: str = "guidance_interval") -> None:
    """Raise ValueError naming `name` unless `interval` is two noise levels (low, high), 0 <= low <= high <= 1."""
    if not (
        isinstance(interval, (tuple, list))
        and len(interval) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in interval)
        and 0.0 <= interval[0] <= interval[1] <= 1.0
    ):
        raise ValueError(f"`{name}` must be two noise levels (low, high) with 0 <= low <= high <= 1, got {interval!r}")


class TextToVideoPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _callback_tensor_inputs = ["latents", "noise_pred"]

    def __init__(
        self,
        vae: CausalVideoVAE,
        transformer: SpatioTemporalTransformer,
        text_encoder: MiniLMTextEncoder,
        tokenizer,
        scheduler: FlowMatchEulerDiscreteScheduler,
        default_num_inference_steps: int = 20,  # sampling defaults measured for these weights
        default_guidance_scale: float = 5.0,
        model_name: str = "ling-small",  # what a video's recipe says made it
        noise_frame_correlation: float = 0.0,  # share of the starting noise's variance that all latent frames share, as trained
        default_guidance_interval: tuple[float, float] | list[float] = (0.0, 1.0),  # noise levels (sigma) that get guidance
        prompt_vocabulary: list[str] | None = None,  # the words of the training captions (None: not known)
    ):
        super().__init__()
        if not 0.0 <= noise_frame_correlation < 1.0:
            raise ValueError(f"`noise_frame_correlation` must be at least 0 and below 1, got {noise_frame_correlation!r}")
        check_guidance_interval(default_guidance_interval, "default_guidance_interval")
        self.register_modules(vae=vae, transformer=transformer, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        self.register_to_config(
            default_num_inference_steps=default_num_inference_steps,
            default_guidance_scale=default_guidance_scale,
            model_name=model_name,
            noise_frame_correlation=noise_frame_correlation,
            default_guidance_interval=list(default_guidance_interval),
            prompt_vocabulary=sorted(prompt_vocabulary) if prompt_vocabulary else None,
        )
        self._prompt_cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = OrderedDict()
        self._interrupt = False

    @classmethod
    def from_components(cls, vae, transformer, scheduler=None, **config) -> "TextToVideoPipeline":
        """A pipeline from a VAE and a transformer, with MiniLM from its package and a default scheduler."""
        scheduler = scheduler or FlowMatchEulerDiscreteScheduler(shift=2.0)
        return cls(vae=vae, transformer=transformer, text_encoder=MiniLMTextEncoder(), tokenizer=load_tokenizer(), scheduler=scheduler, **config)

    # --- geometry ------------------------------------------------------------------------------

    @property
    def pixel_multiple(self) -> int:
        """Heights and widths must be multiples of this: VAE compression times patch size."""
        patch = self.transformer.config.patch_size
        return self.vae.spatial_compression_ratio * max(patch[1], patch[2])

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # --- text ----------------------------------------------------------------------------------

    def encode_prompt(self, prompts: list[str], device: torch.device | None = None):
        """Token states (B, L, D), mask (B, L) and pooled vectors (B, D), cached per prompt."""
        device = device or self._execution_device
        for prompt in dict.fromkeys(prompts):
            if prompt in self._prompt_cache:
                continue
            # One prompt at a time: an encoding must not depend on which prompts shared its batch.
            tokens = self.tokenizer(
                [prompt], padding="max_length", max_length=self.text_encoder.config.max_length, truncation=True, return_tensors="pt"
            )
            states, pooled = self.text_encoder(tokens.input_ids.to(self.text_encoder.device), tokens.attention_mask.to(self.text_encoder.device))
            self._prompt_cache[prompt] = (states[0].cpu(), tokens.attention_mask[0].cpu(), pooled[0].cpu())
        for prompt in prompts:
            self._prompt_cache.move_to_end(prompt)
        while len(self._prompt_cache) > PROMPT_CACHE_SIZE:
            self._prompt_cache.popitem(last=False)
        states, mask, pooled = (torch.stack(parts).to(device) for parts in zip(*(self._prompt_cache[p] for p in prompts)))
        return states, mask, pooled

    def unfamiliar_words(self, prompt: str) -> list[str]:
        """The words of `prompt` that no training caption used, in order and each once; none when
        the folder does not list its vocabulary. A model draws nothing for a word it never read,
        and the bundled one has read only its world's captions (WORLD.md)."""
        vocabulary = self.config.get("prompt_vocabulary")
        if not vocabulary:
            return []
        known = set(vocabulary)
        return list(dict.fromkeys(word for word in prompt_words(prompt) if word not in known))

    # --- checks --------------------------------------------------------------------------------

    def check_inputs(
        self,
        prompt,
        negative_prompt,
        height,
        width,
        num_frames,
        num_inference_steps,
        guidance_scale,
        generator,
        latents,
        output_type,
        callback_on_step_end_tensor_inputs,
        context=None,
        guidance_interval=(0.0, 1.0),
    ):
        if isinstance(prompt, str):
            prompt = [prompt]
        if not isinstance(prompt, list) or not prompt or not all(isinstance(p, str) for p in prompt):
            raise ValueError(f"`prompt` must be a string or a non-empty list of strings, got {prompt!r}")
        if negative_prompt is not None:
            negatives = [negative_prompt] if isinstance(negative_prompt, str) else negative_prompt
            if not isinstance(negatives, list) or not all(isinstance(p, str) for p in negatives):
                raise ValueError(f"`negative_prompt` must be a string or a list of strings, got {negative_prompt!r}")
            if len(negatives) not in (1, len(prompt)):
                raise ValueError(f"`negative_prompt` has {len(negatives)} entries but `prompt` has {len(prompt)}; give one or as many")
        multiple = self.pixel_multiple
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % multiple != 0:
                raise ValueError(f"`{name}` must be a positive multiple of {multiple}, got {value!r}")
        if not isinstance(num_frames, int) or not 1 <= num_frames <= MAX_NUM_FRAMES:
            raise ValueError(f"`num_frames` must be a whole number from 1 to {MAX_NUM_FRAMES}, got {num_frames!r}")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a whole number of at least 1, got {num_inference_steps!r}")
        if not isinstance(guidance_scale, (int, float)) or not guidance_scale >= 1.0:
            raise ValueError(f"`guidance_scale` must be a number of at least 1.0 (1.0 turns guidance off), got {guidance_scale!r}")
        check_guidance_interval(guidance_interval)
        if isinstance(generator, list) and len(generator) != len(prompt):
            raise ValueError(f"`generator` is a list of {len(generator)} generators but there are {len(prompt)} prompts")
        if latents is not None:
            expected = self._latent_shape(len(prompt), height, width, num_frames)
            if tuple(latents.shape) != expected:
                raise ValueError(f"`latents` must have shape {expected} for these sizes, got {tuple(latents.shape)}")
        if context is not None:
            self._check_context(context, len(prompt), height, width, num_frames)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if callback_on_step_end_tensor_inputs is not None:
            unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
            if unknown:
                raise ValueError(f"`callback_on_step_end_tensor_inputs` may only name {self._callback_tensor_inputs}, got {unknown}")

    def _context_is_latent(self, context) -> bool:
        """A torch tensor with the VAE's latent channels is latents; anything else is pixels."""
        return isinstance(context, torch.Tensor) and context.ndim == 5 and context.shape[1] == self.vae.config.latent_channels

    def _check_context(self, context, batch_size, height, width, num_frames):
        if isinstance(context, np.ndarray):
            if context.ndim not in (4, 5) or context.shape[-1] != 3:
                raise ValueError(f"`context` as a numpy array must be frames (T, H, W, 3) or (B, T, H, W, 3), got shape {context.shape}")
            context_batch, frames, size = (context.shape[0] if context.ndim == 5 else 1), context.shape[-4], tuple(context.shape[-3:-1])
        elif isinstance(context, torch.Tensor):
            if context.ndim != 5 or context.shape[1] not in (3, self.vae.config.latent_channels):
                raise ValueError(
                    f"`context` as a tensor must be pixels (B, 3, T, H, W) or latents (B, {self.vae.config.latent_channels}, t, h, w), "
                    f"got shape {tuple(context.shape)}"
                )
            context_batch, frames, size = context.shape[0], context.shape[2], tuple(context.shape[-2:])
        else:
            raise ValueError(f"`context` must be a numpy array of frames or a torch tensor, got {type(context).__name__}")
        if context_batch not in (1, batch_size):
            raise ValueError(f"`context` holds {context_batch} videos but there are {batch_size} prompts; give one or as many")
        scale, ratio = self.vae.spatial_compression_ratio, self.vae.temporal_compression_ratio
        if self._context_is_latent(context):
            expected, latent_frames = (height // scale, width // scale), self.vae.num_latent_frames(num_frames)
            if size != expected:
                raise ValueError(f"`context` latents must be {expected[0]}x{expected[1]} (h x w) for {height}x{width} pixels, got {size[0]}x{size[1]}")
            if not 1 <= frames < latent_frames:
                raise ValueError(f"`context` must have from 1 to {latent_frames - 1} latent frames (fewer than the video's {latent_frames}), got {frames}")
            return
        if size != (height, width):
            raise ValueError(f"`context` frames must be {height}x{width} (height x width) pixels, got {size[0]}x{size[1]}")
        if (frames - 1) % ratio != 0:
            raise ValueError(f"`context` must have 1 + {ratio}k frames (1, {1 + ratio}, {1 + 2 * ratio}, ...) for the VAE, got {frames}")
        if frames >= num_frames:
            raise ValueError(f"`context` must be shorter than the video: {frames} frames given, num_frames is {num_frames}")

    def encode_context(self, context, batch_size: int, device) -> torch.Tensor:
        """Normalised latents (B, C, t, h, w) of a context that check_inputs accepted.

        Pixels are numpy frames (uint8 in 0..255, or float in [0, 1] as the "np" output gives) or a
        tensor (B, 3, T, H, W) in [-1, 1]; they are encoded with the VAE's posterior mean, one video
        at a time, and normalised with the VAE's latent statistics. Latents pass through as they are.
        """
        if self._context_is_latent(context):
            latents = context.to(device=device, dtype=torch.float32)
        else:
            if isinstance(context, np.ndarray):
                pixels = torch.from_numpy(context)
                pixels = pixels.float() / 127.5 - 1 if context.dtype == np.uint8 else pixels.float() * 2 - 1
                pixels = pixels.movedim(-1, -4)  # (..., T, H, W, 3) -> (..., 3, T, H, W)
                pixels = pixels if pixels.ndim == 5 else pixels[None]
            else:
                pixels = context
            pixels = pixels.to(device=device, dtype=self.vae.dtype)
            mean, std = self.vae.latent_stats(device, torch.float32)
            latents = torch.cat([self.vae.encode(pixels[i : i + 1]).latent_dist.mode().float() for i in range(pixels.shape[0])])
            latents = (latents - mean) / std
        return latents.expand(batch_size, -1, -1, -1, -1)

    # --- latents -------------------------------------------------------------------------------

    def _latent_shape(self, batch_size: int, height: int, width: int, num_frames: int) -> tuple[int, ...]:
        scale = self.vae.spatial_compression_ratio
        return (batch_size, self.vae.config.latent_channels, self.vae.num_latent_frames(num_frames), height // scale, width // scale)

    def prepare_latents(self, batch_size, height, width, num_frames, generator, device, dtype, latents=None) -> torch.Tensor:
        if latents is not None:
            return latents.to(device=device, dtype=dtype)
        return self.starting_noise(self._latent_shape(batch_size, height, width, num_frames), generator).to(device=device, dtype=dtype)

    def starting_noise(self, shape, generator=None) -> torch.Tensor:
        """fp32 noise (B, C, T, h, w) of the kind this folder's transformer was trained on, drawn on
        the CPU from the generator, so a seed means the same video on any device."""
        noise = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
        if self.config.noise_frame_correlation:  # drawn after the per-frame noise, so a seed keeps its frames' noise
            noise = correlated_frame_noise(noise, self.config.noise_frame_correlation, generator)
        return noise

    def iter_decode(self, latents: torch.Tensor, num_frames: int | None = None, chunk_latent_frames: int = 2) -> Iterator[np.ndarray]:
        """Decode diffusion-space latents a few latent frames at a time: yields float arrays
        (B, t, H, W, 3) in [0, 1], cut so that `num_frames` frames come out in all."""
        mean, std = self.vae.latent_stats(latents.device, self.vae.dtype)
        z = latents.to(self.vae.dtype) * std + mean
        remaining = num_frames if num_frames is not None else 1 + self.vae.temporal_compression_ratio * (z.shape[2] - 1)
        # Each video decodes on its own so that it comes out bit-identical whatever batch it was in.
        streams = [self.vae.iter_decode(z[i : i + 1], chunk_latent_frames) for i in range(z.shape[0])]
        with torch.no_grad():
            for chunks in zip(*streams):
                if remaining <= 0:
                    break
                chunk = torch.cat(chunks)[:, :, :remaining]  # (B, C, t, H, W)
                remaining -= chunk.shape[2]
                yield ((chunk.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).cpu().numpy()  # (B, t, H, W, 3)

    def _predict_velocity(self, latents, timestep, index, conditioning, do_guidance, guidance_scale, frame_rate, previous_clean=None):
        """The guided velocity of one video of the batch; `timestep` is per latent frame, (1, T).

        Videos go through the transformer one at a time (with their guidance pair): CPU kernels
        round differently for different batch sizes, and a seed must give the same video alone or
        in a seed-comparison batch. On a CPU this costs nothing; batching buys little there.

        Returns the guided velocity and, for a self-conditioning transformer (else None), the clean
        latents each branch (unconditional, then text) estimates, which it gets back at the next
        step as `previous_clean`: each branch its own, as in training, so that the text's estimate
        does not leak into the unconditional branch and weaken the guidance.
        """
        text, text_mask, pooled = (part[index : index + 1] for part in conditioning[:3])
        model_input = latents
        if do_guidance:
            neg_text, neg_mask, neg_pooled = (part[index : index + 1] for part in conditioning[3:])
            model_input = torch.cat([latents, latents])
            text, text_mask, pooled = torch.cat([neg_text, text]), torch.cat([neg_mask, text_mask]), torch.cat([neg_pooled, pooled])
        self_conditioning = self.transformer.config.get("self_conditioning")
        if self_conditioning and previous_clean is not None and previous_clean.shape[0] != model_input.shape[0]:
            previous_clean = previous_clean[-1:].expand(model_input.shape[0], -1, -1, -1, -1)  # guidance off last step: the text's
        velocity = self.transformer(
            hidden_states=model_input.to(self.transformer.dtype),
            timestep=timestep.expand(model_input.shape[0], -1),
            encoder_hidden_states=text,
            pooled_text=pooled,
            encoder_attention_mask=text_mask,
            frame_rate=frame_rate,
            self_condition=previous_clean if self_conditioning else None,
            return_dict=False,
        )[0].float()
        branch_clean = model_input - timestep[:, None, :, None, None] / 1000 * velocity if self_conditioning else None  # x0 = x_s - s v
        if do_guidance:
            velocity_uncond, velocity_text = velocity.chunk(2)
            velocity = velocity_uncond + guidance_scale * (velocity_text - velocity_uncond)
        return velocity, branch_clean

    # --- the call ------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        height: int = 64,
        width: int = 112,
        num_frames: int = 30,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
        frame_rate: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        context: np.ndarray | torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[["TextToVideoPipeline", int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ):
        r"""Generate videos from text.

        Args:
            prompt: what the video shows; a list makes a batch.
            negative_prompt: what to steer away from with classifier-free guidance (default "").
            height, width: pixels, multiples of `self.pixel_multiple`.
            num_frames: frames in the output; latents cover them and the decode is cut to length.
            num_inference_steps, guidance_scale: default to the model folder's measured defaults.
            guidance_interval: (low, high) noise levels (sigma, 1 = pure noise) at which guidance
                applies; the other steps take the text-conditioned prediction alone, in one pass
                instead of two. Defaults to the model folder's measured interval.
            frame_rate: frames per second the motion is timed for (default: the transformer's).
            generator: one per prompt (a list) or one for the batch; seeds the noise on the CPU.
            latents: initial noise of shape (B, C, t, h, w) instead of drawing it.
            context: the start of the video, kept as given; the model continues from it. Either
                pixel frames, which are encoded with the VAE and must number 1 + 4k (1 animates a
                still image), fewer than `num_frames`: a numpy array (T, H, W, 3) or (B, T, H, W, 3),
                uint8 or float in [0, 1] (the "np" output of an earlier call); or a tensor
                (B, 3, T, H, W) in [-1, 1]. Or latents: a tensor (B, C, t, h, w) with the VAE's
                `latent_channels` channels, already normalised (the "latent" output of an earlier
                call), fewer latent frames than the video has. A torch tensor is taken as latents
                when its channel count is the VAE's latent channels, as pixels when it is 3. One
                context serves a whole batch, or give one per prompt. The output includes the context
                frames (decoded back from their latents).
            output_type: "np", "pil" or "latent".
            callback_on_step_end: called as `callback(pipe, step, timestep, tensors)` after each step
                with the tensors named in `callback_on_step_end_tensor_inputs`; may return new latents.
        """
        num_inference_steps = num_inference_steps if num_inference_steps is not None else self.config.default_num_inference_steps
        guidance_scale = guidance_scale if guidance_scale is not None else self.config.default_guidance_scale
        guidance_interval = guidance_interval if guidance_interval is not None else self.config.default_guidance_interval
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]

        # 1. Check inputs
        self.check_inputs(
            prompt, negative_prompt, height, width, num_frames, num_inference_steps, guidance_scale,
            generator, latents, output_type, callback_on_step_end_tensor_inputs, context, guidance_interval,
        )  # fmt: skip
        self._interrupt = False
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch_size = len(prompts)
        device = self._execution_device
        do_guidance = guidance_scale > 1.0

        # 2. Encode the prompt (and the negative prompt for classifier-free guidance)
        text, text_mask, pooled = self.encode_prompt(prompts, device)
        if do_guidance:
            negatives = negative_prompt if isinstance(negative_prompt, list) else [negative_prompt or ""] * batch_size
            if len(negatives) == 1:
                negatives = negatives * batch_size
            neg_text, neg_mask, neg_pooled = self.encode_prompt(negatives, device)
            conditioning = (text, text_mask, pooled, neg_text, neg_mask, neg_pooled)
        else:
            conditioning = (text, text_mask, pooled)

        # 3. Timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 4. Noise latents; context frames replace the noise at the start (the rest keep the noise
        #    they would have without a context, so a seed stays a seed).
        latents = self.prepare_latents(batch_size, height, width, num_frames, generator, device, torch.float32, latents)
        frame_rate = frame_rate if frame_rate is not None else self.transformer.config.default_frame_rate
        context_frames = 0
        if context is not None:
            context_latents = self.encode_context(context, batch_size, device)
            context_frames = context_latents.shape[2]
            latents = torch.cat([context_latents, latents[:, :, context_frames:]], dim=2)  # never writes into a caller's tensor

        # 5. Denoising loop
        previous_clean = [None] * batch_size  # per video: its branches' last clean estimates
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for step, t in enumerate(timesteps):
                if self.interrupt:
                    break  # Stop: keep the latents of the last finished step
                # Per latent frame: clean context frames are at timestep 0, the rest at t.
                timestep = t.expand(1, latents.shape[2]).clone()  # (1, T)
                timestep[:, :context_frames] = 0
                # Guidance outside the folder's interval is skipped: the text alone, in one pass (faster).
                guided = do_guidance and guidance_interval[0] <= float(self.scheduler.sigmas[step]) <= guidance_interval[1]
                predictions = [
                    self._predict_velocity(latents[i : i + 1], timestep, i, conditioning, guided, guidance_scale, frame_rate, previous_clean[i])
                    for i in range(batch_size)
                ]
                noise_pred = torch.cat([velocity for velocity, _ in predictions])
                previous_clean = [clean for _, clean in predictions]
                latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
                if context_frames:  # the scheduler moved the context frames too; they stay as given
                    latents = torch.cat([context_latents, latents[:, :, context_frames:]], dim=2)

                if callback_on_step_end is not None:
                    local_tensors = {"latents": latents, "noise_pred": noise_pred}
                    callback_kwargs = {name: local_tensors[name] for name in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, step, t, callback_kwargs) or {}
                    latents = callback_outputs.pop("latents", latents)
                progress_bar.update()

        # 6. Decode
        if output_type == "latent":
            frames = latents
        else:
            frames = np.concatenate(list(self.iter_decode(latents, num_frames)), axis=1)  # (B, T, H, W, 3)
            if output_type == "pil":
                frames = [[PIL.Image.fromarray((frame * 255).round().astype(np.uint8)) for frame in video] for video in frames]

        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return TextToVideoPipelineOutput(frames=frames)
