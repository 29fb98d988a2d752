"""The recipe: everything that makes a video, in one object that travels from the UI to the pipeline
to the file and back. A video file remembers its recipe; "load recipe" restores it.
"""

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

from . import presets

MAX_PROMPT_CHARS = 500  # MiniLM reads at most 128 tokens; longer text would be silently cut
MAX_SEED = 2**63 - 1  # torch.Generator takes 64-bit seeds; 63 bits stay positive in every language
MIN_STEPS, MAX_STEPS = 1, 100
MIN_GUIDANCE, MAX_GUIDANCE = 1.0, 20.0  # 1.0 turns classifier-free guidance off
RECIPE_VERSION = 1


def prompt_words(text: str) -> list[str]:
    """The words of a prompt as a model folder's vocabulary counts them: runs of letters, lower-cased."""
    return re.findall(r"[^\W\d_]+", text.lower())


@dataclass
class Recipe:
    prompt: str
    negative_prompt: str = ""
    aspect: str = presets.DEFAULT_ASPECT
    duration: float = presets.DEFAULT_DURATION  # seconds
    fps: int = presets.DEFAULT_FPS
    seed: int = 0
    steps: int = 20  # denoising steps; the model folder's default replaces this when the UI starts
    guidance: float = 5.0  # classifier-free guidance scale
    quality: str = presets.DEFAULT_QUALITY
    model: str = "ling-small"  # a name for the weights, so a file says what made it

    # --- derived sizes -------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return presets.resolution(self.aspect, self.quality)[0]

    @property
    def width(self) -> int:
        return presets.resolution(self.aspect, self.quality)[1]

    @property
    def num_frames(self) -> int:
        return presets.num_frames(self.duration, self.fps)

    # --- checks --------------------------------------------------------------------------------

    def validate(self) -> "Recipe":
        """Raise ValueError naming the first field that is out of range; return self when all are fine."""
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("prompt is empty: describe the video you want, e.g. 'a red ball bouncing on a black background'")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt is {len(self.prompt)} characters long; at most {MAX_PROMPT_CHARS} are allowed")
        if not isinstance(self.negative_prompt, str) or len(self.negative_prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"negative_prompt must be text of at most {MAX_PROMPT_CHARS} characters")
        if self.aspect not in presets.ASPECT_RATIOS:
            raise ValueError(f"aspect must be one of {', '.join(presets.ASPECT_RATIOS)}; got {self.aspect!r}")
        if self.quality not in presets.QUALITY_PRESETS:
            raise ValueError(f"quality must be one of {', '.join(presets.QUALITY_PRESETS)}; got {self.quality!r}")
        if not _is_number(self.duration) or not presets.MIN_DURATION <= self.duration <= presets.MAX_DURATION:
            raise ValueError(
                f"duration must be between {presets.MIN_DURATION:g} and {presets.MAX_DURATION:g} seconds; got {self.duration!r}"
            )
        if self.fps not in presets.FPS_CHOICES or isinstance(self.fps, bool):
            raise ValueError(f"fps must be one of {', '.join(map(str, presets.FPS_CHOICES))}; got {self.fps!r}")
        if not _is_integer(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED} (2^63 - 1); got {self.seed!r}")
        if not _is_integer(self.steps) or not MIN_STEPS <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be a whole number from {MIN_STEPS} to {MAX_STEPS}; got {self.steps!r}")
        if not _is_number(self.guidance) or not MIN_GUIDANCE <= self.guidance <= MAX_GUIDANCE:
            raise ValueError(f"guidance must be between {MIN_GUIDANCE:g} and {MAX_GUIDANCE:g}; got {self.guidance!r}")
        return self

    # --- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"recipe_version": RECIPE_VERSION, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        """Build a recipe from a dict written by `to_dict`; raises ValueError if it is not one."""
        if not isinstance(data, dict) or "prompt" not in data or "recipe_version" not in data:
            raise ValueError("this is not a Ling Studio recipe (no prompt or recipe_version in it)")
        names = {field.name for field in dataclasses.fields(cls)}
        # Unknown keys come from newer versions of the studio; they are dropped, not fatal.
        recipe = cls(**{key: value for key, value in data.items() if key in names})
        if isinstance(recipe.duration, int):
            recipe.duration = float(recipe.duration)
        return recipe.validate()

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as error:
            raise ValueError(f"this is not a Ling Studio recipe (not valid JSON: {error})") from None
        return cls.from_dict(data)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # NaN != NaN
