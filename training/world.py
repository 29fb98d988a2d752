"""The procedural world of WORLD.md: scenes of coloured shapes, a fast renderer, and captions.

A `Scene` is the structured ground truth of one clip (objects with colour, shape, size and motion, a
background, optional colour changes and background fades). `sample_scene` draws one, keeping the
held-out combinations out of training; `render` turns it into frames at any size, frame count and
frame rate; `caption` and `describe` turn it into English. Everything is deterministic from a seed.

Units: positions are in frame heights (y from 0 at the top to 1 at the bottom, x from 0 to the
aspect ratio), so that a motion means the same in every aspect ratio; object sizes are fractions of
the frame's shorter side. Start positions are stored as fractions (0..1) of the room an object has
to move in, because a scene does not know its aspect ratio until it is rendered.
"""

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from pipeline import presets
from pipeline.recipe import prompt_words

# --- the things of the world (WORLD.md) ----------------------------------------------------------

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (250, 140, 20),
    "yellow": (250, 220, 30),
    "green": (40, 190, 60),
    "blue": (40, 100, 240),
    "purple": (150, 60, 210),
    "pink": (250, 120, 190),
    "white": (245, 245, 245),
}
# name -> (colour of the top row, colour of the bottom row)
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "black": ((10, 10, 10), (10, 10, 10)),
    "gray": ((110, 110, 110), (110, 110, 110)),
    "navy": ((20, 28, 70), (20, 28, 70)),
    "sky": ((90, 160, 240), (190, 225, 250)),
    "sunset": ((250, 190, 150), (120, 60, 120)),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES: dict[str, float] = {"small": 0.12, "medium": 0.20, "large": 0.32}  # diameter or side / shorter side
