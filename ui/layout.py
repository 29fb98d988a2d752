"""The studio's page: layout and wiring only. What the events do is in handlers.py.

Tabs: Create (one video, live preview, result, history), Compare seeds (2 to 4 seeds as one batch,
side by side) and Load recipe (a studio MP4 or .json back into the Create controls).

Every event has an api_name. The ones meant for scripts are public and take plain values:

    generate(prompt, negative_prompt, aspect, duration, quality, seed, steps, guidance, fps) -> (mp4, recipe)
    compare(prompt, negative_prompt, aspect, duration, quality, seeds, steps, guidance, fps) -> ([mp4], [recipe])
    load_recipe(file) -> recipe          (also the Load tab's upload event)

Recipes come back as JSON text (Recipe.from_json reads them): a browser would round a 63-bit seed
held as a JSON number.

The page's own wiring (streaming runs, button states, restoring controls) is left out of the API
page ("undocumented") but keeps a name, so that nothing in the queue goes by a number.
"""

from dataclasses import dataclass
from functools import partial

import gradio as gr

from pipeline import presets
from pipeline.pipeline_t2v import TextToVideoPipeline
from pipeline.recipe import MAX_GUIDANCE, MAX_PROMPT_CHARS, MAX_STEPS, MIN_GUIDANCE, MIN_STEPS, Recipe

from .handlers import EXAMPLE_PROMPTS, MAX_COMPARE_SEEDS, MIN_COMPARE_SEEDS, RunSlot, Studio
from .html import CSS, frame_shape_html, progress_html
from .runs import StudioSettings

PIPELINE_QUEUE = "pipeline"  # every event that runs the model waits in this one line, one at a time
UI = dict(api_visibility="undocumented")  # the page's own wiring: named, but not on the API page
INSTANT = dict(queue=False, **UI)  # cheap wiring that must not wait behind a run (Stop above all)


