"""Reads a clip of the world (WORLD.md) back into words: its background, and per object the colour,
shape, size and motion, so that a generated video can be scored against the prompt that made it.

The recipe, top to bottom:
1. a background model per frame and row (every background is a vertical gradient, fades included),
   fitted robustly so that objects covering part of a row do not move it;
2. foreground pixels (far from the background), grouped into connected components and split where
   one component holds two colours (objects that touch);
3. detections tracked from frame to frame by position, colour and area;
4. per track: colour (the median of its strongest pixels, named by the palette colour that best
   explains it as a blend with the background, luma and chroma blended apart as yuv420p does),
   shape (antialiased templates of the four shapes fitted to the object's coverage map, through a
   model of H.264's half-resolution colour planes), size (area over the frame's shorter side),
   and motion (from the trajectory of its centre, its area and its orientation).

It works on frames straight from the renderer and on H.264 round trips (yuv420p at 64p is harsh
on colour and on small shapes), and it measures itself: eval/analyzer_accuracy.py.
"""

import functools
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training import world

PALETTE = np.array(list(world.COLOURS.values()), dtype=np.float32)  # (K, 3)
PALETTE_NAMES = list(world.COLOURS)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601 luma weights, what H.264 at this size uses
FOREGROUND_DISTANCE = 22.0  # RGB distance from the background that makes a pixel a candidate
STRONG_DISTANCE = 40.0  # a component needs pixels this far from the background to be an object
MIN_AREA = 4.0  # covered pixels; smaller components are compression noise
SIZE_BOUNDS = (math.sqrt(0.12 * 0.20), math.sqrt(0.20 * 0.32))  # geometric means of the size classes
SHAPE_FIT_FRAMES = 6  # frames per track that the shape templates are fitted to
SYMMETRY = {"square": 4, "triangle": 3, "star": 5}  # k-fold turning symmetry (a circle has every k)


@dataclass
class AnalyzedObject:
    """One object found in a clip, in the words of world.py, with its measured track."""

    colour: str
    shape: str
    size: str
    motion: str
    colour_to: str | None  # the colour it ends as, when that differs from its first colour
    trajectory: np.ndarray  # (T, 2) centre x, y in pixels; NaN where it was not seen
    areas: np.ndarray  # (T,) covered pixels; NaN where it was not seen
    elongation: float = 1.0  # median over frames of its long / short axis; 1 for every undistorted shape


@dataclass
class Analysis:
    """What a clip shows, in the words of world.py."""

    background: str
    background_to: str | None  # the background at the end, when it differs from the first
    objects: list[AnalyzedObject]
    fps: float
    height: int
    width: int


@dataclass
class _Detection:
    """One object's pixels in one frame."""

    t: int
    rgb: np.ndarray  # (3,) robust colour of its strongest pixels
    bg: np.ndarray  # (3,) background colour behind its centre
    cx: float
    cy: float
    area: float
    origin: tuple[int, int]  # (y, x) of the coverage patch, both even (aligned with chroma blocks)
    alpha: np.ndarray  # (h, w) estimated coverage
    luma_share: float  # how much of the coverage signal is luma (full resolution) rather than chroma
    harmonics: dict[int, complex]  # k -> k-fold moment
    elongation: float  # long / short axis of the coverage's second moments


