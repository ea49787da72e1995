"""Running a batch of pictures from the CLI: its checks before any work, its seeds, its manifest, and
its events rendered (paths or JSON lines on stdout, progress and problems on stderr)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from ..errors import EXIT_BATCH_PARTIAL, LladaError, UsageError
from ..io.files import display_path, ensure_writable_dir
from ..limits import seed_or_drawn
from .options import OutputFlags
from .runtime import output


class BatchFailed(LladaError):
    exit_code = EXIT_BATCH_PARTIAL


def check_outputs(out: OutputFlags, n_items: int) -> None:
    """Flags about where results go that cannot work together, and the names they give; checked before
    anything is loaded or written."""
    from ..io.outputs import check_name_pattern, image_format

    if out.output is not None and (n_items > 1 or out.out_dir is not None):
        raise UsageError("--output names one image; use --out-dir for several")
    if out.resume and out.out_dir is None:
        raise UsageError("--resume needs the --out-dir that holds the manifest")
    if out.output is not None:
        image_format(out.output, "--output")
    else:
        check_name_pattern(out.name)
    ensure_writable_dir(out.output.parent if out.output is not None else out.out_dir or Path("."))


def batch_seed(seed: int | None, manifest, resume: bool) -> int:
    """The batch's base seed: given, or the one a resumed batch started with, or drawn; recorded in the
    manifest so that `--resume` without `--seed` gives every item the seed it had."""
    if seed is None and resume and manifest is not None:
        seed = manifest.load().get("batch", {}).get("base_seed")
    if seed is None:
        seed = seed_or_drawn(None)
    if manifest is not None:  # written with the first item's line
        manifest.pending = {"id": "batch", "state": "batch", "base_seed": seed}
    return seed


def manifest_for(out: OutputFlags, n_items: int):
    """A batch (several items, or an output folder) keeps a manifest; one `-o` image does not."""
    from ..io.manifest import MANIFEST, BatchManifest

    folder = out.out_dir or Path(".")
    return BatchManifest(folder / MANIFEST) if (out.out_dir is not None or n_items > 1) else None


def batch_options(out: OutputFlags, decoder):
    """The batch runner's options from the output flags and the decoder settings."""
    from ..batch import BatchOptions

    return BatchOptions(decoder=decoder, metadata=out.metadata, force=out.force, name_pattern=out.name)


def run_batch(
    engine, job, options, out: OutputFlags, items, manifest, json_out: bool, what: str, parallel: int = 1
) -> None:
    """Run the items (on the engine, or `parallel` at a time on the job's server) and render their
    events; some failed: BatchFailed (exit 3)."""
    from ..batch import BatchRunner

    sink = output()
    with _progress(sink, len(items)) as progress:
        runner = BatchRunner(
            engine,
            job,
            options,
            folder=out.out_dir or Path("."),
            manifest=manifest,
            events=(events := CliEvents(sink, json_out, progress)),
            single_output=out.output,
            parallel=parallel,
        )
        failed = runner.run(items, out.resume)
    if events.skips:  # --resume: say what it found done, even when nothing was left
        sink.info(f"{events.skips} of {len(items)} {what} already finished: skipped")
    if failed:
        where = f" and {manifest.path}" if manifest else ""
        raise BatchFailed(f"{len(failed)} of {len(items)} {what} failed", f"see the errors above{where}")


def _progress(out, total: int):
    if not out.interactive:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out.console,
        transient=True,
    )
    progress.images = progress.add_task("images", total=total)
    return progress


class CliEvents:
    """Renders batch events: paths or JSON lines on stdout, progress and problems on stderr."""

    def __init__(self, out, json_out: bool, progress):
        self.out, self.json_out, self.progress = out, json_out, progress
        self.skips = 0  # items --resume found done

    def _describe(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.progress.images, description=text)

    def started(self, item, phase: str) -> None:
        doing = {"codes": "codes", "decode": "decoding", "server": "on the server"}[phase]
        self._describe(f"[{item.index + 1}] {doing}: {item.prompt[:40]}")

    def stage(self, item, stage: str, step: int, total: int) -> None:
        if stage == "decoder" and total:
            self._describe(f"[{item.index + 1}] decoder {step}/{total}")

    def thinking(self, item, text: str) -> None:
        self.out.console.print(f"thinking [{item.index + 1}]: {text}", markup=False, style="dim")

    def done(self, item, record: dict) -> None:
        if self.progress is not None:
            self.progress.advance(self.progress.images)
        if self.json_out:
            self.out.json(record)
        else:
            self.out.data(display_path(record["path"]))

    def failed(self, item, message: str) -> None:
        if self.progress is not None:
            self.progress.advance(self.progress.images)
        where = f" (line {item.line})" if item.line else ""
        self.out.console.print(f"error: image {item.index + 1}{where}: {message}", markup=False, style="red")

    def skipped(self, item, why: str) -> None:
        self.skips += 1
        if self.progress is not None:
            self.progress.advance(self.progress.images)
        self.out.detail(f"image {item.index + 1}: skipped, {why}")