MOTIONS = ("left", "right", "up", "down", "bouncing", "spinning", "growing", "shrinking", "circle", "still")
SPEEDS: dict[str, float] = {"slowly": 0.15, "normal": 0.35, "quickly": 0.7}  # frame heights per second
LINEAR_MOTIONS: dict[str, tuple[float, float]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
DYNAMIC_MOTIONS = ("left", "right", "up", "down", "bouncing")  # simulated; the others follow a formula

GRAVITY = 2.5  # frame heights per s^2
RESTITUTION = 0.85  # share of its speed a bouncing object keeps at the bottom edge
SPIN_RATE = math.pi  # radians per second: half a turn
GROWTH_PER_SECOND = 1.4  # size factor per second, growing (its inverse shrinking)
MAX_GROWTH, MIN_SHRINK = 2.0, 0.5
ORBIT_RADIUS = 0.25  # frame heights; narrower frames get the largest radius that fits
ORBIT_PERIOD = 3.0  # seconds per turn
STAR_INNER_RATIO = 0.45  # inner / outer radius; a little fatter than a pentagram so small stars read
MAX_BOUNCE_SPEED = math.sqrt(2 * GRAVITY)  # frame heights per second: a fall from the top to the bottom
PHYSICS_RATE = 120  # simulation steps per second; every fps in presets.FPS_CHOICES divides it
COLOUR_CHANGE_SPAN = (1 / 3, 2 / 3)  # a colour change happens over this part of the clip

# Held out from training (WORLD.md): the eval asks for these to measure composition.
HELD_OUT_RULES = ("purple star", "yellow triangle", "square moving in a circle", "triangle bouncing", "green shrinking")


# --- ground truth --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSpec:
    """One object of a scene: what it is and how it moves."""

    colour: str
    shape: str
    size: str = "medium"
    motion: str = "still"
    speed: str = "normal"  # only left/right/up/down use it
    start: tuple[float, float] = (0.5, 0.5)  # fractions of the room to move in (circle: of the orbit centre's)
    colour_to: str | None = None  # the colour it turns into over the clip
    turn: int = 1  # +1 clockwise, -1 anticlockwise: sense of spinning and of circling
    drift: float = 0.0  # sideways speed of a bouncing object, frame heights per second
    phase: float = 0.0  # starting angle on the circular path, radians

    def __post_init__(self):
        object.__setattr__(self, "start", tuple(float(v) for v in self.start))  # a list, from JSON
        for name, value, allowed in (
            ("colour", self.colour, tuple(COLOURS)),
            ("shape", self.shape, SHAPES),
            ("size", self.size, tuple(SIZES)),
            ("motion", self.motion, MOTIONS),
            ("speed", self.speed, tuple(SPEEDS)),
            ("colour_to", self.colour_to, (None, *COLOURS)),
            ("turn", self.turn, (1, -1)),
        ):
            if value not in allowed:
                raise ValueError(f"ObjectSpec.{name} must be one of {list(allowed)}, got {value!r}")
        if self.shape == "circle" and self.motion == "spinning":
            raise ValueError("ObjectSpec.motion 'spinning' is not allowed for shape 'circle' (a spinning disc looks still)")
        if not all(0.0 <= v <= 1.0 for v in self.start):
            raise ValueError(f"ObjectSpec.start must be two fractions in [0, 1], got {self.start!r}")


@dataclass(frozen=True)
class Scene:
    """The ground truth of a clip: 1 to 3 objects (drawn in order) over a background that may fade."""

    objects: tuple[ObjectSpec, ...]
    background: str = "black"
    background_to: str | None = None  # the background it fades into over the clip

    def __post_init__(self):
        object.__setattr__(self, "objects", tuple(self.objects))
        if not 1 <= len(self.objects) <= 3:
            raise ValueError(f"Scene.objects must hold 1 to 3 objects, got {len(self.objects)}")
        for name, value in (("background", self.background), ("background_to", self.background_to)):
            if value not in (*BACKGROUNDS, None) or (name == "background" and value is None):
                raise ValueError(f"Scene.{name} must be one of {list(BACKGROUNDS)}, got {value!r}")

    def holds_shape(self, shapes) -> bool:
        """Whether any object is one of these shapes."""
        return any(obj.shape in shapes for obj in self.objects)

    def to_dict(self) -> dict:
        """Plain data for the JSON kept beside a clip; from_dict reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Scene":
        return cls(tuple(ObjectSpec(**obj) for obj in data["objects"]), data["background"], data.get("background_to"))


def is_held_out(obj: ObjectSpec) -> bool:
    """True when an object is one of the combinations kept out of training (either of its colours counts)."""
    colours = {obj.colour, obj.colour_to}
    return (
        ("purple" in colours and obj.shape == "star")
        or ("yellow" in colours and obj.shape == "triangle")
        or (obj.shape == "square" and obj.motion == "circle")
        or (obj.shape == "triangle" and obj.motion == "bouncing")
        or ("green" in colours and obj.motion == "shrinking")
    )


# --- geometry ------------------------------------------------------------------------------------


def _outer_vertices(shape: str, size: float, angle: float) -> np.ndarray:
    """(K, 2) outer corners of a shape of `size` centred on its centroid, turned by `angle`."""
    if shape == "circle":  # a 32-gon is close enough for extents
        k, radius, first = 32, size / 2, 0.0
    elif shape == "square":
        k, radius, first = 4, size / math.sqrt(2), math.pi / 4
    elif shape == "triangle":  # equilateral with side `size`, pointing up
        k, radius, first = 3, size / math.sqrt(3), -math.pi / 2
    else:  # star: five points on a circle of diameter `size`, one pointing up
        k, radius, first = 5, size / 2, -math.pi / 2
    theta = first + angle + 2 * math.pi * np.arange(k) / k
    return radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)


def extents(shape: str, size: float, angle: float = 0.0) -> tuple[float, float, float, float]:
    """(left, right, top, bottom) reach of a shape from its centre; left and top are negative."""
    v = _outer_vertices(shape, size, angle)
    return float(v[:, 0].min()), float(v[:, 0].max()), float(v[:, 1].min()), float(v[:, 1].max())


def shape_area(shape: str, size: float) -> float:
    """Area of a shape of `size` (diameter or side), in the same units squared."""
    if shape == "circle":
        return math.pi * size**2 / 4
    if shape == "square":
        return size**2
    if shape == "triangle":
        return math.sqrt(3) / 4 * size**2
    outer = size / 2  # star: ten triangles between the centre, a point and a notch
    return 5 * outer * (STAR_INNER_RATIO * outer) * math.sin(math.pi / 5)


def inside(shape: str, dx: np.ndarray, dy: np.ndarray, size: float, angle: float) -> np.ndarray:
    """Whether points at offsets (dx, dy) from a shape's centre lie inside it (vectorised)."""
    if shape == "circle":
        return dx * dx + dy * dy <= (size / 2) ** 2
    # Turn the points back by `angle`, so the test below is for the upright shape.
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= size / 2
    if shape == "triangle":
        apothem = size / (2 * math.sqrt(3))
        result = v <= apothem  # bottom edge, then the two slanted edges (normals 120 degrees apart)
        for normal in (math.pi / 2 + 2 * math.pi / 3, math.pi / 2 - 2 * math.pi / 3):
            result &= u * math.cos(normal) + v * math.sin(normal) <= apothem
        return result
    # Star: fold the angle into the wedge between a point (angle 0) and the next notch (pi/5), where
    # the outline is one straight edge, and test which side of that edge the point lies on.
    outer, inner = size / 2, STAR_INNER_RATIO * size / 2
    psi = np.mod(np.arctan2(v, u) + math.pi / 2, 2 * math.pi / 5)
    psi = np.minimum(psi, 2 * math.pi / 5 - psi)
    rho = np.hypot(u, v)
    px, py = rho * np.cos(psi), rho * np.sin(psi)
    ex, ey = inner * math.cos(math.pi / 5) - outer, inner * math.sin(math.pi / 5)
    return ex * py - ey * (px - outer) >= 0


def _collision_radius(shape: str, size: float) -> float:
    """Radius of the circle with the shape's area: the circle approximation used for collisions."""
    return math.sqrt(shape_area(shape, size) / math.pi)


# --- motion --------------------------------------------------------------------------------------


@dataclass
class Trajectories:
    """Per-frame state of every object, in frame heights and radians: arrays of shape (T, N)."""

    x: np.ndarray
    y: np.ndarray
    size: np.ndarray  # diameter or side
    angle: np.ndarray


def _scale(obj: ObjectSpec, t: np.ndarray) -> np.ndarray:
    if obj.motion == "growing":
        return np.minimum(MAX_GROWTH, GROWTH_PER_SECOND**t)
    if obj.motion == "shrinking":
        return np.maximum(MIN_SHRINK, GROWTH_PER_SECOND ** (-t))
    return np.ones_like(t)


def _placement(obj: ObjectSpec, aspect: float) -> tuple[float, float, float, float]:
    """(x, y, orbit radius, bounding radius) at t=0, in frame heights, for a frame `aspect` wide.

    The start fractions are mapped into the room the object has once its largest extent over the
    clip is taken away (spinning sweeps its corners, growing doubles), so it never leaves the frame.
    """
    size = SIZES[obj.size] * min(1.0, aspect)
    reach = float(np.hypot(*_outer_vertices(obj.shape, size, 0.0).T).max())
    if obj.motion == "spinning":
        left, right, top, bottom = -reach, reach, -reach, reach
    else:
        left, right, top, bottom = extents(obj.shape, size * (MAX_GROWTH if obj.motion == "growing" else 1.0))
    room_x, room_y = aspect - (right - left), 1.0 - (bottom - top)
    orbit = min(ORBIT_RADIUS, room_x / 2, room_y / 2) if obj.motion == "circle" else 0.0
    x = -left + orbit + obj.start[0] * (room_x - 2 * orbit)
    y = -top + orbit + obj.start[1] * (room_y - 2 * orbit)
    if obj.motion == "growing":
        reach *= MAX_GROWTH
    return x, y, orbit, reach


def simulate(scene: Scene, aspect: float, num_frames: int, fps: float) -> Trajectories:
    """Positions, sizes and angles of every object at every frame of a clip `aspect` frame heights wide.

    Spinning, growing, shrinking, circling and still objects follow closed formulas. Movers and
    bouncers are stepped at PHYSICS_RATE: they reflect off the frame's edges (bouncers lose speed at
    the bottom) and off each other (elastic, circle approximation, mass by area), after which a
    mover keeps its own speed; a kinematic object is an immovable obstacle for them.
    """
    n = len(scene.objects)
    t = np.arange(num_frames) / fps
    x, y = np.zeros((num_frames, n)), np.zeros((num_frames, n))
    size, angle = np.zeros((num_frames, n)), np.zeros((num_frames, n))
    placements = [_placement(obj, aspect) for obj in scene.objects]
    for i, obj in enumerate(scene.objects):
        x[:, i], y[:, i] = _kinematic_position(obj, placements[i], t)
        size[:, i] = SIZES[obj.size] * min(1.0, aspect) * _scale(obj, t)
        if obj.motion == "spinning":
            angle[:, i] = obj.turn * SPIN_RATE * t
    if any(obj.motion in DYNAMIC_MOTIONS for obj in scene.objects):
        _step_dynamic(scene, aspect, fps, placements, x, y, size)
    return Trajectories(x, y, size, angle)


def _kinematic_position(obj: ObjectSpec, placement, t):
    """Centre at time(s) t of an object that follows a formula (a dynamic one: its start)."""
    x0, y0, orbit, _ = placement
    if obj.motion != "circle":
        return x0 + 0 * t, y0 + 0 * t
    phi = obj.phase + obj.turn * 2 * math.pi * t / ORBIT_PERIOD
    return x0 + orbit * np.cos(phi), y0 + orbit * np.sin(phi)


def _kinematic_velocity(obj: ObjectSpec, placement, t: float) -> tuple[float, float]:
    if obj.motion != "circle":
        return 0.0, 0.0
    w = obj.turn * 2 * math.pi / ORBIT_PERIOD
    phi = obj.phase + w * t
    return -placement[2] * w * math.sin(phi), placement[2] * w * math.cos(phi)


def _step_dynamic(scene, aspect, fps, placements, x, y, size) -> None:
    """Overwrite x, y of the movers and bouncers by stepping the physics between frames."""
    num_frames, n = x.shape
    objects = scene.objects
    dynamic = [i for i, obj in enumerate(objects) if obj.motion in DYNAMIC_MOTIONS]
    substeps = max(1, round(PHYSICS_RATE / fps))
    dt = 1.0 / (fps * substeps)
    # Plain Python floats: with at most three objects this beats numpy's per-call overhead.
    px, py = [float(v) for v in x[0]], [float(v) for v in y[0]]
    vx, vy = [0.0] * n, [0.0] * n
    box = [extents(obj.shape, size[0, i]) for i, obj in enumerate(objects)]
    for i in dynamic:
        if objects[i].motion in LINEAR_MOTIONS:
            ux, uy = LINEAR_MOTIONS[objects[i].motion]
            vx[i], vy[i] = ux * SPEEDS[objects[i].speed], uy * SPEEDS[objects[i].speed]
        else:
            vx[i] = objects[i].drift
    for frame in range(1, num_frames):
        radius = [_collision_radius(obj.shape, size[frame, i]) for i, obj in enumerate(objects)]
        for sub in range(substeps):
            now = (frame - 1 + (sub + 1) / substeps) / fps
            for i in dynamic:
                if objects[i].motion == "bouncing":
                    vy[i] += GRAVITY * dt
                px[i] += vx[i] * dt
                py[i] += vy[i] * dt
            for i in range(n):
                if objects[i].motion == "circle":
                    px[i], py[i] = (float(v) for v in _kinematic_position(objects[i], placements[i], now))
            for i in dynamic:
                for j in range(n):
                    if j != i and not (j in dynamic and j < i):  # each dynamic pair once
                        _collide(i, j, j in dynamic, px, py, vx, vy, radius, objects, placements, now)
            for i in dynamic:
                # A collision turns a mover but does not change its speed, so "moves quickly" stays
                # true all clip long; and nothing squeezed between two objects gains speed without end.
                speed = math.hypot(vx[i], vy[i])
                limit = SPEEDS[objects[i].speed] if objects[i].motion in LINEAR_MOTIONS else MAX_BOUNCE_SPEED
                if speed > 0 and (objects[i].motion in LINEAR_MOTIONS or speed > limit):
                    vx[i], vy[i] = vx[i] * limit / speed, vy[i] * limit / speed
            for i in dynamic:  # walls last, so that nothing is ever drawn outside the frame
                left, right, top, bottom = box[i]
                if px[i] + left < 0:
                    px[i], vx[i] = -left, abs(vx[i])
                elif px[i] + right > aspect:
                    px[i], vx[i] = aspect - right, -abs(vx[i])
                if py[i] + top < 0:
                    py[i], vy[i] = -top, abs(vy[i])
                elif py[i] + bottom > 1.0:
                    keep = RESTITUTION if objects[i].motion == "bouncing" else 1.0
                    py[i], vy[i] = 1.0 - bottom, -abs(vy[i]) * keep
        x[frame, dynamic], y[frame, dynamic] = [px[i] for i in dynamic], [py[i] for i in dynamic]


def _collide(i, j, j_dynamic, px, py, vx, vy, radius, objects, placements, now) -> None:
    """Push apart and bounce dynamic object i off object j when they touch (in place).

    Elastic collision of discs with mass by area; a kinematic j is an immovable obstacle, which
    still has a velocity when it circles.
    """
    nx, ny = px[i] - px[j], py[i] - py[j]
    dist = math.hypot(nx, ny)
    overlap = radius[i] + radius[j] - dist
    if overlap <= 0 or dist == 0:
        return
    nx, ny = nx / dist, ny / dist
    if j_dynamic:
        mi, mj = radius[i] ** 2, radius[j] ** 2
        wi, wj = mj / (mi + mj), mi / (mi + mj)
        ujx, ujy = vx[j], vy[j]
    else:
        wi, wj = 1.0, 0.0
        ujx, ujy = _kinematic_velocity(objects[j], placements[j], now)
    px[i], py[i] = px[i] + wi * overlap * nx, py[i] + wi * overlap * ny
    px[j], py[j] = px[j] - wj * overlap * nx, py[j] - wj * overlap * ny
    approach = (vx[i] - ujx) * nx + (vy[i] - ujy) * ny
    if approach < 0:  # exchange the normal component of the relative velocity
        vx[i], vy[i] = vx[i] - 2 * wi * approach * nx, vy[i] - 2 * wi * approach * ny
        if j_dynamic:
            vx[j], vy[j] = vx[j] + 2 * wj * approach * nx, vy[j] + 2 * wj * approach * ny


# --- sampling ------------------------------------------------------------------------------------


def _sample_object(rng: np.random.Generator, colours: list[str]) -> ObjectSpec:
    """One object with uniformly drawn attributes, its colour(s) taken from `colours`."""
    colour = str(rng.choice(colours))
    shape = str(rng.choice(SHAPES))
    motions = [m for m in MOTIONS if not (shape == "circle" and m == "spinning")]
    motion = str(rng.choice(motions))
    others = [c for c in colours if c != colour]
    return ObjectSpec(
        colour=colour,
        shape=shape,
        size=str(rng.choice(list(SIZES))),
        motion=motion,
        speed=str(rng.choice(list(SPEEDS))) if motion in LINEAR_MOTIONS else "normal",
        start=_sample_start(rng, motion),
        colour_to=str(rng.choice(others)) if rng.random() < 0.15 and others else None,
        turn=int(rng.choice([1, -1])),
        drift=float(rng.uniform(0.1, 0.3) * rng.choice([1, -1])) if motion == "bouncing" and rng.random() < 0.5 else 0.0,
        phase=float(rng.uniform(0, 2 * math.pi)),
    )


def _sample_start(rng: np.random.Generator, motion: str) -> tuple[float, float]:
    # Movers start on the side they move away from, bouncers high up, so the caption's motion is
    # what the clip shows before any reflection.
    u, v = rng.uniform(0, 1, size=2)
    if motion == "left":
        u = 0.5 + u / 2
    elif motion == "right":
        u = u / 2
    elif motion == "up":
        v = 0.5 + v / 2
    elif motion == "down":
        v = v / 2
    elif motion == "bouncing":
        v = v * 0.35
    return float(u), float(v)


def _held_out_object(rng: np.random.Generator, colours: list[str]) -> ObjectSpec:
    """An object that breaks one of the HELD_OUT_RULES, drawn uniformly among them."""
    changes = {
        "purple star": dict(colour="purple", shape="star"),
        "yellow triangle": dict(colour="yellow", shape="triangle"),
        "square moving in a circle": dict(shape="square", motion="circle", speed="normal"),
        "triangle bouncing": dict(shape="triangle", motion="bouncing", speed="normal"),
        "green shrinking": dict(colour="green", motion="shrinking", speed="normal"),
    }[str(rng.choice(HELD_OUT_RULES))]
    obj = _sample_object(rng, colours)  # never a spinning circle, so any of the changes keeps it valid
    motion = changes.get("motion", obj.motion)
    colour_to = None if obj.colour_to == changes.get("colour") else obj.colour_to
    return replace(obj, **changes, colour_to=colour_to, start=_sample_start(rng, motion))


def _starts(objects: list[ObjectSpec], aspect: float) -> list[tuple[float, float, float, float]]:
    """(x, y, orbit centre x, orbit centre y) of each object at t=0 in a frame `aspect` wide."""
    result = []
    for obj in objects:
        placement = _placement(obj, aspect)
        x, y = _kinematic_position(obj, placement, 0.0)
        result.append((float(x), float(y), placement[0], placement[1]))
    return result


def _fits(objects: list[ObjectSpec]) -> bool:
    """Whether objects start apart, and kinematic ones never meet, in every aspect bucket.

    Movers and bouncers only need to start apart (collisions handle the rest); two kinematic objects
    must keep apart whatever they do, so their whole swept discs are compared.
    """
    for width, height in presets.ASPECT_RATIOS.values():
        aspect = width / height
        placements = [_placement(obj, aspect) for obj in objects]
        starts = _starts(objects, aspect)
        for i in range(len(objects)):
            for j in range(i):
                kinematic = objects[i].motion not in DYNAMIC_MOTIONS and objects[j].motion not in DYNAMIC_MOTIONS
                # A mover starts a little way off, so its first stretch shows the motion it was given.
                reach = placements[i][3] + placements[j][3] + (0.02 if kinematic else 0.1)
                if kinematic:
                    reach += placements[i][2] + placements[j][2]
                    dist = math.hypot(starts[i][2] - starts[j][2], starts[i][3] - starts[j][3])
                else:
                    dist = math.hypot(starts[i][0] - starts[j][0], starts[i][1] - starts[j][1])
                if dist < reach:
                    return False
    return True


def sample_scene(rng: np.random.Generator, *, held_out: bool = False, num_objects: int | None = None) -> Scene:
    """Draw a scene. held_out=False never emits a held-out object; held_out=True always has one.

    Objects in a scene have different colours (so a caption can tell them apart); a background fades
    in about 15% of scenes, an object changes colour in about 15% of objects.
    """
    if num_objects is not None and not 1 <= num_objects <= 3:
        raise ValueError(f"num_objects must be 1, 2 or 3, got {num_objects!r}")
    n = num_objects or int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    while True:  # draw until the objects fit together (rarely more than a few dozen tries)
        objects: list[ObjectSpec] = []
        while len(objects) < n:
            free = [c for c in COLOURS if all(c not in (o.colour, o.colour_to) for o in objects)]
            obj = _held_out_object(rng, free) if held_out and not objects else _sample_object(rng, free)
            if obj.colour not in free or (not held_out and is_held_out(obj)):
                continue  # held out from training, or a held-out rule's colour is already taken
            objects.append(obj)
        if _fits(objects):
            break
    if held_out:  # the held-out object need not always be drawn first (last is on top)
        objects = [objects[k] for k in rng.permutation(n)]
    background = str(rng.choice(list(BACKGROUNDS)))
    background_to = None
    if rng.random() < 0.15:
        background_to = str(rng.choice([b for b in BACKGROUNDS if b != background]))
        if rng.random() < 0.3:  # day turns to night, the fade WORLD.md names
            background, background_to = "sky", "navy"
    return Scene(tuple(objects), background, background_to)


# --- rendering -----------------------------------------------------------------------------------


@dataclass
class RenderedClip:
    """Frames of a clip with the per-frame ground truth of its objects, in pixels."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    object_masks: np.ndarray  # (T, H, W) bool: pixels any object covers
    centres: np.ndarray  # (T, N, 2) float: x, y of each object's centroid
    sizes: np.ndarray  # (T, N) float: diameter or side
    angles: np.ndarray  # (T, N) float: radians, clockwise on screen
    colours: np.ndarray  # (T, N, 3) float: RGB (between palette colours while one changes)
    backgrounds: np.ndarray  # (T, 2, 3) float: colours of the top and the bottom row
    fps: float


def _ramp(num_frames: int, span: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """(T,) progress from 0 to 1 across `span` of the clip."""
    f = np.arange(num_frames) / max(1, num_frames - 1)
    return np.clip((f - span[0]) / (span[1] - span[0]), 0.0, 1.0)


def render(scene: Scene, height: int, width: int, num_frames: int, fps: float, *, supersample: int = 2) -> RenderedClip:
    """Draw a scene as a clip of (num_frames, height, width, 3) uint8 frames.

    Each object is drawn per frame into a small patch around it, antialiased by testing
    supersample x supersample points per pixel; the background is a vertical gradient.
    """
    if height < 8 or width < 8 or num_frames < 1 or fps <= 0 or supersample < 1:
        raise ValueError(
            f"render needs height, width >= 8, num_frames >= 1, fps > 0, supersample >= 1; "
            f"got {height=}, {width=}, {num_frames=}, {fps=}, {supersample=}"
        )
    # 1. Where everything is, in frame heights, then in pixels (one frame height is `height` pixels).
    traj = simulate(scene, width / height, num_frames, fps)
    centres = np.stack([traj.x, traj.y], axis=-1) * height  # (T, N, 2)
    sizes = traj.size * height  # (T, N)

    # 2. Colours over time: a background fade spans the clip, a colour change its middle third.
    fade = _ramp(num_frames)[:, None, None]  # (T, 1, 1)
    top_bottom = np.asarray(BACKGROUNDS[scene.background], dtype=np.float32)  # (2, 3)
    end = np.asarray(BACKGROUNDS[scene.background_to or scene.background], dtype=np.float32)
    backgrounds = top_bottom * (1 - fade) + end * fade  # (T, 2, 3)
    change = _ramp(num_frames, COLOUR_CHANGE_SPAN)[:, None]  # (T, 1)
    colours = np.stack(
        [np.asarray(COLOURS[o.colour]) * (1 - change) + np.asarray(COLOURS[o.colour_to or o.colour]) * change for o in scene.objects],
        axis=1,
    )  # (T, N, 3)

    # 3. Background: rows blend from the top colour to the bottom colour.
    rows = (np.arange(height, dtype=np.float32) / (height - 1))[None, :, None]  # (1, H, 1)
    gradient = backgrounds[:, :1] * (1 - rows) + backgrounds[:, 1:] * rows  # (T, H, 3)
    canvas = np.empty((num_frames, height, width, 3), np.float32)
    canvas[...] = gradient[:, :, None, :]  # (T, H, W, 3)
    coverage = np.zeros((num_frames, height, width), dtype=np.float32)

    # 4. Objects, in order (later ones on top), each in the patch of pixels its extents touch.
    sub = (np.arange(supersample) + 0.5) / supersample  # sample offsets inside a pixel
    for t in range(num_frames):
        for i, obj in enumerate(scene.objects):
            cx, cy, size, angle = *centres[t, i], sizes[t, i], traj.angle[t, i]
            left, right, top, bottom = extents(obj.shape, size, angle)
            x0, x1 = max(0, int(cx + left) - 1), min(width, int(math.ceil(cx + right)) + 1)
            y0, y1 = max(0, int(cy + top) - 1), min(height, int(math.ceil(cy + bottom)) + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            xs = (np.arange(x0, x1)[:, None] + sub[None, :]).reshape(-1) - cx  # (w * s,)
            ys = (np.arange(y0, y1)[:, None] + sub[None, :]).reshape(-1) - cy  # (h * s,)
            hit = inside(obj.shape, xs[None, :], ys[:, None], size, angle)  # (h * s, w * s)
            alpha = hit.reshape(y1 - y0, supersample, x1 - x0, supersample).mean(axis=(1, 3), dtype=np.float32)
            patch = canvas[t, y0:y1, x0:x1]
            patch += alpha[..., None] * (colours[t, i].astype(np.float32) - patch)
            cov = coverage[t, y0:y1, x0:x1]
            cov += alpha * (1 - cov)
    frames = (canvas + 0.5).astype(np.uint8)  # rounds: every pixel is a blend of colours in [0, 255]
    return RenderedClip(frames, coverage > 0, centres, sizes, traj.angle, colours, backgrounds, fps)


# --- captions ------------------------------------------------------------------------------------

SHAPE_WORDS = {"circle": ["ball", "circle", "disc"], "square": ["square", "box", "block"], "triangle": ["triangle"], "star": ["star"]}
SIZE_WORDS = {"small": ["small", "little", "tiny"], "medium": [""], "large": ["large", "big", "huge"]}
SPEED_WORDS = {"slowly": ["slowly", "gently", "at a slow pace"], "normal": [""], "quickly": ["quickly", "fast", "rapidly"]}
BACKGROUND_WORDS = {
    "black": ["black", "deep black", "plain black"],
    "gray": ["gray", "grey", "plain gray"],
    "navy": ["navy", "navy blue", "dark blue"],
    "sky": ["sky blue", "blue sky", "bright sky"],
    "sunset": ["sunset", "warm sunset", "orange and purple sunset"],
}
# motion -> (present tense, -ing form) pairs
MOTION_WORDS = {
    "left": [("moves to the left", "moving to the left"), ("slides left", "sliding left"), ("drifts to the left", "drifting to the left"), ("travels leftward", "travelling leftward")],
    "right": [("moves to the right", "moving to the right"), ("slides right", "sliding right"), ("drifts to the right", "drifting to the right"), ("travels rightward", "travelling rightward")],
    "up": [("moves up", "moving up"), ("rises", "rising"), ("floats upward", "floating upward"), ("drifts up", "drifting up")],
    "down": [("moves down", "moving down"), ("sinks", "sinking"), ("slides down", "sliding down"), ("drifts downward", "drifting downward")],
    "bouncing": [("bounces", "bouncing"), ("bounces up and down", "bouncing up and down"), ("bounces off the ground", "bouncing off the ground")],
    "spinning": [("spins", "spinning"), ("rotates", "rotating"), ("spins in place", "spinning in place"), ("twirls", "twirling")],
    "growing": [("grows", "growing"), ("gets bigger", "getting bigger"), ("expands", "expanding"), ("grows larger", "growing larger")],
    "shrinking": [("shrinks", "shrinking"), ("gets smaller", "getting smaller"), ("contracts", "contracting"), ("shrinks down", "shrinking down")],
    "circle": [("moves in a circle", "moving in a circle"), ("circles around", "circling around"), ("travels in a circular path", "travelling in a circular path")],
    "still": [("stays still", "staying still"), ("sits still", "sitting still"), ("rests motionless", "resting motionless"), ("does not move", "not moving")],
}
CANONICAL_MOTIONS = {"left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down", "circle": "moving in a circle", "still": "staying still"}
FADE_NAMES = {("sky", "navy"): "day turns to night", ("navy", "sky"): "night turns to day", ("sky", "sunset"): "day turns to dusk", ("sunset", "navy"): "dusk turns to night"}


def _pick(rng: np.random.Generator, options: list) -> str:
    return options[int(rng.integers(len(options)))]


def _noun(obj: ObjectSpec, rng: np.random.Generator) -> str:
    words = [_pick(rng, SIZE_WORDS[obj.size]), obj.colour, _pick(rng, SHAPE_WORDS[obj.shape])]
    phrase = " ".join(w for w in words if w)
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _verb(obj: ObjectSpec, rng: np.random.Generator, ing: bool = False) -> str:
    verb = _pick(rng, MOTION_WORDS[obj.motion])[1 if ing else 0]
    speed = _pick(rng, SPEED_WORDS[obj.speed])
    if speed:  # "slowly drifts left" or "drifts left slowly"; "fast" only ever comes after
        verb = f"{speed} {verb}" if speed.endswith("ly") and rng.random() < 0.5 else f"{verb} {speed}"
    if obj.colour_to:
        turns = "turning" if ing else "turns"
        verb += _pick(rng, [f" and {turns} {obj.colour_to}", f", changing from {obj.colour} to {obj.colour_to}", f" while turning {obj.colour_to}"])
    return verb


def _background(scene: Scene, rng: np.random.Generator) -> str:
    prep = _pick(rng, ["on", "against", "over", "in front of"])
    name = _pick(rng, BACKGROUND_WORDS[scene.background])
    phrase = f"{prep} {'an' if name[0] in 'aeiou' else 'a'} {name} {_pick(rng, ['background', 'backdrop'])}"
    if scene.background_to:
        to = _pick(rng, BACKGROUND_WORDS[scene.background_to])
        options = [f", while the background fades to {to}", f", as the background changes to {to}"]
        if (scene.background, scene.background_to) in FADE_NAMES:
            options.append(f", as {FADE_NAMES[scene.background, scene.background_to]}")
        phrase += _pick(rng, options)
    return phrase


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A varied English caption of every attribute of a scene; another rng gives a paraphrase."""
    template = int(rng.integers(5))
    ing = template in (2, 4)  # "a red ball moving left ..." rather than "a red ball moves left ..."
    clauses = [f"{_noun(obj, rng)} {_verb(obj, rng, ing)}" for obj in scene.objects]
    joined = clauses[-1]
    if len(clauses) > 1:
        joined = ", ".join(clauses[:-1]) + (" and " if ing else _pick(rng, [" and ", ", while "])) + clauses[-1]
    bg = _background(scene, rng)
    if template == 0:
        text = f"{joined} {bg}."
    elif template == 1:
        text = f"{bg}{':' if scene.background_to else ','} {joined}."
    elif template == 2:
        shot = _pick(rng, ["A cinematic shot of", "A smooth, high quality video of", "Close-up footage of", "A simple animation showing"])
        style = _pick(rng, ["The camera is still and the motion is smooth.", "Flat colours, clean edges, steady camera.", "Realistic physics, soft lighting."])
        text = f"{shot} {joined} {bg}. {style}"
    elif template == 3:
        text = f"In this video, {joined} {bg}."
    else:
        text = f"{joined} {bg}"
    return text[0].upper() + text[1:]


def training_caption(scene: Scene, rng: np.random.Generator) -> str:
    """caption(), except an empty string about 10% of the time (for classifier-free guidance)."""
    return "" if rng.random() < 0.1 else caption(scene, rng)


def describe(scene: Scene) -> str:
    """The canonical caption: one fixed template, the eval's prompts. Same scene, same text."""
    parts = []
    for obj in scene.objects:
        size = "" if obj.size == "medium" else f"{obj.size} "
        motion = CANONICAL_MOTIONS.get(obj.motion, obj.motion)  # bouncing, spinning, growing, shrinking
        speed = "" if obj.speed == "normal" else f" {obj.speed}"
        change = f" turning {obj.colour_to}" if obj.colour_to else ""
        article = "an" if (size or obj.colour)[0] in "aeiou" else "a"
        parts.append(f"{article} {size}{obj.colour} {obj.shape}{change} {motion}{speed}")
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    text += f" on a {scene.background} background"
    if scene.background_to:
        text += f" fading to {scene.background_to}"
    return text


def caption_vocabulary(scenes: int = 2000, seed: int = 0) -> list[str]:
    """Every word the captions use, the training ones and the eval's (describe), sorted: what a model
    trained on the world has read. Gathered from captions of sampled scenes rather than listed, so a
    word the captioner gains is counted with it."""
    rng = np.random.default_rng(seed)
    words = set()
    for _ in range(scenes):
        scene = sample_scene(rng)
        words.update(prompt_words(caption(scene, rng)), prompt_words(describe(scene)))
    return sorted(words)


# --- convenience ---------------------------------------------------------------------------------


def sample_clip(
    seed: int,
    aspect: str,
    quality: str = "fast",
    duration: float = 2.0,
    fps: int = 15,
    held_out: bool = False,
    num_objects: int | None = None,
) -> tuple[Scene, str, RenderedClip]:
    """(scene, caption, clip) for one seed at an aspect bucket and quality preset of presets.py.

    The caption is never empty; training scripts that want caption dropout call training_caption.
    """
    height, width = presets.resolution(aspect, quality)
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng, held_out=held_out, num_objects=num_objects)
    return scene, caption(scene, rng), render(scene, height, width, presets.num_frames(duration, fps), fps)