# --- 1. reading and the background ---------------------------------------------------------------


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """(frames (T, H, W, 3) uint8, fps) of a video file."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(path))
    try:
        fps = float(reader.get_meta_data().get("fps", 15.0))
        frames = np.stack([np.asarray(frame)[..., :3] for frame in reader])
    finally:
        reader.close()
    return frames, fps


def _gradient(top, bottom, height: int) -> np.ndarray:
    rows = (np.arange(height, dtype=np.float32) / (height - 1))[:, None]
    return np.asarray(top, np.float32) * (1 - rows) + np.asarray(bottom, np.float32) * rows  # (H, 3)


def _background(frames: np.ndarray) -> tuple[np.ndarray, str, str]:
    """(rows (T, H, 3) background colour per frame and row, first name, last name).

    Every background is a vertical gradient, and a fade mixes two of them, so each row has one
    background colour. Three looks at each row (its median, its leftmost and its rightmost pixels)
    keep an object from hiding it: one never covers both edges, nor most of a row and an edge.
    The first and last frames are named by the known gradient that the most rows agree with; each
    frame between is the mix of the two that agrees best. Rows take the look closest to that mix,
    or the mix itself where no look agrees (an object there).
    """
    num_frames, height, width = frames.shape[:3]
    looks = np.stack(
        [np.median(frames, axis=2), frames[:, :, :2].mean(axis=2), frames[:, :, -2:].mean(axis=2)], axis=2
    ).astype(np.float32)  # (T, H, 3 looks, 3)
    pure = {name: _gradient(*colours, height) for name, colours in world.BACKGROUNDS.items()}

    def fit(t: int, candidates: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        """(best candidate, its distance to each row's closest look (H,), that look's index (H,))."""
        dist = np.linalg.norm(looks[t][None] - candidates[:, :, None], axis=-1)  # (C, H, 3 looks)
        closest = dist.min(-1)  # (C, H)
        agree = closest < 15
        score = agree.sum(-1) - 1e-3 * np.where(agree, closest, 0).sum(-1)  # most rows, then closest
        best = int(score.argmax())
        return best, closest[best], dist[best].argmin(-1)

    names = list(pure)
    start = names[fit(0, np.stack(list(pure.values())))[0]]
    end = names[fit(num_frames - 1, np.stack(list(pure.values())))[0]]
    mixes = np.stack([pure[start] * (1 - f) + pure[end] * f for f in np.linspace(0, 1, 21 if end != start else 1)])
    rows = np.empty((num_frames, height, 3), np.float32)
    for t in range(num_frames):
        best, closest, look = fit(t, mixes)
        agree = closest < 15
        rows[t] = np.where(agree[:, None], looks[t, np.arange(height), look], mixes[best])
        if agree.mean() < 0.5:  # a background the world does not have (a generated video's)
            rows[t] = looks[t, :, 0]
    return rows, start, end


# --- 2. foreground, components, detections -------------------------------------------------------


def _label(mask: np.ndarray) -> np.ndarray:
    """Connected components (8-neighbours) of each frame of a (T, H, W) mask; 0 is background.

    Max-label propagation with pointer jumping, in numpy: every pixel takes the largest label among
    its neighbours, then the label of the pixel its label names, until nothing changes.
    """
    num_frames, height, width = mask.shape
    labels = np.where(mask, np.arange(1, mask.size + 1).reshape(mask.shape), 0)
    while True:
        padded = np.pad(labels, ((0, 0), (1, 1), (1, 1)))
        grown = labels.copy()
        for dy, dx in itertools.product(range(3), range(3)):
            np.maximum(grown, padded[:, dy : dy + height, dx : dx + width], out=grown)
        flat = np.where(mask, grown, 0).reshape(-1)
        flat = np.maximum(flat, flat[np.maximum(flat - 1, 0)]) * (flat > 0)
        flat = flat.reshape(mask.shape)
        if np.array_equal(flat, labels):
            return labels
        labels = flat


def _unmix(pixels: np.ndarray, bg: np.ndarray, colours: np.ndarray, low=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(amounts (N, K, 2), distance (N, K)): each pixel explained as a blend of its background and each colour.

    In yuv420p video an object's luma is blended with the background at full resolution and its
    chroma at half, so the pixels of a small object (even its centre) are blends in different
    amounts for luma and chroma: pixel = bg + a * dY * (1, 1, 1) + b * (d - dY * (1, 1, 1)), with
    d = colour - bg and dY its luma. Amounts are clipped to [low, 1.1]; distance is what is left.
    """
    d = colours[None] - bg[:, None]  # (N, K, 3)
    r = (pixels - bg)[:, None]  # (N, 1, 3)
    u = (d @ LUMA)[..., None] * np.ones(3, np.float32)  # (N, K, 3) the luma part
    w = d - u  # the chroma part
    # Least squares for (a, b) by the 2x2 normal equations; where luma or chroma is (nearly) absent
    # they are singular, and one amount for both (plain projection onto d) is the answer.
    uu, uw, ww = (u * u).sum(-1), (u * w).sum(-1), (w * w).sum(-1)
    ur, wr = (u * r).sum(-1), (w * r).sum(-1)
    det = uu * ww - uw * uw
    ok = det > 1e-3 * uu * ww + 1e-6
    safe = np.where(ok, det, 1.0)
    single = (d * r).sum(-1) / np.maximum((d * d).sum(-1), 1e-6)
    a = np.where(ok, (ww * ur - uw * wr) / safe, single)
    b = np.where(ok, (uu * wr - uw * ur) / safe, single)
    amounts = np.clip(np.stack([a, b], axis=-1), low, 1.1)  # (N, K, 2)
    distance = np.linalg.norm(r - amounts[..., :1] * u - amounts[..., 1:] * w, axis=-1)
    return amounts, distance


