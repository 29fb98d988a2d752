"""The one table of aspect-ratio buckets, quality presets, durations and frame rates.

The CLI, the studio and the training scripts all read their choices from here, so that a bucket the
model was trained on is exactly the bucket a user can ask for (Kling's variable-resolution training:
one model, every aspect ratio).
"""

from dataclasses import dataclass

# Pixel sizes are multiples of this: the bundled VAE's 4x spatial compression times its transformer's
# 4x4 patches (the first design's 8x and 2x2 give the same). The pipeline checks the real factors
# from the model configs; this constant only keeps the table inside what the bundled design accepts.
PIXEL_MULTIPLE = 16

# name -> (width units, height units)
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "16:9": (16, 9),
    "9:16": (9, 16),
    "1:1": (1, 1),
    "4:3": (4, 3),
    "3:4": (3, 4),
    "21:9": (21, 9),
}
DEFAULT_ASPECT = "16:9"


@dataclass(frozen=True)
class QualityPreset:
    name: str
    short_side: int  # pixels on the frame's shorter side; the longer side follows the aspect ratio
    description: str


QUALITY_PRESETS: dict[str, QualityPreset] = {
    preset.name: preset
    for preset in (
        # The bundled model is trained at this size: the only preset that is fast on a CPU.
        QualityPreset("fast", 64, "64p, what the bundled model was trained at"),
        QualityPreset("balanced", 128, "128p, for models trained at higher resolution"),
        QualityPreset("high", 256, "256p, for bigger models on a GPU"),
    )
}
DEFAULT_QUALITY = "fast"

# Frame rates a recipe may ask for. The transformer is conditioned on the frame rate, so that motion
# keeps its speed in seconds whatever the rate.
FPS_CHOICES = (8, 12, 15, 24, 30)
DEFAULT_FPS = 15

# Seconds of video in one generation; longer videos come from chunked extension.
MIN_DURATION = 1.0
MAX_DURATION = 10.0
DEFAULT_DURATION = 2.0


def resolution(aspect: str, quality: str = DEFAULT_QUALITY) -> tuple[int, int]:
    """(height, width) in pixels of an aspect bucket at a quality preset.

    The short side is the preset's; the long side is the aspect ratio rounded to PIXEL_MULTIPLE,
    so a bucket's true ratio can differ slightly from its name (4:3 at 64p is 80x64).
    """
    if aspect not in ASPECT_RATIOS:
        raise ValueError(f"aspect must be one of {list(ASPECT_RATIOS)}, got {aspect!r}")
    if quality not in QUALITY_PRESETS:
        raise ValueError(f"quality must be one of {list(QUALITY_PRESETS)}, got {quality!r}")
    units_w, units_h = ASPECT_RATIOS[aspect]
    short = QUALITY_PRESETS[quality].short_side
    long = max(PIXEL_MULTIPLE, round(short * max(units_w, units_h) / min(units_w, units_h) / PIXEL_MULTIPLE) * PIXEL_MULTIPLE)
    return (short, long) if units_w >= units_h else (long, short)


def num_frames(duration: float, fps: int) -> int:
    """Frames in a video of `duration` seconds at `fps` (the pipeline pads to what the VAE needs)."""
    return max(1, round(duration * fps))
