"""The studio's event handlers: thin adapters between the page's controls and the pipeline.

A handler turns control values into a `Recipe` (the one type that travels from the page to the file
and back), runs `pipeline.generate.generate_videos` in a worker thread, and turns what comes back
(previews from the step callback, files on disk) into values for the page. No model math lives here:
previews come from `pipeline.preview`, sizes from `pipeline.presets`.

What belongs to one browser session lives in `gr.State`: its current run (`RunSlot`, so that its
Stop reaches its own run and nobody else's) and its history. What every session shares lives on the
one `Studio` made when the page is built: the pipeline, its previewer, and a lock that keeps one run
on the pipeline at a time (the queue already runs one at a time; the lock also covers a run whose
page went away while its worker thread finishes). After FramePack's demo_gradio.py (a worker thread
feeding a stream of previews; buttons that follow the run's state), without its global stream.
"""

import dataclasses
import json
import logging
import queue
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from pipeline import presets
from pipeline.export import read_recipe
from pipeline.generate import GenerationResult, generate_videos, model_name, unfamiliar_words_text
from pipeline.pipeline_t2v import TextToVideoPipeline
from pipeline.preview import LatentPreviewer, step_estimate
from pipeline.recipe import MAX_SEED, Recipe

from .html import format_seconds, frame_shape_html, progress_html, step_text
from .runs import StudioSettings, clean_old_runs, new_run_dir

logger = logging.getLogger(__name__)

# Prompts of the world the bundled model is trained on (training/world.py): shapes, colours, motions.
EXAMPLE_PROMPTS = [
    "a red ball bouncing on a black background",
    "a blue square moving right over a sky background",
    "a green ball and a yellow ball bouncing on a gray background",
    "a small white star spinning against a navy background",
    "a large orange triangle moving in a circle on a sunset background",
]
MIN_COMPARE_SEEDS, MAX_COMPARE_SEEDS = 2, 4
HISTORY_LIMIT = 48  # videos kept in a session's history (newest first); their files may outlive it
PREVIEW_FRAMES = 4  # frames across the clip in a live preview strip

# The order in which the Create controls are read and restored, everywhere.
CONTROL_FIELDS = ("prompt", "negative_prompt", "aspect", "duration", "quality", "seed", "steps", "guidance", "fps")


# --- reading the controls ---------------------------------------------------------------------------


def random_seed() -> int:
    """A fresh seed from the whole 63-bit range."""
    return secrets.randbelow(MAX_SEED + 1)


