"""One answer rendered (live on a terminal, streamed in a pipe, or JSON), and a conversation saved: for
`llada chat` and its REPL alike."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from .runtime import output


def answer_once(session, prompt: str, json_out: bool, images: list = ()) -> None:
    """Ask one question; stream the answer (live on a terminal, by block in a pipe) or print JSON."""
    from ..pipelines.chat import stop_ids
    from ..pipelines.textstream import BlockStreamer, TokenCanvas
    from .live import LiveView
    from .output import write_stdout

    out = output()
    if getattr(session, "remote", False):
        return _remote_answer(session, prompt, json_out, images)
    tokenizer = session.engine.tokenizer
    turn = session.user_turn(prompt, images)
    for encoded in turn[1]:
        out.info(encoded.describe())
    canvas = TokenCanvas(tokenizer.ids["mask"], stop_ids(tokenizer))
    if json_out:
        result = session.ask(prompt, turn=turn)
        out.json(result.record())
        return
    if out.interactive:
        with LiveView(out.console, canvas, tokenizer.decode) as view:
            result = session.ask(prompt, on_step=view.on_step, turn=turn)
        out.data(result.answer)
    else:
        streamer = BlockStreamer(canvas, tokenizer.decode, write_stdout)
        result = session.ask(prompt, on_step=streamer.on_step, turn=turn)
        streamer.finish(result.answer)
    s = result.stats
    out.detail(
        f"{result.generated_tokens} tokens, {s.forward_passes} forward passes, {s.seconds:.2f} s, "
        f"seed {result.seed}"
    )


def _remote_answer(session, prompt: str, json_out: bool, images: list) -> None:
    """An answer from a server: its text streamed to stdout as it comes (JSON: the record at the end)."""
    from .output import write_stdout

    out = output()
    if json_out:
        out.json(session.ask(prompt, images).record())
        return
    result = session.ask(prompt, images, on_text=write_stdout)
    write_stdout("\n")
    out.detail(
        f"{result.generated_tokens} tokens from {session.engine.url}, {result.seconds:.2f} s, seed {result.seed}"
    )


def save_transcript(session, path: Path, force: bool) -> None:
    """Write the transcript as JSON, atomically, never over an existing file without force."""
    import json

    from ..io.files import atomic_write_text

    if path.exists() and not force:
        raise UsageError(f"{path} exists", "choose another name, or /save --force FILE")
    atomic_write_text(path, json.dumps(session.transcript(), ensure_ascii=False, indent=2) + "\n")
