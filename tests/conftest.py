import math
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from course_lib.data import Split

# Under pytest-xdist two workers share the cores: one torch thread each avoids oversubscription,
# which made small-tensor tests 2-3x slower. Notebook kernels are separate processes, unaffected.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


_KILLED_WHILE_WRITING = """
import os, time
import course_lib.hardening.secure as secure
real_fsync = os.fsync
def slow_fsync(fd):
    real_fsync(fd)
    print("writing", flush=True)
    time.sleep(60)  # SIGKILLed here, with the first file of a new model half-way to disk
secure.os.fsync = slow_fsync
"""


@pytest.fixture
def kill_while_writing():
    """Run Python ``code`` in a subprocess and SIGKILL it once save_secure starts writing files."""

    def run(code: str) -> None:
        script = _KILLED_WHILE_WRITING + textwrap.dedent(code)
        process = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout.readline().strip() == "writing"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    return run


# --- colour images for tests that need them (the course itself uses the digits) ---------------

SHAPES = ("circle", "square", "triangle", "ring")


def shapes_dataset(count: int, *, size: int = 32, seed: int = 0, textured: bool = True) -> Split:
    """``count`` procedural colour images (N, 3, size, size) of one of four shapes on a texture.

    The class is the shape (``SHAPES``); position, scale, colours and the background texture
    (stripes, checkerboard or noise, at random frequency and angle) vary at random, so a
    model must learn the shape, not the pixels. Seeded: the same seed gives the same images.
    """
    if count < 1 or size < 8:
        raise ValueError(f"count must be >= 1 and size >= 8, got count={count}, size={size}")
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(len(SHAPES), (count,), generator=generator)
    coordinates = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(coordinates, coordinates, indexing="ij")
    images = torch.empty(count, 3, size, size)
    for index in range(count):
        images[index] = _draw(int(targets[index]), x, y, generator, textured)
    return Split(images, targets)


def _uniform(generator: torch.Generator, low: float, high: float, shape=()) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def _draw(
    shape: int, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, textured: bool
) -> torch.Tensor:
    centre = _uniform(generator, -0.35, 0.35, (2,))
    radius = float(_uniform(generator, 0.3, 0.55))
    u, v = x - centre[0], y - centre[1]
    if shape == 0:  # circle
        mask = u**2 + v**2 <= radius**2
    elif shape == 1:  # square
        mask = (u.abs() <= radius * 0.85) & (v.abs() <= radius * 0.85)
    elif shape == 2:  # triangle, pointing up
        mask = (v <= radius * 0.8) & (v >= 2 * u.abs() - radius)
    else:  # ring
        distance = (u**2 + v**2).sqrt()
        mask = (distance <= radius) & (distance >= radius * 0.6)
    background = _texture(x, y, generator) if textured else torch.zeros_like(x)
    colour_back, colour_front = (
        torch.rand(3, generator=generator) * 0.6,
        0.4 + 0.6 * torch.rand(3, generator=generator),
    )
    image = colour_back[:, None, None] * (0.6 + 0.4 * background)
    return torch.where(mask, colour_front[:, None, None].expand_as(image), image).clamp(0, 1)


def _texture(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    kind = int(torch.randint(3, (1,), generator=generator))
    frequency = float(_uniform(generator, 3, 9))
    angle = float(_uniform(generator, 0, math.pi))
    along = x * math.cos(angle) + y * math.sin(angle)
    if kind == 0:  # stripes
        return 0.5 + 0.5 * torch.sin(frequency * math.pi * along)
    if kind == 1:  # checkerboard
        across = -x * math.sin(angle) + y * math.cos(angle)
        return ((torch.floor(frequency * along) + torch.floor(frequency * across)) % 2).float()
    return torch.rand(x.shape, generator=generator)  # noise


@pytest.fixture
def shapes():
    """``shapes(count, size=..., seed=...)``: seeded colour images of four shapes, as a Split."""
    return shapes_dataset
