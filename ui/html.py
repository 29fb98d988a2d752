"""Small HTML pieces the studio draws itself (the progress bar and the frame-shape preview) and the
page's CSS. Pure string building: no gradio, no model."""

import html

from pipeline import presets

CSS = """
/* The live preview is a few latent pixels blown up: keep its blocks sharp instead of blurred. */
.ling-preview img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }

.ling-progress { position: relative; height: 1.9rem; border-radius: 0.5rem; overflow: hidden;
  background: var(--block-background-fill); border: 1px solid var(--border-color-primary); }
.ling-progress-fill { position: absolute; inset: 0 auto 0 0; background: var(--color-accent-soft);
  border-right: 2px solid var(--color-accent); transition: width 0.3s ease; }
.ling-progress span { position: relative; display: block; line-height: 1.9rem; padding: 0 0.75rem;
  font-size: var(--text-sm); font-variant-numeric: tabular-nums; }
.ling-progress.idle .ling-progress-fill { display: none; }

.ling-shape-block { background: var(--block-background-fill) !important; }
.ling-shape { display: flex; align-items: center; gap: 0.9rem; min-height: 3.8rem; padding: 0 0.25rem; }
.ling-shape-box { border: 2px solid var(--color-accent); border-radius: 3px; background: var(--color-accent-soft);
  display: flex; align-items: center; justify-content: center; font-size: var(--text-xs); flex: none; }
.ling-shape-text { font-size: var(--text-sm); color: var(--body-text-color-subdued); line-height: 1.4; }

/* Each aspect-ratio choice shows a little box of its shape before its name. */
.ling-aspect label::before { content: ""; display: inline-block; border: 1.5px solid currentColor;
  border-radius: 2px; margin-right: 0.4rem; vertical-align: middle; }
"""


def _aspect_box_css() -> str:
    """Radio choices are in table order, so the i-th label gets the i-th ratio's box (14 px long side)."""
    rules = []
    for i, (units_w, units_h) in enumerate(presets.ASPECT_RATIOS.values(), start=1):
        longest = max(units_w, units_h)
        width, height = round(14 * units_w / longest), round(14 * units_h / longest)
        rules.append(f".ling-aspect label:nth-of-type({i})::before {{ width: {width}px; height: {height}px; }}")
    return "\n".join(rules) + "\n"


CSS += _aspect_box_css()

SHAPE_BOX_PX = 52  # the longer side of the frame-shape preview box


def progress_html(text: str, step: int = 0, total: int = 0) -> str:
    """A progress bar filled to step/total with `text` on it; no bar when total is 0."""
    fraction = step / total if total else 0.0
    state = "" if total else " idle"
    return (
        f'<div class="ling-progress{state}" role="progressbar" aria-valuemin="0" aria-valuemax="{total}" aria-valuenow="{step}">'
        f'<div class="ling-progress-fill" style="width: {100 * fraction:.1f}%"></div>'
        f"<span>{html.escape(text)}</span></div>"
    )


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def step_text(step: int, total: int, seconds_left: float | None) -> str:
    text = f"Step {step} of {total}"
    if seconds_left is not None:
        text += f" · about {format_seconds(seconds_left)} left"
    return text


def frame_shape_html(aspect: str, quality: str, duration: float, fps: int) -> str:
    """A box drawn in the frame's shape, with its pixel size and frame count beside it."""
    if aspect not in presets.ASPECT_RATIOS or quality not in presets.QUALITY_PRESETS:
        return '<div class="ling-shape"></div>'
    height, width = presets.resolution(aspect, quality)
    scale = SHAPE_BOX_PX / max(height, width)
    box_w, box_h = round(width * scale), round(height * scale)
    try:
        frames = f" · {presets.num_frames(float(duration), int(fps))} frames at {int(fps)} fps"
    except (TypeError, ValueError):
        frames = ""
    return (
        f'<div class="ling-shape"><div class="ling-shape-box" style="width: {box_w}px; height: {box_h}px">{html.escape(aspect)}</div>'
        f'<div class="ling-shape-text">{width} × {height} px{frames}<br>{html.escape(presets.QUALITY_PRESETS[quality].description)}</div></div>'
    )
