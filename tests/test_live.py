"""The terminal views of text diffusion: block streaming in a pipe, the live view on a terminal."""

from __future__ import annotations

import io

from llada_cli.cli.live import MASK_GLYPH, LiveView
from llada_cli.cli.output import write_stdout
from llada_cli.pipelines.textstream import BlockStreamer, TokenCanvas
from llada_cli.sampling.block_diffusion import StepEvent

MASK, STOP = 0, 9


def decode(ids):
    return "".join(chr(ord("a") + i) for i in ids)


def events():
    # prompt of 3 tokens; block 0 = positions 0..3 (prompt tail + 1 slot), then two 4-token blocks
    yield StepEvent(0, 0, [3], [5, 5, 5, 1], 3, 12)
    yield StepEvent(4, 0, [4, 6], [2, MASK, 3, MASK], 3, 12)
    yield StepEvent(4, 1, [5, 7], [2, 4, 3, 5], 3, 12)
    yield StepEvent(8, 0, [8, 9], [6, STOP, MASK, MASK], 3, 12)


def test_block_streamer_writes_each_finished_block_then_the_rest(capsys):
    canvas = TokenCanvas(MASK, (STOP,))
    streamer = BlockStreamer(canvas, decode, write_stdout)
    chunks = []
    for e in events():
        streamer.on_step(e)
        chunks.append(capsys.readouterr().out)
    assert chunks == ["", "b", "", "cedf"]  # a block is written once the sampler has moved past it
    streamer.finish("bcedfg")
    assert capsys.readouterr().out == "g\n"


def test_live_view_shows_masks_in_the_current_block():
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=80)
    canvas = TokenCanvas(MASK, (STOP,))
    with LiveView(console, canvas, decode) as view:
        seen = []
        for e in list(events())[:2]:
            view.on_step(e)
            seen.append(view.current.plain)
    assert seen == ["b", "bc" + MASK_GLYPH + "d" + MASK_GLYPH]


def test_a_run_with_another_prompt_starts_the_canvas_afresh():
    canvas = TokenCanvas(MASK, (STOP,))
    canvas.update(StepEvent(0, 0, [3], [5, 5, 5, 1], 3, 12))
    assert canvas.decided() == [1]
    canvas.update(StepEvent(8, 0, [9], [7, 2, MASK, MASK], 9, 12))  # the next text phase, after an image
    assert canvas.prompt_len == 9 and canvas.decided() == [2]
