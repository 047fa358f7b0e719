"""`lab images [--offline]`: build the images the Docker runtime needs.

Without ``--offline`` the platform image is built on the official Python base (and Docker pulls
the other official images when the stack starts). ``--offline`` builds everything from Debian
packages for machines that reach no image registry; see :mod:`scenarios.images`.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from scenarios import images
from scenarios.cli_support import EXIT_OK, JsonOption, finish
from scenarios.config import LabConfig

console = Console()


def register(app: typer.Typer) -> None:
    app.command("images")(images_command)


def images_command(
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="build every image from Debian packages (debootstrap; needs root), no registry",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="rebuild images that already exist")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Build the Docker images of the platform (`lab up --runtime docker` uses them)."""
    config = LabConfig()
    began = time.perf_counter()
    shown = Console(stderr=True) if as_json else console
    if offline:
        steps, env_path = images.build_offline_images(
            config.home, force=force, log=lambda line: shown.print(f"[dim]{line}[/dim]")
        )
    else:
        images.docker_available()
        env_path = images.images_env_path(config.home)
        values = {**images.OFFICIAL_IMAGES, **images.read_env_file(env_path)}
        log_file = config.home / "logs" / "images-build.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        steps = [
            images.ensure_app_image(
                values["CNOP_IMAGE"],
                values["PYTHON_BASE_IMAGE"],
                log=lambda line: shown.print(f"[dim]{line}[/dim]"),
                log_file=log_file,
            )
        ]
    total = time.perf_counter() - began
    if as_json:
        built = [
            {"image": s.image, "built": s.built, "note": s.note, "seconds": round(s.seconds, 3)}
            for s in steps
        ]
        env_file = str(env_path) if offline else None
        finish("images", EXIT_OK, True, images=built, seconds=round(total, 3), env_file=env_file)
    table = Table(header_style="bold")
    table.add_column("image")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    for step in steps:
        result = "[green]built[/green]" if step.built else f"kept ({step.note or 'exists'})"
        table.add_row(step.image, result, f"{step.seconds:.1f}")
    console.print(table)
    console.print(f"done in {total:.1f} s")
    if offline:
        console.print(
            f"image names written to {env_path}; `lab up --runtime docker` uses them "
            "(delete the file to go back to the official images)"
        )