def _name_colour(rgb: np.ndarray, bg: np.ndarray) -> tuple[str, float]:
    """(name, distance): the palette colour that best explains `rgb` as a blend with the background.

    The strongest pixels of an object are at least partly covered in both luma and chroma, which
    keeps a pale blend of one colour from passing for another.
    """
    _, distance = _unmix(rgb[None], bg[None], PALETTE, low=(0.4, 0.3))
    k = int(distance[0].argmin())
    return PALETTE_NAMES[k], float(distance[0, k])


def _luma_share(colour: np.ndarray, bg: np.ndarray) -> float:
    """Share of the RGB-projected coverage carried by luma (full resolution) in yuv420p video.

    The difference colour - bg splits into a luma part dY * (1, 1, 1) and a chroma part; projecting
    a pixel's difference onto colour - bg mixes full-resolution luma coverage with half-resolution
    chroma coverage in this proportion.
    """
    d = colour - bg
    return float((d @ LUMA) * d.sum() / max(float(d @ d), 1e-6))


def _detections(frames: np.ndarray, rows: np.ndarray) -> list[list[_Detection]]:
    """Objects found in each frame, before tracking."""
    num_frames, height, width = frames.shape[:3]
    pixels = frames.astype(np.float32)
    background = np.broadcast_to(rows[:, :, None], pixels.shape)
    distance = np.linalg.norm(pixels - background, axis=-1)  # (T, H, W)
    labels = _label(distance > FOREGROUND_DISTANCE)
    found = []
    for t in range(num_frames):
        found.append([])
        for label in np.unique(labels[t])[1:]:
            ys, xs = np.nonzero(labels[t] == label)
            strength = distance[t, ys, xs]
            if strength.max() < STRONG_DISTANCE:
                continue
            for keep in _split_by_colour(pixels[t, ys, xs], background[t, ys, xs], strength):
                detection = _detect(t, pixels[t], rows[t], labels[t], ys[keep], xs[keep], strength[keep])
                if detection is not None:
                    found[t].append(detection)
    return found


def _split_by_colour(pixels, bg, strength) -> list[np.ndarray]:
    """Boolean masks that split a component between the colours it holds (usually one).

    A palette colour is present when a few pixels are that colour almost unmixed (edge pixels,
    which compression blends with the background differently in luma and chroma, never are); strong
    pixels that no present colour explains (an object halfway through a colour change) are one more.
    """
    amounts, distance = _unmix(pixels, bg, PALETTE)  # (N, K, 2), (N, K)
    colours = PALETTE[((amounts.min(-1) >= 0.75) & (distance < 20)).sum(0) >= 3]
    strong = strength >= STRONG_DISTANCE
    if len(colours):
        unexplained = strong & (_unmix(pixels, bg, colours)[1].min(1) >= 30)
        if unexplained.sum() >= max(4, 0.1 * strong.sum()):
            colours = np.concatenate([colours, np.median(pixels[unexplained], axis=0)[None]])
    if len(colours) < 2:
        return [np.ones(len(pixels), bool)]
    owner = _unmix(pixels, bg, colours)[1].argmin(1)
    return [owner == k for k in range(len(colours)) if (owner == k).any()]


