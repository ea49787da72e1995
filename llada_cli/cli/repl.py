"""The interactive chat REPL: multi-turn history, slash commands, multi-line input, readline history."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import Interrupted, LladaError
from ..limits import seed_or_drawn
from .runtime import output

HELP = """commands:
  /help                 this list
  /set KEY VALUE        change a setting (/show lists them): steps temperature top_p max_tokens seed system ...
  /show                 the current settings
  /image PATH...        attach images to the next question (typed image paths are attached too)
  /edit INSTRUCTION     edit the last image of the conversation; the result is saved and attached
  /clear                forget the conversation
  /save [--force] FILE  write the transcript as JSON
  /exit                 leave (Ctrl-D works too)
multi-line input: end a line with \\ to continue it, or wrap lines in \"\"\" ... \"\"\""""


def settable() -> dict[str, type]:
    """What /set can change: every number of the sampler's settings, and the chat's own."""
    from dataclasses import fields

    from ..sampling.settings import SamplerSettings

    kinds = {"int": int, "float": float}
    sampler = {f.name: kinds[f.type] for f in fields(SamplerSettings) if f.type in kinds}
    return sampler | {"max_tokens": int, "seed": int, "system": str}


class Repl:
    def __init__(
        self,
        session,
        json_out: bool = False,
        read_line: Callable[[str], str] | None = None,
        staged: list | None = None,
    ):
        self.session, self.json_out = session, json_out
        self.read_line = read_line or _terminal_reader()
        self.staged = list(staged or [])  # images waiting for the next question
        self.last_image = self.staged[-1] if self.staged else None  # what /edit works on

    def loop(self) -> None:
        """Read, answer, repeat. Ctrl-C cancels the line being typed or the answer being written (the
        conversation stays as it was); Ctrl-D, /exit or SIGTERM leave. No error ends the session."""
        out = output()
        out.info("llada chat: type a question, /help for commands, /exit to leave")
        while True:
            try:
                text = self._read_message()
                if text is None:
                    continue
                if text.startswith("/") and not Path(text.split()[0]).exists():  # "/tmp/x.png" is a path
                    if not self.command(text):
                        return
                    continue
                self.ask(text)
            except EOFError:
                out.info("")
                return
            except Interrupted as exc:
                if exc.signal != "SIGINT":
                    raise
                out.info("^C (cancelled; Ctrl-D or /exit leaves)")
            except LladaError as exc:
                out.error(exc.message, exc.hint)
            except Exception as exc:  # a bug must not take the conversation with it
                out.error(
                    f"internal error: {type(exc).__name__}: {exc}",
                    "the conversation goes on; --debug shows more",
                )
                if out.debug:
                    import traceback

                    traceback.print_exc()

    def _read_message(self) -> str | None:
        line = self.read_line(">>> ")
        if line.strip() == '"""':
            lines = []
            while (nxt := self.read_line("... ")).strip() != '"""':
                lines.append(nxt)
            return "\n".join(lines)
        while line.endswith("\\"):
            line = line[:-1] + "\n" + self.read_line("... ")
        return line if line.strip() else None

    def ask(self, text: str) -> None:
        from ..io.images import split_image_paths
        from .answers import answer_once

        text, paths = split_image_paths(text)
        if paths and not self._stage(paths):
            return
        if not text.strip():
            output().info("image(s) attached; now ask a question about them")
            return
        images, self.staged = self.staged, []
        try:
            answer_once(self.session, text, self.json_out, images)
        except BaseException:
            self.staged = images  # a failed or cancelled turn keeps its images for the next try
            raise

    def _stage(self, paths: list[str]) -> bool:
        from ..io.images import load_image

        try:
            loaded = [load_image(p) for p in paths]
        except LladaError as exc:
            output().error(exc.message, exc.hint)
            return False
        self.staged += loaded
        self.last_image = loaded[-1]
        for p in paths:
            output().info(f"attached {p}")
        return True

    def command(self, text: str) -> bool:
        """Run a slash command; False means leave."""
        out = output()
        try:
            words = shlex.split(text)
        except ValueError as exc:
            out.error(f"cannot parse {text!r}: {exc}")
            return True
        name, args = words[0], words[1:]
        if name in ("/exit", "/quit", "/bye"):
            return False
        if name == "/help":
            out.info(HELP)
        elif name == "/clear":
            self.session.clear()
            self.staged = []
            out.info("conversation cleared")
        elif name == "/show":
            out.info(json.dumps(self.session.transcript()["settings"], indent=2))
        elif name == "/set":
            self._set(args)
        elif name == "/save":
            self._save(args)
        elif name == "/edit":
            self._edit(" ".join(args))
        elif name == "/image":
            if not args:
                out.error("usage: /image PATH [PATH...]")
            else:
                self._stage(args)
        else:
            out.error(f"unknown command {name}", "type /help")
        return True

    def _edit(self, instruction: str) -> None:
        """Edit the last image, save the result beside the working folder, and attach it."""

        from ..io.files import display_path
        from ..io.imagefiles import save_image
        from ..io.images import load_image
        from ..io.outputs import Reservations
        from ..settings import DecoderSettings, EditSettings

        out = output()
        if not instruction.strip():
            out.error("usage: /edit INSTRUCTION")
            return
        if self.last_image is None:
            out.error("no image in this conversation yet", "attach one with /image PATH")
            return
        seed = self.session.settings.seed
        seed = seed_or_drawn(seed)
        picture, record, source = self.session.edit_image(
            self.last_image, instruction, EditSettings(), DecoderSettings(), seed
        )
        names = Reservations(Path("."))
        path = names.numbered("llada-edit-{n}.png")  # the first free of llada-edit-1.png, -2, ..., reserved
        try:
            save_image(picture, path, record)
        finally:
            names.release_all()
        self.session.note_edit(instruction, source, str(path), seed)
        out.data(display_path(path))
        result = load_image(str(path))
        self.staged.append(result)
        self.last_image = result
        out.info(f"edited image saved to {path} and attached to your next question")

    def _set(self, args: list[str]) -> None:
        out = output()
        keys = settable()
        if len(args) < 2 or args[0] not in keys:
            out.error("usage: /set KEY VALUE", f"keys: {', '.join(keys)}")
            return
        key, raw = args[0], " ".join(args[1:])
        try:
            value = keys[key](raw)
        except ValueError:
            out.error(f"/set {key} {raw!r}: not {'an integer' if keys[key] is int else 'a number'}")
            return
        try:
            self.session.set(key, value)  # the same rule as the flag: nan, 0 for top_p, ... are refused
        except LladaError as exc:
            out.error(f"/set {key}: {exc.message}")
            return
        out.info(f"{key} = {value}")

    def _save(self, args: list[str]) -> None:
        from .answers import save_transcript

        force = "--force" in args
        paths = [a for a in args if a != "--force"]
        if len(paths) != 1:
            output().error("usage: /save [--force] FILE")
            return
        try:
            save_transcript(self.session, Path(paths[0]).expanduser(), force)
        except LladaError as exc:
            output().error(exc.message, exc.hint)
            return
        output().info(f"saved {paths[0]}")


def _save_history(readline, path: Path) -> None:
    """readline writes its history 0600; llada's files follow the umask like every other file."""
    from ..io.files import file_mode

    try:
        readline.write_history_file(path)
        path.chmod(file_mode())
    except OSError:
        pass


def _terminal_reader() -> Callable[[str], str]:
    """input() with readline editing and a persistent history; the prompt goes to stderr if stdout is piped."""
    try:
        import readline

        from ..paths import llada_home

        history = llada_home() / "chat_history"
        history.parent.mkdir(parents=True, exist_ok=True)
        if history.exists():
            readline.read_history_file(history)
        import atexit

        atexit.register(_save_history, readline, history)
    except (ImportError, OSError):
        pass

    def read(prompt: str) -> str:
        if sys.stdout.isatty():
            return input(prompt)
        sys.stderr.write(prompt)
        sys.stderr.flush()
        return input()

    return read
