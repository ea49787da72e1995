"""Batches over the engine's tasks: items and their seeds, names reserved before any work, the manifest
and `--resume`, the files each finished image leaves (its codes, then the image with its record), and
what a failure stops (an item, or the whole run).

Both stages load once and serve the whole batch. When the engine runs phased (`--low-memory`, or the
memory plan), every item's codes come first, then the backbone is released, then every decode, so the
peak is the larger stage rather than their sum. A failing item is recorded and skipped while the rest go
on; a failure of the run itself (RUN_FAILURES) stops it with one message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import (
    Interrupted,
    LladaError,
    ModelUnavailable,
    OutOfMemory,
    ServerAccessRefused,
    ServerBusy,
    ServerUnavailable,
    UsageError,
)
from .io.files import atomic_write_text
from .io.imagefiles import save_image
from .io.manifest import BatchManifest
from .io.outputs import DEFAULT_NAME, Reservations, codes_path, render_name
from .io.promptfiles import Entry, read_codes_file
from .records import GenerationRecord
from .settings import DecoderSettings, EditSettings, ImageSettings

# Failures that are the run's, not an item's: the next item would meet them alike, so the batch stops
# with one message and its own exit code (a damaged or missing model, out of memory, Ctrl-C).
RUN_FAILURES = (Interrupted, OutOfMemory, ModelUnavailable, ServerUnavailable, ServerAccessRefused)


@dataclass
class Item:
    index: int
    prompt: str
    seed: int
    width: int
    height: int
    steps: int | None = None
    cfg: float | None = None
    output: str | None = None
    line: int | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        key = json.dumps(
            [self.index, self.prompt, self.seed, self.width, self.height, self.steps, self.cfg, self.extra],
            sort_keys=True,
        )
        return hashlib.sha1(key.encode()).hexdigest()[:12]


def plan_items(entries: list[Entry], n: int, base_seed: int, width: int, height: int) -> list[Item]:
    """Expand entries by -n; image i gets seed base + i unless its entry names one."""
    items: list[Item] = []
    for entry in entries:
        for copy in range(n):
            f = entry.fields
            index = len(items)
            seed = f["seed"] + copy if "seed" in f else base_seed + index
            items.append(
                Item(
                    index,
                    f.get("prompt", ""),
                    seed,
                    f.get("width", width),
                    f.get("height", height),
                    f.get("steps"),
                    f.get("cfg"),
                    f.get("output") if n == 1 else None,
                    entry.line,
                    entry.error,
                )
            )
    return items


def slug(text: str, limit: int = 40) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "image"


def reserve_output(item: Item, names: Reservations, pattern: str) -> Path:
    """Choose and reserve where an item's image goes: its own name from a file (kept inside the output
    folder) or the --name pattern's first free name."""
    if item.output:
        return names.named(item.output, f"line {item.line}: output" if item.line else "output")
    fields = dict(
        index=item.index, seed=item.seed, slug=slug(item.prompt), width=item.width, height=item.height
    )
    return names.pattern(render_name(pattern, **fields))


def item_record(item: Item, state: str, **extra) -> dict:
    base = {k: v for k, v in asdict(item).items() if k not in ("extra", "error") and v is not None}
    return {"id": item.id, "state": state, **base, **extra}


@dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """Where and how a batch writes."""

    decoder: DecoderSettings = field(default_factory=DecoderSettings)
    metadata: bool = True  # the generation record inside each image
    force: bool = False  # replace files that existed before the run
    name_pattern: str = DEFAULT_NAME


class Events:
    """What a batch reports as it goes; the CLI renders these (progress, JSON lines, errors)."""

    def started(self, item: Item, phase: str) -> None: ...
    def stage(self, item: Item, stage: str, step: int, total: int) -> None: ...
    def thinking(self, item: Item, text: str) -> None: ...
    def done(self, item: Item, record: dict) -> None: ...
    def failed(self, item: Item, message: str) -> None: ...
    def skipped(self, item: Item, why: str) -> None: ...


