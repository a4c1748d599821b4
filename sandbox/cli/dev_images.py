"""``sandboxctl dev images``: the data plane's locally built container images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sandbox.cli.output import OutputFormat, fail, print_rows
from sandbox.cli.progress import Progress, QuietOpt
from sandbox.devenv.images import (
    IMAGES,
    archive_ref,
    build_image,
    content_key,
    image_cache_dir,
    image_ref,
    import_archive,
)
from sandbox.errors import SandboxError

__all__ = ["images"]


def _unbuildable(image: str, reason: str) -> dict[str, object]:
    return {
        "name": image,
        "ref": "",
        "cached": False,
        "key": "",
        "archive": "",
        "description": f"cannot be built: {reason}",
    }


def images(
    build: Annotated[
        bool, typer.Option("--build", help="Build the images missing from the cache.")
    ] = False,
    import_to: Annotated[
        Path | None,
        typer.Option(
            "--import-to",
            metavar="SOCKET",
            help="containerd socket to import into (namespace k8s.io); builds what is missing.",
        ),
    ] = None,
    name: Annotated[
        list[str] | None, typer.Option("--name", help="Only this image (repeatable).")
    ] = None,
    repo: Annotated[Path, typer.Option(help="The regsandbox checkout.")] = Path(),
    output: Annotated[OutputFormat, typer.Option("-o", "--output")] = OutputFormat.table,
    quiet: QuietOpt = False,
) -> None:
    """List the local images (pause, busybox, opa, regsandbox) and their cache state.

    No registry is used: images are built from source and Debian packages, cached by a
    digest of their inputs, and imported into containerd with ctr.
    """
    selected = list(name) if name else list(IMAGES)
    unknown = [n for n in selected if n not in IMAGES]
    if unknown:
        fail(f"unknown image(s): {', '.join(unknown)}; known: {', '.join(IMAGES)}", 2)
    checkout = repo.resolve()
    progress = Progress(quiet=quiet).note
    try:
        built: dict[str, Path] = {}
        if build or import_to is not None:
            for image in selected:
                built[image] = build_image(image, repo=checkout, progress=progress)
        if import_to is not None:
            for image in selected:
                import_archive(import_to, built[image], progress=progress)
        rows: list[dict[str, object]] = []
        for image in selected:
            # What was just built; otherwise what the checkout would build now.
            archive = built.get(image)
            if archive is None:
                try:
                    key = content_key(image, checkout)
                except SandboxError as exc:  # e.g. opa not built yet: say so in the row
                    rows.append(_unbuildable(image, str(exc)))
                    continue
                archive = image_cache_dir() / f"{image}-{key}.tar"
            rows.append(
                {
                    "name": image,
                    "ref": archive_ref(archive)
                    if archive.is_file()
                    else image_ref(image, checkout),
                    "cached": archive.is_file(),
                    "key": archive.stem.removeprefix(f"{image}-"),
                    "archive": str(archive),
                    "description": IMAGES[image],
                }
            )
    except SandboxError as exc:
        fail(str(exc))
    print_rows(
        rows, ["name", "ref", "cached"], output, wide_columns=["key", "archive", "description"]
    )