def parse_seed(value: Any) -> int:
    """A seed from a text box ("123") or an API call (123); range errors are left to Recipe.validate."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED} (2^63 - 1); got {value!r}")


def parse_seeds(value: Any) -> list[int]:
    """2 to 4 different seeds from "1, 2 3" or [1, 2, 3]."""
    items = value if isinstance(value, (list, tuple)) else [part for part in re.split(r"[\s,;]+", str(value or "")) if part]
    if not MIN_COMPARE_SEEDS <= len(items) <= MAX_COMPARE_SEEDS:
        raise ValueError(f"seeds: give {MIN_COMPARE_SEEDS} to {MAX_COMPARE_SEEDS} seeds separated by commas; got {len(items)}")
    seeds = [parse_seed(item) for item in items]
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ValueError(f"seeds must differ from each other; {repeated[0]} is given twice")
    return seeds


def _whole(value: Any) -> Any:
    """Sliders and number boxes send 20.0 for 20; anything else goes on to Recipe.validate as it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _number(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def recipe_text(recipe: Recipe) -> str:
    """A recipe as the page and the API show it: JSON text. Text, not a JSON value, because a
    browser reads JSON numbers as 64-bit floats and would round a 63-bit seed."""
    return json.dumps(recipe.to_dict(), indent=2, ensure_ascii=False)


def parse_recipe(value: str | dict) -> Recipe:
    """A recipe from JSON text or a dict; ValueError if it is not one."""
    return Recipe.from_dict(value) if isinstance(value, dict) else Recipe.from_json(value)


def recipe_controls(recipe: Recipe) -> tuple:
    """The Create controls' values for a recipe, in CONTROL_FIELDS order (the seed as text: a
    browser's numbers hold only 53 bits, a seed has 63)."""
    values = dataclasses.asdict(recipe)
    values["seed"] = str(recipe.seed)
    return tuple(values[name] for name in CONTROL_FIELDS)


# --- one session's run -----------------------------------------------------------------------------


class RunControl:
    """The Stop signal of one run. The step callback turns it into the pipeline's interrupt; while the
    run holds the pipeline, a stop also interrupts it directly, which reaches the decoding loop."""

    def __init__(self):
        self.stop_requested = threading.Event()
        self._lock = threading.Lock()
        self._pipe: TextToVideoPipeline | None = None
        self.taken = False  # a run has started with this control

    def request_stop(self) -> None:
        self.stop_requested.set()
        with self._lock:
            if self._pipe is not None:
                self._pipe._interrupt = True

    @contextmanager
    def holding(self, pipe: TextToVideoPipeline):
        with self._lock:
            self._pipe = pipe
        try:
            yield
        finally:
            with self._lock:
                self._pipe = None


class RunSlot:
    """A browser session's current run (kept in gr.State): the Generate click makes its control at
    once, so a Stop pressed while the run still waits in the queue is not lost."""

    def __init__(self):
        self.control: RunControl | None = None

    def prepare(self) -> RunControl:
        self.control = RunControl()
        return self.control

    def take(self) -> RunControl:
        """The control prepared for this run; a fresh one for a call that skipped the Generate click (the API)."""
        control = self.control
        if control is None or control.taken:
            control = self.prepare()
        control.taken = True
        return control


@dataclass
class RunUpdate:
    """What a run has to show: after each denoising step, when decoding starts, and at the end."""

    step: int  # denoising steps done
    total: int
    seconds_left: float | None = None
    previews: list[np.ndarray] = field(default_factory=list)  # one strip per video
    decoding: bool = False
    results: list[GenerationResult] | None = None  # set on the last update only

    @property
    def text(self) -> str:
        if self.decoding:
            return f"Step {self.total} of {self.total} · writing the video"
        return step_text(self.step, self.total, self.seconds_left)


# --- the studio ------------------------------------------------------------------------------------


class Studio:
    """Everything the handlers share; its methods are the page's event handlers."""

    def __init__(self, pipe: TextToVideoPipeline, settings: StudioSettings):
        self.pipe = pipe
        self.settings = settings
        self.previewer = LatentPreviewer(pipe.vae)
        self.lock = threading.Lock()  # one run on the pipeline at a time
        self.model = model_name(pipe)

    @property
    def model_folder(self) -> str:
        """Where the weights came from, as the person who started the studio would write it."""
        folder = Path(self.pipe.name_or_path or self.model).resolve()
        try:
            return str(folder.relative_to(Path.cwd()))
        except ValueError:
            return str(folder)

    def warm_up(self) -> None:
        """Fit the previewer now, so the first run's previews cost nothing extra."""
        self.previewer.weights  # noqa: B018  (fitting is a side effect of the first read)

    def default_recipe(self) -> Recipe:
        """Defaults for the controls: the presets', and the model folder's sampling defaults."""
        return Recipe(
            prompt="", steps=int(self.pipe.config.default_num_inference_steps),
            guidance=float(self.pipe.config.default_guidance_scale), model=self.model,
        )  # fmt: skip

    def build_recipe(self, prompt, negative_prompt, aspect, duration, quality, seed, steps, guidance, fps) -> Recipe:
        """A validated recipe from the controls; raises ValueError naming the field at fault."""
        recipe = Recipe(
            prompt=(prompt or "").strip(), negative_prompt=(negative_prompt or "").strip(), aspect=aspect,
            duration=_number(duration), fps=_whole(fps), seed=parse_seed(seed), steps=_whole(steps),
            guidance=_number(guidance), quality=quality, model=self.model,
        )  # fmt: skip
        return recipe.validate()

    # --- running -------------------------------------------------------------------------------

    def run(self, recipes: list[Recipe], control: RunControl) -> Iterator[RunUpdate]:
        """Generate `recipes` as one batch in a worker thread; yield an update per denoising step
        (only the newest when several are waiting), one when decoding starts, and a last one with
        the results. Files go to a new folder of their own under the output folder."""
        clean_old_runs(self.settings.output_dir, self.settings.keep_hours)
        run_dir = new_run_dir(self.settings.output_dir)
        paths = [run_dir / f"ling-{recipe.seed}.mp4" for recipe in recipes]
        total = recipes[0].steps
        updates: queue.Queue = queue.Queue()

        def on_step(pipe, step, timestep, tensors):
            if control.stop_requested.is_set():
                pipe._interrupt = True  # the loop ends before the next step; nothing is written
            previews = self.previewer.strips(step_estimate(pipe.scheduler, step, tensors), PREVIEW_FRAMES)
            updates.put(("step", step + 1, time.perf_counter(), previews))
            return {}

        def work():
            try:
                with self.lock, control.holding(self.pipe):
                    updates.put(("start", time.perf_counter()))
                    if control.stop_requested.is_set():  # stopped while waiting for its turn
                        results = [GenerationResult(recipe, None, 0.0, stopped=True) for recipe in recipes]
                    else:
                        results = generate_videos(self.pipe, recipes, paths, on_step, ["latents", "noise_pred"])
                updates.put(("done", results))
            except Exception as error:  # handed to the page's thread, which shows it
                logger.exception("run failed")
                updates.put(("error", error))

        threading.Thread(target=work, name="ling-run", daemon=True).start()
        started, previews = time.perf_counter(), []
        try:
            while True:
                message = updates.get()
                while message[0] == "step" and not updates.empty():
                    message = updates.get()  # the page only needs the newest preview
                kind = message[0]
                if kind == "start":
                    started = message[1]
                elif kind == "step":
                    _, step, now, previews = message
                    seconds_left = (now - started) / step * (total - step)
                    yield RunUpdate(step, total, seconds_left, previews, decoding=step == total)
                elif kind == "done":
                    yield RunUpdate(total, total, 0.0, previews, results=message[1])
                    return
                else:
                    raise gr.Error(f"The run failed: {message[1]}")
        finally:
            # The run ended, or the page went away mid-run: make sure the worker stops soon.
            control.request_stop()
            if not any(run_dir.iterdir()):
                run_dir.rmdir()  # a stopped or failed run leaves nothing behind, not even its folder

    def _run_to_end(self, recipes: list[Recipe], slot: "RunSlot") -> list[GenerationResult]:
        update = None
        for update in self.run(recipes, slot.take()):
            pass
        if update.results[0].stopped:
            raise gr.Error("The run was stopped before it finished; no video was saved.")
        return update.results

    # --- Create tab ----------------------------------------------------------------------------

    def new_seed(self) -> tuple[str, bool]:
        """The dice: a fresh seed, locked so that the next run uses it."""
        return str(random_seed()), True

    def begin(self, prompt, negative_prompt, aspect, duration, quality, seed, steps, guidance, fps, lock: bool, slot: RunSlot):
        """Generate clicked, before the queue: draw the run's seed unless locked, check the settings
        (a mistake is answered at once and changes nothing), prepare Stop, swap the buttons."""
        if not lock or not str(seed or "").strip():
            seed = str(random_seed())
        try:
            self.build_recipe(prompt, negative_prompt, aspect, duration, quality, seed, steps, guidance, fps)
        except ValueError as error:
            raise gr.Error(str(error), title="Check the settings") from None
        slot.prepare()
        return (seed, progress_html("Waiting for the model…"), *_button_states(running=True))

    def warn_unfamiliar_words(self, prompt: str) -> None:
        """A warning, not an error: the run goes ahead, but the person learns why a word of theirs
        may not show up in the video. Given from the queued run, not the instant check before it:
        Gradio shows warnings only from queued events."""
        unfamiliar = self.pipe.unfamiliar_words(prompt)
        if unfamiliar:
            gr.Warning(f"Prompt: {unfamiliar_words_text(unfamiliar)}", title="Words this model does not know")

    def end(self, slot: RunSlot):
        """The run ended (done or stopped): buttons back to idle."""
        slot.control = None
        return _button_states(running=False)

    def end_after_error(self, slot: RunSlot):
        """The run failed (its message is already on screen): buttons back, and the bar says so."""
        return (*self.end(slot), progress_html("The run failed: nothing was saved."))

    def stop(self, slot: RunSlot):
        """Stop this session's run: within one denoising step, and no file is left."""
        if slot.control is not None:
            slot.control.request_stop()
        return gr.Button(value="Stopping…", interactive=False), gr.Button(value="Stopping…", interactive=False)

    def create(self, prompt, negative_prompt, aspect, duration, quality, seed, steps, guidance, fps, slot: RunSlot, history: list):
        """Stream a run for the Create tab. Yields (preview, progress, video, info, recipe, download,
        history, gallery)."""
        try:
            recipe = self.build_recipe(prompt, negative_prompt, aspect, duration, quality, seed, steps, guidance, fps)
        except ValueError as error:
            raise gr.Error(str(error), title="Check the settings") from None
        self.warn_unfamiliar_words(recipe.prompt)
        skip = gr.skip()
        for update in self.run([recipe], slot.take()):
            if update.results is None:
                yield update.previews[0], progress_html(update.text, update.step, update.total), *[skip] * 6
        result = update.results[0]
        if result.stopped:
            text = "Stopped: nothing was saved. Press Generate to run again."
            yield skip, progress_html(text), *[skip] * 6
            return
        history = [_history_entry(result)] + list(history or [])[: HISTORY_LIMIT - 1]
        done = progress_html(f"Done in {format_seconds(result.seconds)}", update.total, update.total)
        yield (update.previews[0], done, *self._show_result(result.video_path, recipe), history, gallery_items(history))

    def generate(self, prompt, negative_prompt, aspect, duration, quality, seed, steps, guidance, fps, slot: RunSlot):
        """API: one video. An empty seed draws a random one. Returns (mp4 path, recipe JSON text)."""
        if str(seed if seed is not None else "").strip() == "":
            seed = random_seed()
        try:
            recipe = self.build_recipe(prompt, negative_prompt, aspect, duration, quality, seed, steps, guidance, fps)
        except ValueError as error:
            raise gr.Error(str(error)) from None
        result = self._run_to_end([recipe], slot)[0]
        return str(result.video_path), recipe_text(recipe)

    def _show_result(self, video_path: Path | str, recipe: Recipe) -> tuple:
        """(video, info, recipe JSON, download button) for one finished video."""
        info = (
            f"**Seed {recipe.seed}** · {recipe.width}×{recipe.height} px · {recipe.num_frames} frames at {recipe.fps} fps · "
            f"{recipe.steps} steps · guidance {recipe.guidance:g}"
        )
        download = gr.DownloadButton(label="Download MP4", value=str(video_path), interactive=True)
        return str(video_path), info, recipe_text(recipe), download

    def show_history_item(self, history: list, evt: gr.SelectData):
        """A history thumbnail clicked: show that video and its recipe as the result."""
        entry = history[evt.index]
        return self._show_result(entry["video"], Recipe.from_dict(entry["recipe"]))

    def apply_recipe(self, recipe: str | dict | None):
        """Put every setting of a recipe (JSON text or dict) back in the Create controls, seed
        locked, and show Create."""
        if not recipe:
            raise gr.Error("There is no recipe yet: generate a video or load one first.")
        try:
            loaded = parse_recipe(recipe)
        except ValueError as error:
            raise gr.Error(str(error)) from None
        if loaded.model != self.model:
            gr.Warning(f"This recipe was made with the model '{loaded.model}'; this studio runs '{self.model}', so the video will differ.")
        return (*recipe_controls(loaded), True, gr.Tabs(selected="create"))

    # --- Load recipe tab -----------------------------------------------------------------------

    def load_recipe(self, file: str | None) -> str:
        """API and Load tab: the recipe of a studio MP4 or .json, as JSON text."""
        if not file:
            raise gr.Error("Drop an MP4 made by Ling Studio, or its .json recipe.")
        try:
            return recipe_text(read_recipe(file))
        except ValueError as error:
            raise gr.Error(str(error), title="Not a Ling Studio recipe") from None

    # --- Compare tab ---------------------------------------------------------------------------

    def draw_seeds(self, count) -> str:
        return ", ".join(str(random_seed()) for _ in range(int(count)))

    def begin_compare(self, prompt, negative_prompt, aspect, duration, quality, seeds, steps, guidance, fps, count, slot: RunSlot):
        """Compare clicked, before the queue: draw seeds if none are typed, check the settings,
        prepare Stop, swap the buttons."""
        if not str(seeds or "").strip():
            seeds = self.draw_seeds(count)
        self.compare_recipes(prompt, negative_prompt, aspect, duration, quality, seeds, steps, guidance, fps)
        slot.prepare()
        return (seeds, progress_html("Waiting for the model…"), *_button_states(running=True))

    def compare_recipes(self, prompt, negative_prompt, aspect, duration, quality, seeds, steps, guidance, fps) -> list[Recipe]:
        try:
            seed_list = parse_seeds(seeds)
            first = self.build_recipe(prompt, negative_prompt, aspect, duration, quality, seed_list[0], steps, guidance, fps)
            return [dataclasses.replace(first, seed=seed).validate() for seed in seed_list]
        except ValueError as error:
            raise gr.Error(str(error), title="Check the settings") from None

    def compare_stream(self, prompt, negative_prompt, aspect, duration, quality, seeds, steps, guidance, fps, slot: RunSlot, history: list):
        """Stream a seed comparison. Yields (progress, compared recipes, history, gallery, *previews,
        *videos, *use-seed buttons), MAX_COMPARE_SEEDS of each: one slot per seed, the rest hidden."""
        recipes = self.compare_recipes(prompt, negative_prompt, aspect, duration, quality, seeds, steps, guidance, fps)
        self.warn_unfamiliar_words(recipes[0].prompt)
        skip, unused = gr.skip(), MAX_COMPARE_SEEDS - len(recipes)
        hidden_videos = [gr.Video(visible=False)] * MAX_COMPARE_SEEDS
        hidden_buttons = [gr.Button(visible=False)] * MAX_COMPARE_SEEDS
        for update in self.run(recipes, slot.take()):
            if update.results is not None:
                break
            previews = [gr.Image(value=strip, label=f"Seed {r.seed}", visible=True) for strip, r in zip(update.previews, recipes)]
            previews += [gr.Image(visible=False)] * unused
            yield (progress_html(update.text, update.step, update.total), skip, skip, skip, *previews, *hidden_videos, *hidden_buttons)
        results = update.results
        if results[0].stopped:
            yield (progress_html("Stopped: nothing was saved. Press Compare to run again."), *[skip] * (3 + 3 * MAX_COMPARE_SEEDS))
            return
        history = ([_history_entry(result) for result in results] + list(history or []))[:HISTORY_LIMIT]
        videos = [gr.Video(value=str(r.video_path), label=f"Seed {r.recipe.seed}", visible=True) for r in results]
        buttons = [gr.Button(f"Use seed {r.recipe.seed} in Create", visible=True) for r in results]
        done = progress_html(f"Done in {format_seconds(results[0].seconds)}", update.total, update.total)
        yield (
            done, [r.recipe.to_dict() for r in results], history, gallery_items(history),
            *[gr.Image(visible=False)] * MAX_COMPARE_SEEDS,
            *videos, *hidden_videos[:unused], *buttons, *hidden_buttons[:unused],
        )  # fmt: skip

    def compare(self, prompt, negative_prompt, aspect, duration, quality, seeds, steps, guidance, fps, slot: RunSlot):
        """API: 2 to 4 seeds as one batch. Returns (mp4 paths, recipe JSON texts), in the seeds' order."""
        recipes = self.compare_recipes(prompt, negative_prompt, aspect, duration, quality, seeds, steps, guidance, fps)
        results = self._run_to_end(recipes, slot)
        return [str(r.video_path) for r in results], [recipe_text(r.recipe) for r in results]

    def use_seed(self, index: int, compared: list | None):
        """"Use this seed" under a compared video: its whole recipe back to Create, seed locked."""
        if not compared or index >= len(compared):
            raise gr.Error("Run a comparison first.")
        return self.apply_recipe(compared[index])

    # --- small views ---------------------------------------------------------------------------

    def frame_shape(self, aspect, quality, duration, fps) -> str:
        return frame_shape_html(aspect, quality, duration, fps)


# --- helpers ---------------------------------------------------------------------------------------


def _button_states(running: bool) -> tuple:
    """(Generate, Stop, Compare, Stop on Compare): one run per session, so both tabs follow it."""
    start = gr.Button(interactive=not running)
    stop = gr.Button(value="Stop", interactive=running)
    return start, stop, start, stop


def _history_entry(result: GenerationResult) -> dict:
    return {"video": str(result.video_path), "recipe": result.recipe.to_dict()}


def gallery_items(history: list) -> list[tuple[str, str]]:
    return [(entry["video"], f"{entry['recipe']['seed']} · {entry['recipe']['prompt'][:60]}") for entry in history]