def _detect(t, frame, rows, labels, ys, xs, strength) -> _Detection | None:
    """Measure one object's colour, coverage, area, centre and k-fold moments in one frame."""
    strongest = strength >= np.quantile(strength, 0.6)
    rgb = np.median(frame[ys[strongest], xs[strongest]], axis=0)
    bg_centre = rows[int(np.median(ys))]
    name, off_palette = _name_colour(rgb, bg_centre)
    # Unmix with the palette colour where the median is a blend of it with the background (small
    # objects look paler than they are), with the median itself otherwise (a colour halfway through
    # a change, or a generated colour off the palette).
    target = PALETTE[PALETTE_NAMES.index(name)] if off_palette < 30 else rgb
    # Coverage over the bounding box plus a margin, on an even-aligned patch (chroma blocks are 2x2).
    y0, x0 = max(0, (ys.min() - 2) // 2 * 2), max(0, (xs.min() - 2) // 2 * 2)
    y1, x1 = min(frame.shape[0], ys.max() + 4), min(frame.shape[1], xs.max() + 4)
    y1, x1 = y0 + (y1 - y0) // 2 * 2, x0 + (x1 - x0) // 2 * 2
    bg = rows[y0:y1, None]  # (h, 1, 3)
    d = target - bg  # (h, 1, 3)
    alpha = ((frame[y0:y1, x0:x1] - bg) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-6)
    # Pixels of other objects (other components, or the other colour of a split one) are not ours.
    own = np.zeros(alpha.shape, bool)
    own[ys - y0, xs - x0] = True
    # Unclipped: compression rings on both sides of an edge, and only the sum of both keeps the area.
    alpha = np.where((labels[y0:y1, x0:x1] != 0) & ~own, 0.0, np.clip(alpha, -0.5, 1.5)).astype(np.float32)
    area = float(alpha.sum())
    if area < MIN_AREA:
        return None
    gy, gx = np.mgrid[y0:y1, x0:x1] + 0.5
    cx, cy = float((alpha * gx).sum() / area), float((alpha * gy).sum() / area)
    share = _luma_share(target, bg_centre)
    harmonics = _harmonics(alpha, gx - cx, gy - cy)
    return _Detection(t, rgb, bg_centre, cx, cy, area, (y0, x0), alpha, share, harmonics, _elongation(alpha, gx - cx, gy - cy))


def _elongation(alpha, dx, dy) -> float:
    """sqrt(largest / smallest eigenvalue) of the coverage's second moments.

    Every shape of the world (circle, square, triangle, star) has the same second moment in every
    direction, so this is 1 for any of them at any angle, and an image stretched by a factor f (a
    frame drawn with the wrong aspect ratio) reads f.
    """
    w = np.clip(alpha, 0.0, None)
    total = max(float(w.sum()), 1e-6)
    xx, yy, xy = (w * dx * dx).sum() / total, (w * dy * dy).sum() / total, (w * dx * dy).sum() / total
    spread = math.sqrt(((xx - yy) / 2) ** 2 + xy * xy)
    middle = (xx + yy) / 2
    return math.sqrt((middle + spread) / max(middle - spread, 1e-6))


def _harmonics(alpha, dx, dy) -> dict[int, complex]:
    """k-fold moments sum(w e^{-ik phi}) / sum(w), w = coverage * radius^2, for k = 3, 4, 5.

    A shape with k-fold symmetry has only the harmonics that are multiples of k: a triangle k=3, a
    square 4, a star 5, a circle none; the magnitude does not change as the shape turns, the phase
    turns k times as fast.
    """
    w = alpha * (dx * dx + dy * dy)
    phi = np.arctan2(dy, dx)
    total = max(float(w.sum()), 1e-6)
    return {k: complex((w * np.exp(-1j * k * phi)).sum() / total) for k in (3, 4, 5)}


# --- 3. tracking ---------------------------------------------------------------------------------


def _track(found: list[list[_Detection]], height: int) -> list[list[_Detection | None]]:
    """Link detections frame to frame: nearest to where each track is going, alike in colour and area.

    Objects never leave the frame, so a track that misses frames (merged with another, occluded)
    waits, and a new track that starts where a lost one ended continues it. Tracks seen in under a
    third of the frames are noise and are dropped.
    """
    num_frames = len(found)
    tracks: list[list[_Detection | None]] = []
    for t, detections in enumerate(found):
        pairs = []
        for i, track in enumerate(tracks):
            seen = [d for d in track if d is not None]
            last = seen[-1]
            gap = min(t - last.t, 3)  # extrapolate a lost track's velocity only a little way
            vx, vy = (last.cx - seen[-2].cx, last.cy - seen[-2].cy) if len(seen) > 1 and seen[-2].t == last.t - 1 else (0.0, 0.0)
            area = float(np.median([d.area for d in seen[-5:]]))
            for j, d in enumerate(detections):
                jump = math.hypot(d.cx - last.cx - vx * gap, d.cy - last.cy - vy * gap) / height
                # Colours change gradually and areas slowly, so both say which object is which
                # when two meet; the weights make 0.1 frame heights = 50 RGB levels = twice the area.
                cost = jump + 0.002 * float(np.linalg.norm(d.rgb - last.rgb)) + 0.15 * abs(math.log(d.area / area))
                if jump < 0.3:
                    pairs.append((cost, i, j))
        used_tracks, used_detections = set(), set()
        for _, i, j in sorted(pairs):
            if i not in used_tracks and j not in used_detections:
                tracks[i].append(detections[j])
                used_tracks.add(i)
                used_detections.add(j)
        for i, track in enumerate(tracks):
            if i not in used_tracks:
                track.append(None)
        for j, d in enumerate(detections):
            if j not in used_detections:
                tracks.append([None] * t + [d])
    return [track for track in _join(tracks, height) if sum(d is not None for d in track) >= num_frames / 3]


def _join(tracks: list[list[_Detection | None]], height: int) -> list[list[_Detection | None]]:
    """Continue a track with one that starts soon after it ends, close by, with a similar area.

    Mends tracks broken where an object was measured badly for a few frames (touching another, or
    halfway through a colour change that passes close to the background).
    """

    def seen(track):
        return [d for d in track if d is not None]

    tracks = sorted(tracks, key=lambda track: seen(track)[0].t)
    joined: list[list[_Detection | None]] = []
    for track in tracks:
        later = seen(track)
        for earlier in joined:
            before = seen(earlier)
            gap = later[0].t - before[-1].t
            area_before = np.median([d.area for d in before[-5:]])
            area_after = np.median([d.area for d in later[:5]])
            if (
                0 < gap <= 8
                and math.hypot(later[0].cx - before[-1].cx, later[0].cy - before[-1].cy) / height < 0.05 + 0.1 * gap
                and abs(math.log(area_after / area_before)) < 0.5
            ):
                earlier[later[0].t :] = track[later[0].t :]
                break
        else:
            joined.append(track)
    return joined


def _clean(track: list[_Detection]) -> list[_Detection]:
    """The detections whose area is within 25% of the median of their neighbours.

    Drops frames where an object touches another and the two were measured as one (or one was
    cut short); growth is slow enough to pass.
    """
    areas = np.array([d.area for d in track])
    padded = np.pad(areas, 2, mode="edge")
    local = np.median(np.lib.stride_tricks.sliding_window_view(padded, 5), axis=1)
    keep = np.abs(areas / local - 1) < 0.25
    return [d for d, k in zip(track, keep) if k] if keep.sum() >= 3 else track


# --- 4. naming what a track is -------------------------------------------------------------------


def _chroma_subsampled(frames: np.ndarray) -> bool:
    """Whether colour comes in 2x2 blocks (yuv420p video), from how chroma changes inside blocks."""
    f = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2].astype(np.float32)
    chroma = f[..., 2] - f[..., 1]  # a cheap colour-difference channel
    inside = np.abs(chroma[:, :, 0::2] - chroma[:, :, 1::2]).mean()
    across = np.abs(chroma[:, :, 1:-1:2] - chroma[:, :, 2::2]).mean()
    return bool(inside < 0.5 * across)