@dataclass
class RecipeInputs:
    """The controls of one recipe (Create and Compare each have a set). `seed` is the seed box on
    Create and the seeds box on Compare; `values` is in handlers.CONTROL_FIELDS order."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    aspect: gr.Radio
    duration: gr.Slider
    quality: gr.Radio
    seed: gr.Textbox
    steps: gr.Slider
    guidance: gr.Slider
    fps: gr.Radio
    shape: gr.HTML

    @property
    def values(self) -> list:
        return [self.prompt, self.negative_prompt, self.aspect, self.duration, self.quality, self.seed, self.steps, self.guidance, self.fps]


def _prompt_and_frame(defaults: Recipe, prefix: str) -> dict:
    """Prompt (with clickable examples), negative prompt, aspect ratio with its shape, duration, quality."""
    prompt = gr.Textbox(
        label="Prompt", placeholder=EXAMPLE_PROMPTS[0], lines=2, max_lines=6, max_length=MAX_PROMPT_CHARS,
        elem_id=f"{prefix}prompt",
    )  # fmt: skip
    gr.Examples(examples=[[p] for p in EXAMPLE_PROMPTS], inputs=[prompt], label="Try one of these")
    negative = gr.Textbox(label="Negative prompt", placeholder="what to steer away from (optional)", max_lines=3, max_length=MAX_PROMPT_CHARS)
    with gr.Group():  # the ratio and the frame it makes, in one box
        aspect = gr.Radio(list(presets.ASPECT_RATIOS), value=defaults.aspect, label="Aspect ratio", elem_classes="ling-aspect")
        shape = gr.HTML(frame_shape_html(defaults.aspect, defaults.quality, defaults.duration, defaults.fps), padding=True, elem_classes="ling-shape-block")
    duration = gr.Slider(
        presets.MIN_DURATION, presets.MAX_DURATION, value=defaults.duration, step=0.5, label="Duration (seconds)", elem_id=f"{prefix}duration"
    )
    quality = gr.Radio(
        [(f"{name} · {preset.short_side}p", name) for name, preset in presets.QUALITY_PRESETS.items()],
        value=defaults.quality, label="Quality",
    )  # fmt: skip
    return dict(prompt=prompt, negative_prompt=negative, aspect=aspect, duration=duration, quality=quality, shape=shape)


def _advanced(defaults: Recipe, prefix: str) -> dict:
    with gr.Accordion("Advanced", open=False, elem_id=f"{prefix}advanced"):
        steps = gr.Slider(
            MIN_STEPS, MAX_STEPS, value=defaults.steps, step=1, label="Steps", info="denoising steps: more is slower and finer",
            elem_id=f"{prefix}steps",
        )  # fmt: skip
        guidance = gr.Slider(
            MIN_GUIDANCE, MAX_GUIDANCE, value=defaults.guidance, step=0.5, label="Guidance",
            info="how closely to follow the prompt; 1 turns guidance off",
        )  # fmt: skip
        fps = gr.Radio(list(presets.FPS_CHOICES), value=defaults.fps, label="Frames per second")
    return dict(steps=steps, guidance=guidance, fps=fps)


def _wire_shape(studio: Studio, inputs: RecipeInputs, name: str) -> None:
    gr.on(
        [inputs.aspect.change, inputs.quality.change, inputs.duration.change, inputs.fps.change],
        studio.frame_shape, [inputs.aspect, inputs.quality, inputs.duration, inputs.fps], inputs.shape,
        api_name=name, show_progress="hidden", **INSTANT,
    )  # fmt: skip


def launch_options(settings: StudioSettings) -> dict:
    """What `demo.launch` needs besides host and port: the page's CSS (Gradio 6 takes it at launch),
    and the output folder as the only folder of ours the server may hand files out from."""
    return dict(css=CSS, allowed_paths=[str(settings.output_dir)], footer_links=["api"])


def build_demo(pipe: TextToVideoPipeline, settings: StudioSettings) -> gr.Blocks:
    """The studio's page around a loaded pipeline; launch it with `**launch_options(settings)`."""
    studio = Studio(pipe, settings)
    studio.warm_up()
    defaults = studio.default_recipe()
    keep_seconds = max(3600, int(settings.keep_hours * 3600))

    # Gradio keeps its own copy of every file it serves; let it forget them as the runs go.
    with gr.Blocks(title="Ling Studio", delete_cache=(3600, keep_seconds)) as demo:
        slot = gr.State(RunSlot())  # this session's run, for its Stop button (copied per session)
        history = gr.State([])  # this session's videos, newest first
        compared = gr.State([])  # the recipes of the last comparison, in slot order

        gr.Markdown(f"# Ling Studio\nText to video on your own machine · weights from `{studio.model_folder}`")
        with gr.Tabs() as tabs:
            # --- Create ---------------------------------------------------------------------
            with gr.Tab("Create", id="create"):
                with gr.Row():
                    with gr.Column(scale=5, min_width=340):
                        frame = _prompt_and_frame(defaults, "")
                        with gr.Row(equal_height=True):
                            seed = gr.Textbox(str(defaults.seed), label="Seed", max_lines=1, scale=4, elem_id="seed")
                            dice = gr.Button("New seed", scale=1, min_width=90, elem_id="dice")
                            lock = gr.Checkbox(False, label="Lock seed", info="keep it for the next runs", scale=2, elem_id="lock")
                        create = RecipeInputs(**frame, seed=seed, **_advanced(defaults, ""))
                        with gr.Row():
                            generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                            stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop")
                    with gr.Column(scale=6, min_width=340):
                        progress = gr.HTML(progress_html("Ready: type a prompt and press Generate"), elem_id="progress")
                        preview = gr.Image(
                            label="Live preview (the current estimate, a few frames across the clip)", type="numpy",
                            interactive=False, elem_classes="ling-preview", elem_id="preview", height=150, buttons=[],
                        )  # fmt: skip
                        video = gr.Video(label="Result", autoplay=True, loop=True, interactive=False, elem_id="result")
                        info = gr.Markdown(elem_id="result-info")
                        with gr.Row():
                            reuse_btn = gr.Button("Reuse recipe", elem_id="reuse")
                            download_btn = gr.DownloadButton("Download", interactive=False, elem_id="download")
                        with gr.Accordion("Recipe", open=True):
                            recipe_box = gr.Code(language="json", label="Recipe", interactive=False, lines=12, elem_id="recipe")
                gallery = gr.Gallery(
                    label="This session's videos (click one to show it again)", columns=6, fit_columns=False, height=190,
                    object_fit="contain", allow_preview=False, elem_id="history",
                )  # fmt: skip

            # --- Compare seeds --------------------------------------------------------------
            with gr.Tab("Compare seeds", id="compare"):
                with gr.Row():
                    with gr.Column(scale=4, min_width=320):
                        frame = _prompt_and_frame(defaults, "compare-")
                        seeds = gr.Textbox(label="Seeds", placeholder="e.g. 1, 2, 3 (empty: drawn at random)", max_lines=1, elem_id="seeds")
                        with gr.Row(equal_height=True):
                            count = gr.Radio(list(range(MIN_COMPARE_SEEDS, MAX_COMPARE_SEEDS + 1)), value=MAX_COMPARE_SEEDS, label="How many to draw", scale=3)
                            draw = gr.Button("Draw seeds", scale=1, min_width=90, elem_id="draw-seeds")
                        cmp = RecipeInputs(**frame, seed=seeds, **_advanced(defaults, "compare-"))
                        with gr.Row():
                            compare_btn = gr.Button("Compare", variant="primary", elem_id="compare")
                            compare_stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="compare-stop")
                    with gr.Column(scale=7, min_width=340):
                        compare_progress = gr.HTML(progress_html("Ready: one prompt, several seeds, side by side"), elem_id="compare-progress")
                        slot_previews, slot_videos, slot_buttons = [], [], []  # one slot per seed, two to a row
                        with gr.Column(elem_id="compare-slots"):
                            for _ in range(MAX_COMPARE_SEEDS // 2):
                                with gr.Row(equal_height=True):
                                    for _ in range(2):
                                        with gr.Column(min_width=200):
                                            slot_previews.append(
                                                gr.Image(type="numpy", interactive=False, visible=False, elem_classes="ling-preview", buttons=[])
                                            )
                                            slot_videos.append(gr.Video(autoplay=True, loop=True, interactive=False, visible=False))
                                            slot_buttons.append(gr.Button("Use this seed", size="sm", visible=False))

            # --- Load recipe ----------------------------------------------------------------
            with gr.Tab("Load recipe", id="load"):
                gr.Markdown("Drop a video made by Ling Studio (or the .json beside it): every setting goes back into Create.")
                upload = gr.File(label="Ling Studio MP4 or recipe .json", file_types=[".mp4", ".json"], type="filepath", elem_id="upload")
                loaded = gr.Code(language="json", label="Recipe found in the file", interactive=False, lines=12, elem_id="loaded")

        # --- API-only inputs and outputs: plain values, checked only by Recipe.validate ---------
        with gr.Column(visible=False):
            api_in = [
                gr.Textbox(label="prompt"),
                gr.Textbox(defaults.negative_prompt, label="negative_prompt"),
                gr.Textbox(defaults.aspect, label="aspect"),
                gr.Number(defaults.duration, label="duration"),
                gr.Textbox(defaults.quality, label="quality"),
                gr.Textbox("", label="seed"),  # text: seeds have 63 bits; empty draws one
                gr.Number(defaults.steps, label="steps"),
                gr.Number(defaults.guidance, label="guidance"),
                gr.Number(defaults.fps, label="fps"),
            ]
            api_seeds = gr.JSON(None, label="seeds")  # [1, 2] or "1, 2"
            api_video, api_videos = gr.File(label="video"), gr.File(file_count="multiple", label="videos")
            api_recipe, api_recipes = gr.Textbox(label="recipe"), gr.JSON(label="recipes")  # JSON text: exact seeds

        # --- wiring -----------------------------------------------------------------------------
        buttons = [generate_btn, stop_btn, compare_btn, compare_stop_btn]
        create_controls = [*create.values, lock, tabs]
        pipeline_run = dict(concurrency_id=PIPELINE_QUEUE, concurrency_limit=1)

        _wire_shape(studio, create, "frame_shape")
        _wire_shape(studio, cmp, "compare_frame_shape")
        dice.click(studio.new_seed, None, [create.seed, lock], api_name="new_seed", **INSTANT)
        create.seed.input(lambda: True, None, lock, api_name="lock_seed", **INSTANT)  # a typed seed is meant to be kept

        # Generate: check and swap the buttons at once -> stream the run -> buttons back. The ending
        # is wired to success and failure both: in Gradio 6, .then() does not follow a failed event.
        creating = generate_btn.click(
            studio.begin, [*create.values, lock, slot], [create.seed, progress, *buttons], api_name="begin", **INSTANT
        ).success(
            studio.create, [*create.values, slot, history], [preview, progress, video, info, recipe_box, download_btn, history, gallery],
            api_name="create", show_progress="hidden", **pipeline_run, **UI,
        )  # fmt: skip
        creating.success(studio.end, slot, buttons, api_name="end", **INSTANT)
        creating.failure(studio.end_after_error, slot, [*buttons, progress], api_name="end_after_error", **INSTANT)
        gr.on([stop_btn.click, compare_stop_btn.click], studio.stop, slot, [stop_btn, compare_stop_btn], api_name="stop", **INSTANT)

        reuse_btn.click(studio.apply_recipe, recipe_box, create_controls, api_name="reuse_recipe", **INSTANT)
        gallery.select(studio.show_history_item, history, [video, info, recipe_box, download_btn], api_name="show_history_item", **INSTANT)

        draw.click(studio.draw_seeds, count, cmp.seed, api_name="draw_seeds", **INSTANT)
        comparing = compare_btn.click(
            studio.begin_compare, [*cmp.values, count, slot], [cmp.seed, compare_progress, *buttons], api_name="begin_compare", **INSTANT
        ).success(
            studio.compare_stream, [*cmp.values, slot, history],
            [compare_progress, compared, history, gallery, *slot_previews, *slot_videos, *slot_buttons],
            api_name="compare_stream", show_progress="hidden", **pipeline_run, **UI,
        )  # fmt: skip
        comparing.success(studio.end, slot, buttons, api_name="end_compare", **INSTANT)
        comparing.failure(studio.end_after_error, slot, [*buttons, compare_progress], api_name="end_compare_after_error", **INSTANT)
        for index, button in enumerate(slot_buttons):
            button.click(partial(studio.use_seed, index), compared, create_controls, api_name=f"use_seed_{index + 1}", **INSTANT)

        loading = upload.upload(studio.load_recipe, upload, loaded, api_name="load_recipe")
        loading.success(studio.apply_recipe, loaded, create_controls, api_name="apply_loaded_recipe", **INSTANT)
        for ending, name in ((loading.success, "clear_upload"), (loading.failure, "clear_upload_after_error")):
            ending(lambda: None, None, upload, api_name=name, **INSTANT)  # ready for the next file

        # The API for scripts (gradio_client): no triggers on the page, plain values in and out.
        gr.on([], studio.generate, [*api_in, slot], [api_video, api_recipe], api_name="generate", **pipeline_run)
        gr.on([], studio.compare, [*api_in[:5], api_seeds, *api_in[6:], slot], [api_videos, api_recipes], api_name="compare", **pipeline_run)
    return demo
