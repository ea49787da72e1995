"""The interactive chat REPL: multi-turn history, slash commands, multi-line input, readline history."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import LladaError
from .runtime import output

HELP = """commands:
  /help                 this list
  /set KEY VALUE        change a setting: max_tokens steps block_length threshold temperature top_k top_p seed system
  /show                 the current settings
  /image PATH...        attach images to the next question (typed image paths are attached too)
  /clear                forget the conversation
  /save [--force] FILE  write the transcript as JSON
  /exit                 leave (Ctrl-D works too)
multi-line input: end a line with \\ to continue it, or wrap lines in \"\"\" ... \"\"\""""

SETTABLE = {
    "max_tokens": int,
    "steps": int,
    "block_length": int,
    "threshold": float,
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "seed": int,
    "system": str,
}


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

    def loop(self) -> None:
        out = output()
        out.info("llada chat: type a question, /help for commands, /exit to leave")
        while True:
            try:
                text = self._read_message()
            except EOFError:
                out.info("")
                return
            if text is None:
                continue
            if text.startswith("/") and not Path(text.split()[0]).exists():  # "/tmp/x.png" is not a command
                if not self.command(text):
                    return
                continue
            self.ask(text)

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
        from ..imageio import split_image_paths
        from .chat import answer_once

        text, paths = split_image_paths(text)
        if paths and not self._stage(paths):
            return
        if not text.strip():
            output().info("image(s) attached; now ask a question about them")
            return
        images, self.staged = self.staged, []
        try:
            answer_once(self.session, text, self.json_out, images)
        except LladaError as exc:  # a bad turn does not end the session
            output().error(exc.message, exc.hint)

    def _stage(self, paths: list[str]) -> bool:
        from ..imageio import load_image

        try:
            loaded = [load_image(p) for p in paths]
        except LladaError as exc:
            output().error(exc.message, exc.hint)
            return False
        self.staged += loaded
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
            out.info(json.dumps(dataclasses.asdict(self.session.settings), indent=2))
        elif name == "/set":
            self._set(args)
        elif name == "/save":
            self._save(args)
        elif name == "/image":
            if not args:
                out.error("usage: /image PATH [PATH...]")
            else:
                self._stage(args)
        else:
            out.error(f"unknown command {name}", "type /help")
        return True

    def _set(self, args: list[str]) -> None:
        out = output()
        if len(args) < 2 or args[0] not in SETTABLE:
            out.error("usage: /set KEY VALUE", f"keys: {', '.join(SETTABLE)}")
            return
        key, raw = args[0], " ".join(args[1:])
        try:
            value = SETTABLE[key](raw)
            candidate = dataclasses.replace(self.session.settings, **{key: value})
            candidate.check()
        except (ValueError, LladaError) as exc:
            out.error(f"bad value for {key}: {getattr(exc, 'message', exc)}")
            return
        self.session.settings = candidate
        out.info(f"{key} = {value}")

    def _save(self, args: list[str]) -> None:
        from .chat import save_transcript

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

        atexit.register(readline.write_history_file, history)
    except (ImportError, OSError):
        pass

    def read(prompt: str) -> str:
        if sys.stdout.isatty():
            return input(prompt)
        sys.stderr.write(prompt)
        sys.stderr.flush()
        return input()

    return read