def _fit_shape(track: list[_Detection], subsampled: bool) -> str:
    """The shape whose antialiased template best explains the coverage maps of a few frames.

    Each shape's size follows from the measured area; its angle starts from the phase of its k-fold
    moment; position is searched within a third of a pixel of the centroid. In yuv420p video the
    template's chroma part is averaged over 2x2 blocks first, as the encoder did.
    """
    picks = np.linspace(0, len(track) - 1, min(SHAPE_FIT_FRAMES, len(track))).round().astype(int)
    errors = dict.fromkeys(world.SHAPES, 0.0)
    for d in (track[i] for i in picks):
        h, w = d.alpha.shape
        small = math.sqrt(d.area) < 10
        ss = 4 if small else 2
        sub = (np.arange(ss) + 0.5) / ss
        gx = (np.arange(w)[:, None] + sub).reshape(-1) + d.origin[1]  # (w * ss,)
        gy = (np.arange(h)[:, None] + sub).reshape(-1) + d.origin[0]  # (h * ss,)
        offsets = np.array([-1 / 3, 0.0, 1 / 3])
        shifts = np.array(list(itertools.product(offsets, offsets)))  # (S, 2) x, y
        dx = gx[None, None, :] - (d.cx + shifts[:, 0])[:, None, None]  # (S, 1, w * ss)
        dy = gy[None, :, None] - (d.cy + shifts[:, 1])[:, None, None]  # (S, h * ss, 1)
        for shape in world.SHAPES:
            size = math.sqrt(d.area / world.shape_area(shape, 1.0))
            best = math.inf
            for angle in _angle_candidates(shape, d.harmonics):
                cover = world.inside(shape, dx, dy, size, angle).reshape(len(shifts), h, ss, w, ss).mean(axis=(2, 4))
                if subsampled:
                    blocks = cover.reshape(len(shifts), h // 2, 2, w // 2, 2).mean(axis=(2, 4), keepdims=True)
                    blocks = np.broadcast_to(blocks, (len(shifts), h // 2, 2, w // 2, 2)).reshape(cover.shape)
                    cover = d.luma_share * cover + (1 - d.luma_share) * blocks
                best = min(best, float(((cover - d.alpha) ** 2).sum(axis=(1, 2)).min()))
            errors[shape] += best / d.area
    return min(errors, key=errors.get)


def _angle_candidates(shape: str, harmonics: dict[int, complex]) -> list[float]:
    """Angles to try for a shape: around the one its k-fold moment points to."""
    if shape == "circle":
        return [0.0]
    k = SYMMETRY[shape]
    period = 2 * math.pi / k
    guess = _template_phase(shape) - np.angle(harmonics[k])  # moments turn as e^{-ik angle}
    return [guess / k + step * period / 16 for step in (-2, -1, 0, 1, 2)]


@functools.cache
def _template_phase(shape: str) -> float:
    """Phase of an upright template's k-fold moment (the zero of the angle)."""
    k = SYMMETRY[shape]
    n = 64
    g = (np.arange(n) + 0.5) / n * 2 - 1
    dx, dy = np.meshgrid(g, g)
    alpha = world.inside(shape, dx, dy, 1.6, 0.0).astype(np.float32)
    return float(np.angle(_harmonics(alpha, dx, dy)[k]))


def _motion(track: list[_Detection], shape: str, fps: float, height: int, width: int) -> str:
    """Name a track's motion from its area, centre and orientation over time.

    Checked in order: growing / shrinking (size over time), still / spinning (a centre that stays,
    turning or not), moving in a circle (a circle fits the path and is run at about a turn per
    3 s), bouncing (the centre accelerates downward by about gravity between bounces), and else the
    direction of the first stretch of motion (later stretches may follow reflections).
    """
    t = np.array([d.t for d in track]) / fps
    x, y = np.array([d.cx for d in track]) / height, np.array([d.cy for d in track]) / height
    s = np.sqrt([d.area for d in track])
    q = max(1, len(track) // 4)
    growth = np.median(s[-q:]) / np.median(s[:q])
    if growth > 1.15:
        return "growing"
    if growth < 1 / 1.15:
        return "shrinking"
    travel = np.hypot(x - x[0], y - y[0])
    if travel.max() < 0.05:
        k = SYMMETRY.get(shape)
        if k is None:
            return "still"
        phase = np.angle([d.harmonics[k] for d in track])
        step = np.angle(np.exp(1j * np.diff(phase))) / np.maximum(np.diff(t), 1e-6)  # wrapped, per second
        return "spinning" if abs(np.median(step)) / k > world.SPIN_RATE / 3 else "still"
    # The world's orbit: the radius that fits beside an object of this size (world._placement).
    size = math.sqrt(np.median(s**2) / world.shape_area(shape, 1.0)) / height
    left, right, top, bottom = world.extents(shape, size)
    orbit = min(world.ORBIT_RADIUS, (width / height - right + left) / 2, (1 - bottom + top) / 2)
    if _is_circling(t, x, y, orbit):
        return "circle"
    if _is_bouncing(t, y, fps):
        return "bouncing"
    first = int(np.argmax(travel >= min(0.02, 0.8 * travel.max())))  # 0.02: well above centroid noise
    dx, dy = x[first] - x[0], y[first] - y[0]
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def _is_bouncing(t, y, fps: float) -> bool:
    """Whether a path falls like the world's bouncers: dropped from rest, then at gravity between bounces.

    Either sign will do, since a collision can spoil one: the first 0.4 s are a parabola from rest
    at about gravity, or 40% of the path accelerates downward at about gravity (a mover's path only
    bends at reflections and collisions, briefly).
    """
    start = (t <= t[0] + 0.4) | (np.arange(len(t)) < 4)  # a parabola and a point to check it
    if len(t) >= 4:
        coeffs, residual, *_ = np.polyfit(t[start] - t[0], y[start], 2, full=True)
        accel, v0 = 2 * coeffs[0], coeffs[1]
        rms = math.sqrt(float(residual[0]) / start.sum()) if len(residual) else 0.0
        if abs(accel - world.GRAVITY) < 0.35 * world.GRAVITY and abs(v0) < 0.12 and rms < 0.004:
            return True
    lag = max(1, round(0.2 * fps))
    if len(y) < 2 * lag + 6:  # too few windows to tell a bounce from a collision
        return False
    accel = (y[2 * lag :] - 2 * y[lag:-lag] + y[: -2 * lag]) / (lag / fps) ** 2
    return bool(np.mean(np.abs(accel - world.GRAVITY) < 0.3 * world.GRAVITY) >= 0.4)


def _is_circling(t, x, y, orbit: float) -> bool:
    """Whether a path is a circle of radius `orbit` run at a turn per ORBIT_PERIOD.

    Circling objects follow their formula exactly (nothing deflects them), so the test is strict:
    a mover deflected along a curve by collisions does not pass it.
    """
    if len(t) < 5:
        return False
    a = np.stack([x, y, np.ones_like(x)], axis=1)
    (p, q, r), *_ = np.linalg.lstsq(a, -(x * x + y * y), rcond=None)  # x^2 + y^2 + p x + q y + r = 0
    xc, yc = -p / 2, -q / 2
    radius = math.sqrt(max(xc * xc + yc * yc - r, 0.0))
    if abs(radius / orbit - 1) > 0.2 or np.median(np.abs(np.hypot(x - xc, y - yc) - radius)) > 0.05 * radius:
        return False
    phi = np.unwrap(np.arctan2(y - yc, x - xc))
    rate = abs(np.polyfit(t, phi, 1)[0])
    return 0.85 < rate / (2 * math.pi / world.ORBIT_PERIOD) < 1.15


def _size(track: list[_Detection], shape: str, motion: str, fps: float, short_side: int) -> str:
    """small / medium / large from the area the object starts with, over the frame's shorter side."""
    t = np.array([d.t for d in track]) / fps
    areas = np.array([d.area for d in track])
    early = t <= t[0] + 0.3
    if motion in ("growing", "shrinking"):  # undo the growth since the first frame
        rate = world.GROWTH_PER_SECOND ** (2 if motion == "growing" else -2)
        areas = areas / rate ** (t - t[0])
    side = math.sqrt(np.median(areas[early]) / world.shape_area(shape, 1.0)) / short_side
    if side < SIZE_BOUNDS[0]:
        return "small"
    return "medium" if side < SIZE_BOUNDS[1] else "large"


def _colour(track: list[_Detection], start: bool) -> str:
    """The palette name of the median colour over the first (or last) 30% of a track."""
    n = max(1, round(0.3 * len(track)))
    part = track[:n] if start else track[-n:]
    return _name_colour(np.median([d.rgb for d in part], axis=0), np.median([d.bg for d in part], axis=0))[0]


# --- the analyzer --------------------------------------------------------------------------------


def analyze(video: str | Path | np.ndarray, fps: float | None = None) -> Analysis:
    """Analyze an MP4 path or a (T, H, W, 3) uint8 array (then `fps` defaults to 15)."""
    # 1. Read
    if isinstance(video, (str, Path)):
        frames, file_fps = read_video(video)
        fps = fps or file_fps
    else:
        frames, fps = np.asarray(video), fps or 15.0
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"video must be uint8 frames of shape (T, H, W, 3), got {frames.dtype} {frames.shape}")
    num_frames, height, width = frames.shape[:3]

    # 2. Background, then objects found per frame and tracked
    rows, background, background_end = _background(frames)
    tracks = _track(_detections(frames, rows), height)
    subsampled = _chroma_subsampled(frames)

    # 3. Name each track
    objects = []
    for track in tracks:
        seen = _clean([d for d in track if d is not None])
        shape = _fit_shape(seen, subsampled)
        motion = _motion(seen, shape, fps, height, width)
        colour, colour_end = _colour(seen, True), _colour(seen, False)
        trajectory = np.full((num_frames, 2), np.nan)
        areas = np.full(num_frames, np.nan)
        for d in seen:
            trajectory[d.t], areas[d.t] = (d.cx, d.cy), d.area
        objects.append(
            AnalyzedObject(
                colour=colour,
                shape=shape,
                size=_size(seen, shape, motion, fps, min(height, width)),
                motion=motion,
                colour_to=colour_end if colour_end != colour else None,
                trajectory=trajectory,
                areas=areas,
                elongation=float(np.median([d.elongation for d in seen])) if seen else 1.0,
            )
        )
    return Analysis(background, background_end if background_end != background else None, objects, fps, height, width)


ATTRIBUTES = ("colour", "shape", "size", "motion", "colour_to")


def match(analysis: Analysis, scene: world.Scene) -> dict:
    """Pair analyzed objects with a scene's objects and say which attributes agree.

    Pairs are chosen to agree on the most attributes (colour counting double), since a generated
    video need not put objects where the renderer would. Returns {"background": bool,
    "background_to": bool, "count": bool, "objects": [{attribute: bool, ...} per scene object],
    "partners": [index into analysis.objects, or None, per scene object]}; a scene object with no
    partner gets False for everything.
    """
    truth = list(scene.objects)
    found = analysis.objects

    def agreement(obj: world.ObjectSpec, got: AnalyzedObject) -> dict[str, bool]:
        return {name: getattr(obj, name) == getattr(got, name) for name in ATTRIBUTES}

    best, best_score = None, -1.0
    slots = list(range(len(found))) + [None] * len(truth)  # None: no partner
    for chosen in itertools.permutations(slots, len(truth)):
        score = 0.0
        for obj, c in zip(truth, chosen):
            if c is not None:
                agree = agreement(obj, found[c])
                score += sum(agree.values()) + agree["colour"]
        if score > best_score:
            best, best_score = chosen, score
    objects = [agreement(obj, found[c]) if c is not None else dict.fromkeys(ATTRIBUTES, False) for obj, c in zip(truth, best)]
    return {
        "background": analysis.background == scene.background,
        "background_to": analysis.background_to == scene.background_to,
        "count": len(found) == len(truth),
        "objects": objects,
        "partners": list(best),
    }