class TextToImageJob:
    """The backbone stage of text-to-image, per item: (ImageCodes, its record)."""

    def __init__(self, engine, settings: ImageSettings, decoder: DecoderSettings):
        self.engine, self.settings, self.decoder = engine, settings, decoder

    def _settings(self, item: Item) -> ImageSettings:
        s = self.settings
        if item.steps is not None:
            s = dataclasses.replace(s, sampler=dataclasses.replace(s.sampler, steps=item.steps))
        return dataclasses.replace(s, cfg=item.cfg) if item.cfg is not None else s

    def grid(self, item: Item) -> tuple[int, int]:
        from .limits import check_size

        return check_size(item.width, item.height, self.decoder.resolution_multiplier)

    def precheck(self, item: Item) -> None:
        """Before any model loads: the size, and that the prompt fits the context."""
        self.engine.check_prompt_fits(item.prompt, self.grid(item))

    def codes(self, item: Item, on_step):
        grid = self.grid(item)
        return self.engine.text_to_image_codes(
            item.prompt, grid, self._settings(item), self.decoder, item.seed, on_step
        )


class EditJob:
    """The backbone stage of an edit, per item: crop and encode its images, then the new codes."""

    def __init__(self, engine, settings: EditSettings, decoder: DecoderSettings, grid=None):
        self.engine, self.settings, self.decoder, self.grid = engine, settings, decoder, grid

    def _settings(self, item: Item) -> EditSettings:
        s = self.settings
        if item.steps is not None:
            s = dataclasses.replace(s, sampler=dataclasses.replace(s.sampler, steps=item.steps))
        changes = {
            k: v
            for k, v in (("cfg_text", item.cfg), ("cfg_image", item.extra.get("cfg_image")))
            if v is not None
        }
        return dataclasses.replace(s, **changes)

    def _images(self, item: Item) -> list:
        from .io.images import load_image

        return [load_image(p) for p in item.extra["images"]]

    def codes(self, item: Item, on_step):
        codes, record, _ = self.engine.edit_codes(
            self._images(item), item.prompt, self._settings(item), self.decoder, item.seed, self.grid, on_step
        )
        return codes, record


class RemoteTextToImageJob(TextToImageJob):
    """Text to image on a server (`llada serve` or SGLang-Omni): the whole picture comes back."""

    def __init__(self, remote, settings: ImageSettings, decoder: DecoderSettings):
        super().__init__(None, settings, decoder)
        self.remote = remote

    def precheck(self, item: Item) -> None:
        """The size, and settings the server has no field for; it checks that the prompt fits its context."""
        self.remote.check_picture(item.prompt, self.grid(item), self._settings(item), self.decoder)

    def picture(self, item: Item):
        """server.client.RemotePicture."""
        return self.remote.picture(
            item.prompt, self.grid(item), self._settings(item), self.decoder, item.seed
        )


class RemoteEditJob(EditJob):
    """An edit on a server."""

    def __init__(self, remote, settings: EditSettings, decoder: DecoderSettings, grid=None):
        super().__init__(None, settings, decoder, grid)
        self.remote = remote

    def precheck(self, item: Item) -> None:
        self.remote.check_edit(len(item.extra["images"]), self._settings(item), self.grid)

    def picture(self, item: Item):
        images = self._images(item)
        return self.remote.edit(images, item.prompt, self._settings(item), self.decoder, item.seed, self.grid)


class BatchRunner:
    def __init__(
        self,
        engine,
        job,
        options: BatchOptions,
        *,
        folder: Path,
        manifest: BatchManifest | None,
        events: Events,
        single_output: Path | None = None,
        parallel: int = 1,
    ):
        self.engine, self.job, self.options = engine, job, options
        self.folder, self.manifest, self.events = Path(folder), manifest, events
        self.single_output = single_output
        self.parallel = parallel  # items in flight at once on a server (jobs with `picture`)
        self.failed: list[Item] = []
        self.lock = threading.Lock()  # files, the manifest and the events, when items run in parallel
        self.abandoned = False  # interrupted: pictures that arrive later are not written

    def run(self, items: list[Item], resume: bool = False) -> list[Item]:
        """Generate every item; returns the ones that failed. Every output name is reserved before any
        work, so the phased path (all codes, then all decodes) names items exactly as the other does."""
        previous = self.manifest.load() if (self.manifest and resume) else {}
        self.names = Reservations(self.folder, self.options.force, reclaim=resume)
        try:
            todo = [job for item in items if (job := self._plan(item, previous.get(item.id, {})))]
            if hasattr(self.job, "picture"):
                self._remote([(item, target) for item, target, _ in todo])
            elif self.engine.phased:
                pending = [(it, target if ready else self._codes(it, target)) for it, target, ready in todo]
                self.engine.release_backbone()
                for item, target in pending:
                    if target is not None:
                        self._decode(item, target)
            else:
                for item, target, ready in todo:
                    if ready or self._codes(item, target) is not None:
                        self._decode(item, target)
        finally:
            self.names.release_all()
        return self.failed

    def _remote(self, todo: list) -> None:
        """Whole pictures from a server, `parallel` at a time; a worker the server keeps answering busy
        hands its item back and retires, so the batch settles at what the server takes. A run failure in
        a worker (the server gone) stops the batch: no new item starts, the ones in flight end (written, or failed) before the
        run returns and releases its names. Ctrl-C returns at once: the workers are daemons, and what they
        bring back after that is dropped, not written. The finished items stay in the manifest."""
        if self.parallel <= 1:
            for item, target in todo:
                self._picture(item, target)
            return
        import queue

        work: queue.SimpleQueue = queue.SimpleQueue()
        for entry in todo:
            work.put(entry)
        stop, failures, workers = threading.Event(), [], [min(self.parallel, len(todo))]

        def worker() -> None:
            while not stop.is_set():
                try:
                    item, target = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    self._picture(item, target)
                except ServerBusy as exc:  # more in flight than the server takes: this worker retires
                    with self.lock:
                        retire = workers[0] > 1
                        workers[0] -= retire
                    if retire:
                        work.put((item, target))
                        return
                    failures.append(exc)  # busy with one request at a time: a run failure
                    stop.set()
                except BaseException as exc:  # a run failure: handed to the main thread
                    failures.append(exc)
                    stop.set()

        threads = [threading.Thread(target=worker, name=f"llada-batch-{i}", daemon=True) for i in range(min(self.parallel, len(todo)))]  # fmt: skip
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.1)  # in slices, so Ctrl-C reaches this thread
        except BaseException:
            stop.set()
            with self.lock:  # a write under way finishes; none starts after this
                self.abandoned = True
            raise
        if failures:
            raise failures[0]

    def _picture(self, item: Item, target: Path) -> None:
        """One picture from a server: its codes file when the server sent codes, then the image, its
        manifest line and its event, all under the lock (so an interrupted run writes none of it later)."""
        with self.lock:
            self.events.started(item, "server")
        try:
            picture = self.job.picture(item)
        except RUN_FAILURES:
            raise
        except (LladaError, ValueError) as exc:
            return self._failed_remote(item, getattr(exc, "message", str(exc)), target)
        with self.lock:
            if self.abandoned:
                return None
            try:
                record, cpath = picture.record, None
                if picture.codes is not None:  # as a local run saves them, beside the image
                    cpath = codes_path(target)
                    saved = record.to_json() | {"codes": picture.codes}
                    atomic_write_text(cpath, json.dumps(saved, ensure_ascii=False) + "\n")
                    record = record.with_(codes_file=cpath.name)
                save_image(picture.image, target, record.to_json() if self.options.metadata else None)
                self.names.written(target)
            except OSError as exc:
                self._fail(item, f"cannot write its files: {exc.strerror or exc}", target)
                return None
            except (LladaError, ValueError) as exc:
                self._fail(item, getattr(exc, "message", str(exc)), target)
                return None
            files = {"output": target} | ({"codes_file": cpath} if cpath else {})
            if self.manifest:
                rel = self.manifest.relative
                self.manifest.append(item_record(item, "done", **{k: rel(v) for k, v in files.items()}))
            line = record.to_json() | {"index": item.index, "id": item.id, "path": str(target)}
            line |= {
                "codes_file": str(cpath) if cpath else None,
                "server": {"seconds": round(picture.seconds, 4)},
            }
            self.events.done(item, line)
        return None

    def _failed_remote(self, item: Item, message: str, target: Path) -> None:
        with self.lock:
            if not self.abandoned:
                self._fail(item, message, target)

    def _plan(self, item: Item, before: dict) -> tuple[Item, Path, bool] | None:
        """(item, its output path, whether its codes are already saved), or None: done before, or failed."""
        locate = self.manifest.locate if self.manifest else (lambda record, key: None)
        done, codes = locate(before, "output"), locate(before, "codes_file")
        if before.get("state") == "done" and done is not None and done.is_file() and done.stat().st_size:
            self.events.skipped(item, "done in an earlier run")
            return None
        if before.get("state") in ("codes", "done") and done is not None:  # this batch's own name, again
            self.names.keep(done)
            ready = before["state"] == "codes" and codes is not None and codes.is_file()
            return item, done, ready
        try:
            if item.error:
                raise UsageError(item.error)
            if (precheck := getattr(self.job, "precheck", None)) is not None:
                precheck(item)  # a command-line prompt that cannot fit: exit 2 before any work
            if self.single_output is not None:
                return item, self.names.single(self.single_output), False  # refused: exit 2, no work done
            return item, reserve_output(item, self.names, self.options.name_pattern), False
        except UsageError as exc:
            if self.single_output is not None or item.line is None and not item.error:
                raise
            self._fail(item, exc.message)
            return None

    def _fail(self, item: Item, message: str, target: Path | None = None) -> None:
        if target is not None:
            self.names.release(target)
        self.failed.append(item)
        if self.manifest:
            self.manifest.append(item_record(item, "failed", error=message))
        self.events.failed(item, message)

    def _codes(self, item: Item, target: Path) -> Path | None:
        """Backbone stage: codes for the item, saved next to where its image will go. None if it failed."""
        from .runtime.device import memory_guard

        self.events.started(item, "codes")
        try:
            with memory_guard("backbone"):
                result, record = self.job.codes(
                    item, lambda e: self.events.stage(item, "backbone", e.block_start, 0)
                )
            if result.thinking is not None:
                self.events.thinking(item, result.thinking)
            saved = record.to_json() | {
                "codes": result.codes,
                "backbone": {
                    "seconds": round(result.seconds, 4),
                    "forward_passes": result.stats.forward_passes,
                    "prompt_tokens": result.prompt_tokens,
                },
            }
            cpath = codes_path(target)
            atomic_write_text(cpath, json.dumps(saved, ensure_ascii=False) + "\n")
        except RUN_FAILURES:
            raise
        except OSError as exc:  # a full disk, a vanished folder: this item fails, the batch goes on
            self._fail(item, f"cannot write its files: {exc.strerror or exc}", target)
            return None
        except (LladaError, ValueError) as exc:
            self._fail(item, getattr(exc, "message", str(exc)), target)
            return None
        if self.manifest:
            rel = self.manifest.relative
            self.manifest.append(item_record(item, "codes", output=rel(target), codes_file=rel(cpath)))
        return target

    def _decode(self, item: Item, target: Path) -> None:
        self.events.started(item, "decode")
        cpath = codes_path(target)
        try:
            saved = read_codes_file(cpath)
            record = GenerationRecord.from_json(saved, f"{cpath}:").with_(codes_file=cpath.name)
            image, timings = self.engine.decode(
                saved["codes"],
                record.grid,
                item.seed,
                self.options.decoder,
                on_step=lambda i, n: self.events.stage(item, "decoder", i, n),
            )
            save_image(image, target, record.to_json() if self.options.metadata else None)
            self.names.written(target)
        except RUN_FAILURES:
            raise
        except OSError as exc:
            self._fail(item, f"cannot write its files: {exc.strerror or exc}", target)
            return
        except (LladaError, ValueError, KeyError) as exc:
            self._fail(item, getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}", target)
            return
        if self.manifest:
            rel = self.manifest.relative
            self.manifest.append(item_record(item, "done", output=rel(target), codes_file=rel(cpath)))
        self.events.done(item, done_record(item, record, target, cpath, saved.get("backbone"), timings))


def done_record(item: Item, record: GenerationRecord, target: Path, cpath: Path, backbone, timings) -> dict:
    """The JSON line of a finished image: its record, where it went, and how long each stage took."""
    return record.to_json() | {
        "index": item.index,
        "id": item.id,
        "path": str(target),
        "codes_file": str(cpath),
        "backbone": backbone,
        "decoder": {
            "seconds": round(timings.decoder, 4),
            "evaluations": timings.decoder_evaluations,
            "sigvq_seconds": round(timings.sigvq, 4),
            "vae_seconds": round(timings.vae, 4),
        },
    }
