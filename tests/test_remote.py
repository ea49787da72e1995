"""`--server` against SGLang-Omni, as its published code answers (a fake over httpx.MockTransport: no
network, no model): each answer shape it has had, the request fields its cookbook uses, the settings it
has no field for refused before sending, its errors, a busy server retried, a lost one stopping a batch
once. Then the llada app in-process (its test client) for what a scripted model drives: an interleaved
document over `--server`, the time limit, the queue."""

from __future__ import annotations

import base64
import io
import json
import re
import time

import httpx
import pytest
from PIL import Image

from llada_cli.cli.app import run
from llada_cli.errors import ServerAccessRefused, ServerFailed, ServerRefused, ServerUnavailable
from llada_cli.io.images import open_image
from llada_cli.server import client as client_module
from llada_cli.server.client import Remote
from llada_cli.settings import (
    ChatSettings,
    DecoderSettings,
    EditSettings,
    ImageSettings,
    InterleaveSettings,
)

PX = 32  # pixels per code at resolution_multiplier 2


def png_b64(w: int, h: int, colour=(200, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class FakeSglang:
    """SGLang-Omni's chat completions API. `shape`: "v0" (t2i variant: an image_url content part), "v1"
    (typed: message.image, image_w/image_h, interleave as `segments`), "v2" (message.images[], width/height,
    interleave as text/image_ref content). `script` holds answers (or exceptions) to give first."""

    def __init__(self, shape: str = "v2"):
        self.shape, self.bodies, self.script = shape, [], []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            card = {"id": "inclusionAI/LLaDA2.0-Uni", "object": "model", "owned_by": "sglang-omni"}
            return httpx.Response(200, json={"object": "list", "data": [card]})
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.script:
            answer = self.script.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        if body.get("stream"):
            return self._stream()
        gen = body.get("image_generation")
        if gen is None:
            return self._reply({"role": "assistant", "content": "a cat on a mat"})
        if gen.get("mode") == "interleaved":
            return self._document()
        if self.shape == "v1":  # the typed model reads image_w/image_h, and ignores width/height
            w, h = gen.get("image_w", 1024), gen.get("image_h", 1024)
        else:
            w, h = gen.get("width", 1024), gen.get("height", 1024)
        if any(isinstance(m["content"], list) for m in body["messages"]):
            w = h = 64  # an edit keeps the source's size
        data = png_b64(w, h)
        message = {"role": "assistant"}
        if self.shape == "v0":
            message["content"] = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}]
        elif self.shape == "v1":
            message["image"] = {"data": data, "format": "png"}
        else:
            message["images"] = [{"id": "image-req-0", "data": data, "format": "png", "width": w, "height": h}]
        return self._reply(message)

    def _document(self) -> httpx.Response:
        a, b = png_b64(64, 64, (10, 10, 10)), png_b64(96, 64, (250, 250, 250))
        if self.shape == "v1":
            segments = [
                {"kind": "text", "data": "Boil water. "},
                {"kind": "image", "data": {"kind": "image", "url": f"data:image/png;base64,{a}"}},
                {"kind": "text", "data": "Pour."},
                {"kind": "image", "data": {"kind": "image", "url": f"data:image/png;base64,{b}"}},
            ]
            return self._reply({"role": "assistant", "content": "Boil water. Pour.", "segments": segments})
        content = [
            {"type": "text", "text": "Boil water. "},
            {"type": "image_ref", "image_id": "image-r-0"},
            {"type": "text", "text": "Pour."},
            {"type": "image_ref", "image_id": "image-r-1"},
        ]
        images = [
            {"id": "image-r-0", "data": a, "format": "png", "width": 64, "height": 64},
            {"id": "image-r-1", "data": b, "format": "png", "width": 96, "height": 64},
        ]
        return self._reply({"role": "assistant", "content": content, "images": images}, "max_frames")

    @staticmethod
    def _reply(message: dict, finish: str = "stop") -> httpx.Response:
        choice = {"index": 0, "message": message, "finish_reason": finish}
        return httpx.Response(200, json={"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice], "usage": None})  # fmt: skip

    @classmethod
    def picture_reply(cls) -> httpx.Response:
        data = png_b64(64, 64)
        return cls._reply({"role": "assistant", "images": [{"id": "i", "data": data, "format": "png"}]})

    @staticmethod
    def _stream() -> httpx.Response:
        chunks = [{"choices": [{"delta": {"role": "assistant"}}]}]
        chunks += [{"choices": [{"delta": {"content": t}}]} for t in ("a cat ", "on ", "a mat")]
        chunks += [{"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 7, "completion_tokens": 5}}]  # fmt: skip
        text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})


def remote_for(fake) -> Remote:
    return Remote("http://sglang.test:30000/v1", transport=httpx.MockTransport(fake))


@pytest.fixture
def patched(monkeypatch):
    """Every `--server` the CLI opens goes to this fake."""
    fake = FakeSglang()
    monkeypatch.setattr(
        client_module, "Remote", lambda url, key=None, timeout=600.0: Remote(url, key, timeout, httpx.MockTransport(fake))  # fmt: skip
    )
    return fake


def source(colour=(0, 90, 200), size=(64, 64), name="src.png"):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return open_image(buffer.getvalue(), name)


@pytest.mark.parametrize("shape", ["v0", "v1", "v2"])
def test_every_sglang_picture_shape_is_read(shape):
    fake = FakeSglang(shape)
    picture = remote_for(fake).picture("a fox", (2, 3), ImageSettings(), DecoderSettings(), 42)
    assert picture.image.size == (96, 64) and picture.image.getpixel((0, 0)) == (200, 30, 30)
    record = picture.record
    assert (record.width, record.height, tuple(record.grid), record.seed) == (96, 64, (2, 3), 42)
    assert record.settings["engine"] == "sglang-omni" and record.settings["server"] == "http://sglang.test:30000"
    assert record.model == "inclusionAI/LLaDA2.0-Uni"


def test_the_request_has_the_cookbook_fields_and_nothing_sglang_lacks():
    fake = FakeSglang()
    remote_for(fake).picture("a fox", (2, 2), ImageSettings(cfg=4.0), DecoderSettings(), 42)
    body = fake.bodies[0]
    assert body["modalities"] == ["image"] and body["messages"] == [{"role": "user", "content": "a fox"}]
    gen = body["image_generation"]
    # The cookbook's text-to-image request, field for field.
    assert {k: gen[k] for k in ("mode", "decode_mode", "decoder_steps", "dllm_steps", "cfg_scale", "seed")} == {
        "mode": "normal", "decode_mode": "decoder-turbo", "decoder_steps": 8, "dllm_steps": 8, "cfg_scale": 4.0, "seed": 42,
    }  # fmt: skip
    assert (gen["width"], gen["height"], gen["image_w"], gen["image_h"]) == (64, 64, 64, 64)
    assert gen["cfg_rescale"] == 0.0  # the official rule has no rescale; SGLang-Omni's default is 0.7
    assert "resolution_multiplier" not in gen  # its default, left unsaid
    assert not {"sprint", "threshold", "block_length", "steps"} & set(body)
    assert body["seed"] == 42  # its backbone is seeded from the top-level seed
    remote_for(fake).picture("a fox", (2, 2), ImageSettings(thinking=True), DecoderSettings(), 1)
    assert fake.bodies[-1]["modalities"] == ["text", "image"]  # else its thinking text is not returned
    remote_for(fake).interleave("tea", InterleaveSettings(), DecoderSettings(), 5, [])
    doc = fake.bodies[-1]
    assert doc["seed"] == 5 and doc["modalities"] == ["text", "image"] and "dllm_steps" not in doc["image_generation"]


def test_a_router_listing_several_models_and_streams_that_break_off():
    fake = FakeSglang()

    def router(request):
        if request.url.path == "/v1/models":
            cards = [{"id": "qwen3-omni", "owned_by": "sglang-omni"}, {"id": "LLaDA2.0-Uni", "owned_by": "sglang-omni"}]  # fmt: skip
            return httpx.Response(200, json={"object": "list", "data": cards})
        return fake(request)

    r = Remote("http://router.test", transport=httpx.MockTransport(router))
    assert r.label == "LLaDA2.0-Uni"
    assert r.serving("qwen3-omni").label == "qwen3-omni"
    with pytest.raises(ServerRefused, match="serves qwen3-omni, LLaDA2.0-Uni, not other"):
        r.serving("other")
    assert r.serving(None).label == "LLaDA2.0-Uni"  # back to the LLaDA card
    for text, kind, words in [
        ('data: {"choices": [{"delta": {"content": "half"}}]}\n\n', ServerUnavailable, "without [DONE]"),
        ("data: {not json}\n\n", ServerFailed, "not a JSON object"),
        ('data: {"error": "boom"}\n\n', ServerFailed, "boom"),
    ]:
        fake.script = [httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})]
        with pytest.raises(kind, match=re.escape(words)):
            r.answer([("user", "hi", [])], ChatSettings(), on_text=lambda t: None)


def test_an_answer_streams_and_keeps_the_turns():
    fake = FakeSglang()
    seen = []
    turns = [("user", "what is on the mat?", [source()])]
    answer = remote_for(fake).answer(turns, ChatSettings(seed=3), on_text=seen.append)
    assert answer.answer == "a cat on a mat" == "".join(seen) and len(seen) == 3
    assert (answer.prompt_tokens, answer.generated_tokens, answer.finish_reason) == (7, 5, "stop")
    body = fake.bodies[0]
    assert body["stream"] is True and body["seed"] == 3 and body["modalities"] == ["text"]
    parts = body["messages"][-1]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1] == {"type": "text", "text": "what is on the mat?"}
    assert body["messages"][0]["role"] == "system"


@pytest.mark.parametrize("shape", ["v1", "v2"])
def test_both_interleaved_shapes_are_read_in_order(shape):
    doc = remote_for(FakeSglang(shape)).interleave("make tea", InterleaveSettings(), DecoderSettings(), 1, [])
    kinds = [k for k, _ in doc.parts]
    assert kinds == ["text", "image", "text", "image"]
    assert doc.parts[0][1] == "Boil water. " and doc.parts[1][1].image.size == (64, 64)
    assert doc.parts[3][1].image.size == (96, 64) and doc.parts[3][1].record.frame == 2


def test_settings_sglang_has_no_field_for_are_refused_before_sending():
    from llada_cli.sampling.settings import SamplerSettings

    fake = FakeSglang()
    r = remote_for(fake)
    d = DecoderSettings()
    cases = [
        (lambda: r.edit([source(), source(name="ref.png")], "mix", EditSettings(), d, 1), "one image"),
        (lambda: r.edit([source()], "x", EditSettings(), d, 1, grid=(2, 2)), "--size"),
        (lambda: r.edit([source()], "x", EditSettings(budget=768), d, 1), "--budget"),
        (lambda: r.edit([source()], "x", EditSettings(fit=True), d, 1), "--fit"),
        (lambda: r.picture("x", (2, 2), ImageSettings(sampler=SamplerSettings(steps=8, block_length=16)), d, 1), "--block-length"),  # fmt: skip
        (lambda: r.picture("x", (2, 2), ImageSettings(thinking=True, thinking_length=64), d, 1), "--thinking-length"),  # fmt: skip
        (lambda: r.answer([("user", "hi", [])], ChatSettings(sampler=SamplerSettings(steps=4))), "--steps"),
        (lambda: r.interleave("x", InterleaveSettings(), d, 1, [source()]), "text only"),
        (lambda: r.interleave("x", InterleaveSettings(image_sampler=SamplerSettings(steps=16)), d, 1, []), "--image-steps"),  # fmt: skip
        (lambda: r.interleave("x", InterleaveSettings(system="be brief"), d, 1, []), "--system"),
        (lambda: r.answer([("user", "hi", [])], ChatSettings(system="be brief")), "--system"),
        (lambda: r.picture("x", (2, 2), ImageSettings(cfg=0.5), d, 1), "--cfg below 1"),
        (lambda: r.picture("x", (4, 4), ImageSettings(), DecoderSettings(resolution_multiplier=1), 1), "--resolution-multiplier"),  # fmt: skip
    ]
    for call, words in cases:
        with pytest.raises(ServerRefused) as refused:
            call()
        assert words in refused.value.message and refused.value.exit_code == 2
    assert fake.bodies == []  # nothing was sent


def test_server_errors_become_one_line_each(monkeypatch):
    monkeypatch.setattr(client_module.time, "sleep", lambda s: None)
    fake = FakeSglang()
    r = remote_for(fake)
    ask = lambda: r.picture("x", (2, 2), ImageSettings(), DecoderSettings(), 1)  # noqa: E731
    pydantic = {"detail": [{"loc": ["body", "image_generation", "image_w"], "msg": "must be a multiple of 32"}]}
    for answer, kind, words in [
        (httpx.Response(400, json={"detail": "Image editing requires a non-empty instruction"}), ServerRefused, "non-empty instruction"),  # fmt: skip
        (httpx.Response(422, json=pydantic), ServerRefused, "image_generation.image_w: must be a multiple of 32"),
        (httpx.Response(401, json={"detail": "no"}), ServerAccessRefused, "(401)"),
        (httpx.Response(500, text="boom"), ServerFailed, "(500): boom"),
        (httpx.Response(200, text="<html>"), ServerFailed, "not a JSON object"),
        (httpx.Response(200, json=[1, 2]), ServerFailed, "not a JSON object"),
        (httpx.Response(200, json={"choices": []}), ServerFailed, "no choices[0].message"),
        (httpx.Response(200, json={"choices": [{"message": None}]}), ServerFailed, "no choices[0].message"),
        (FakeSglang._reply({"role": "assistant", "images": [{"data": 123}]}), ServerFailed, "cannot read"),
        (httpx.Response(502, text="bad gateway"), ServerUnavailable, "(502: bad gateway)"),
        (httpx.Response(404, json={"error": {"message": "no such model", "param": "model"}}), ServerAccessRefused, "no such model"),  # fmt: skip
        (FakeSglang._reply({"role": "assistant", "content": "no picture"}), ServerFailed, "without an image"),
        (FakeSglang._reply({"role": "assistant", "images": [{"data": "bm90IGEgcG5n"}]}), ServerFailed, "cannot read"),
        (FakeSglang._reply({"role": "assistant", "images": [{"data": png_b64(32, 32)}]}), ServerFailed, "drew 32x32, not the 64x64"),  # fmt: skip
        (httpx.ConnectError("[Errno 111] Connection refused"), ServerUnavailable, "cannot reach http://sglang.test:30000: Connection refused"),  # fmt: skip
        (httpx.ReadTimeout("slow"), ServerUnavailable, "did not answer in time"),
    ]:
        fake.script = [answer]
        with pytest.raises(kind) as caught:
            ask()
        assert words in caught.value.message, caught.value.message
    busy = httpx.Response(503, json={"detail": "busy"}, headers={"Retry-After": "1"})
    limited = httpx.Response(429, json={"detail": "slow down"}, headers={"Retry-After": "-1"})
    fake.script, fake.bodies = [busy, limited], []
    assert ask().image.size == (64, 64) and len(fake.bodies) == 3  # retried after Retry-After
    fake.script = [busy] * (client_module.RETRIES + 1)
    with pytest.raises(ServerUnavailable, match="busy"):
        ask()


def test_generate_with_an_sglang_server_writes_what_a_local_run_would(patched, capsys, tmp_path):
    code = run(["generate", "a red fox", "--server", "http://sglang.test:30000", "--size", "64x96", "--seed", "8", "-o", str(tmp_path / "fox.png")])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 0, err
    saved = Image.open(tmp_path / "fox.png")
    record = json.loads(saved.text["llada"])
    assert saved.size == (64, 96) and record["seed"] == 8 and record["settings"]["engine"] == "sglang-omni"
    assert not (tmp_path / "fox.codes.json").exists()  # SGLang-Omni sends no codes
    code = run(["generate", "a fox", "--server", "http://sglang.test:30000", "--sprint", "-o", str(tmp_path / "s.png")])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 2 and "--sprint" in err and len(err.strip().splitlines()) <= 2
    assert len(patched.bodies) == 1 and not (tmp_path / "s.png").exists()


def test_a_lost_server_stops_a_parallel_batch_once_and_resume_finishes_it(patched, capsys, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"picture {i}\n" for i in range(6)))
    out = tmp_path / "out"
    args = ["generate", "--prompts-file", str(prompts), "--server", "http://sglang.test:30000", "--size", "64x64", "--parallel", "2", "--out-dir", str(out)]  # fmt: skip
    lost = httpx.ConnectError("[Errno 111] Connection refused")
    patched.script = [FakeSglang.picture_reply() for _ in range(2)] + [lost] * 20
    code = run(args)
    _, err = capsys.readouterr()
    assert code == 1 and err.count("cannot reach") == 1 and "Traceback" not in err
    done = sorted(out.glob("*.png"))
    assert len(done) == 2
    patched.script = []
    code = run([*args, "--resume"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert len(list(out.glob("*.png"))) == 6
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(e["index"] for e in manifest if e.get("state") == "done") == list(range(6))  # each once


def test_a_key_refused_mid_batch_stops_it_once(patched, capsys, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"picture {i}\n" for i in range(4)))
    refused = httpx.Response(401, json={"detail": "invalid key"})
    patched.script = [FakeSglang.picture_reply(), refused, refused, refused]
    code = run(["generate", "--prompts-file", str(prompts), "--server", "http://sglang.test:30000", "--size", "64x64", "--out-dir", str(tmp_path / "out")])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 2 and err.count("(401)") == 1 and "--api-key" in err
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


# -- the llada app in-process ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted_app(tiny_dir):
    """The llada app over the tiny engine whose backbone writes a two-frame document after any
    interleave prompt; requests through Starlette's test client."""
    from starlette.testclient import TestClient

    from llada_cli.inputs.prompts import encode, interleave_prompt
    from llada_cli.server.app import ServeOptions, create_app

    from .conftest import ScriptedBackbone, engine_for

    engine = engine_for(tiny_dir)
    tok, model = engine.tokenizer, engine.model
    offset = model.cfg.image_token_offset
    script = tok.encode("Boil water. ")
    for h, w, codes in ((1, 2, [3, 4]), (2, 1, [5, 6])):
        script += [tok.ids["image_start"], tok.token_id(f"<|reserved_token_{h}|>"), tok.token_id(f"<|reserved_token_{w}|>"), tok.ids["boi"]]  # fmt: skip
        script += [offset + c for c in codes] + [tok.ids["image_end"]] + tok.encode("Pour. ")
    prompt_len = len(encode(interleave_prompt("make tea", None), tok, offset))
    engine._model = ScriptedBackbone(model, script, tok.ids["eos"], prompt_len)
    with TestClient(create_app(engine, ServeOptions(max_queue=0, timeout=1.5)), base_url="http://127.0.0.1") as http:
        yield http


def test_an_interleaved_document_over_server_is_written_as_locally(scripted_app, monkeypatch, capsys, tmp_path):
    def in_process(url, key=None, timeout=600.0):
        remote = Remote(url, key, timeout)
        remote.http = scripted_app
        return remote

    monkeypatch.setattr(client_module, "Remote", in_process)
    args = ["interleave", "make tea", "--server", "http://testserver", "--steps", "4", "--max-new-tokens", "40", "--seed", "2"]  # fmt: skip
    code = run([*args, "--out-dir", str(tmp_path / "doc")])
    _, err = capsys.readouterr()
    assert code == 0, err
    md = (tmp_path / "doc" / "document.md").read_text()
    assert md.startswith("Boil water. \n\n![frame 1](frame-1.png)\n\nPour. \n\n![frame 2](frame-2.png)")
    assert Image.open(tmp_path / "doc" / "frame-1.png").size == (64, 32)  # grid 1x2
    assert Image.open(tmp_path / "doc" / "frame-2.png").size == (32, 64)
    record = json.loads(Image.open(tmp_path / "doc" / "frame-2.png").text["llada"])
    assert record["frame"] == 2 and record["grid"] == [2, 1] and record["prompt"] == "make tea"


def test_time_limit_and_full_queue(scripted_app, monkeypatch):
    import threading

    from llada_cli.engine import Engine

    release = threading.Event()
    monkeypatch.setattr(Engine, "answer", lambda *a, **k: release.wait(10))  # a job that hangs
    body = {"messages": [{"role": "user", "content": "hi"}]}
    answers = []
    first = threading.Thread(target=lambda: answers.append(scripted_app.post("/v1/chat/completions", json=body)))
    first.start()
    time.sleep(0.3)
    busy = scripted_app.post("/v1/chat/completions", json=body)  # max_queue 0: one running, none waiting
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
    assert busy.json()["error"]["message"].startswith("the server is busy")
    first.join(10)
    release.set()
    timed = answers[0]  # ServeOptions(timeout=1.5)
    assert timed.status_code == 504 and "time limit" in timed.json()["error"]["message"]
    assert timed.json()["error"]["type"]
    assert timed.json()["error"]["type"] == "timeout"


def test_serve_sampler_flags_are_defaults_a_request_overrides():
    """`llada serve --sprint --steps 5`: requests that do not say get them, on every task."""
    from llada_cli.cli.options import SamplerFlags
    from llada_cli.server.protocol import Defaults, parse_chat, parse_images

    flags = SamplerFlags({"steps": 5, "sprint": True, "top_k": 3})
    defaults = Defaults.tuned(flags.settings)
    plain = parse_chat({"messages": [{"role": "user", "content": "hi"}]}, defaults).settings.sampler
    assert (plain.steps, plain.top_k, plain.sprint is not None) == (5, 3, True)
    own = parse_chat({"messages": [{"role": "user", "content": "hi"}], "steps": 9, "top_k": 0}, defaults)
    assert (own.settings.sampler.steps, own.settings.sampler.top_k) == (9, 0)
    picture = parse_images({"prompt": "a fox", "size": "64x64"}, None, defaults).settings.sampler
    assert picture.steps == 5 and picture.sprint is not None
    assert parse_images({"prompt": "a fox", "size": "64x64"}).settings.sampler.steps == 8  # llada's own
    doc = parse_chat({"messages": [{"role": "user", "content": "x"}], "modalities": ["text", "image"], "image_generation": {"mode": "interleaved"}}, defaults)  # fmt: skip
    assert doc.settings.text_sampler.steps == 5 and doc.settings.image_sampler.steps == 5


def test_a_keyless_server_answers_only_loopback_hosts_and_its_own_origins(scripted_app):
    ok = scripted_app.get("/v1/models")
    assert ok.status_code == 200 and ok.json()["data"][0]["owned_by"] == "llada"
    rebound = scripted_app.get("/v1/models", headers={"host": "evil.example:8000"})  # DNS rebinding
    assert rebound.status_code == 403 and "loopback" in rebound.json()["error"]["message"]
    assert scripted_app.get("/v1/models", headers={"host": "[::1]:8000"}).status_code == 200
    page = scripted_app.post("/v1/chat/completions", content=b"{}", headers={"origin": "http://evil.example", "content-type": "text/plain"})  # fmt: skip
    assert page.status_code == 403


def test_a_waiting_job_that_is_abandoned_gives_its_queue_slot_back():
    import asyncio
    import threading

    from llada_cli.server.worker import Job, QueueFull, Worker

    async def scenario():
        worker, release = Worker(max_queue=1), threading.Event()
        running = Job(lambda job: release.wait(10))
        first = worker.submit(running)
        waiting = Job(lambda job: "never")
        worker.submit(waiting)
        with pytest.raises(QueueFull):
            worker.submit(Job(lambda job: "no room"))
        worker.abandon(waiting)  # its client left while it waited
        assert worker.pending == 1
        late = worker.submit(Job(lambda job: "room again"))
        release.set()
        await first
        assert await late == "room again" and worker.pending == 0
        worker.abandon(running)  # abandoning a finished job changes nothing
        assert worker.pending == 0
        worker.stop()

    asyncio.run(scenario())


def test_server_urls_and_keys_a_user_gets_wrong_are_one_line_each():
    fake = FakeSglang()
    r = Remote("http://sglang.test:30000/v1/chat/completions", transport=httpx.MockTransport(fake))
    assert r.url == "http://sglang.test:30000" and r.label  # the base of a pasted route is used
    for url, words in [("http://[::1", "Invalid IPv6 URL"), ("http://h:99999", "Port out of range"), ("h:8000", "not an http")]:  # fmt: skip
        with pytest.raises(ServerRefused, match=re.escape(words)):
            Remote(url)
    with pytest.raises(ServerRefused, match="printable ASCII"):
        Remote("http://h:8000", api_key="clé")
    page = httpx.MockTransport(lambda request: httpx.Response(404, text="<!DOCTYPE HTML>\n<html>\n<p>nope</p>"))
    with pytest.raises(ServerRefused, match="not an OpenAI-style server") as caught:
        Remote("http://files.test:8000", transport=page).serving(None)
    assert "\n" not in caught.value.message
    refused = httpx.MockTransport(lambda request: httpx.Response(401, json={"error": {"message": "bad key"}}))
    with pytest.raises(ServerAccessRefused) as caught:
        Remote("http://h:8000", api_key="sk-wrong", transport=refused).serving(None)
    assert "the key given" in caught.value.hint  # not "pass a key": one was passed


def test_every_loopback_address_is_loopback_for_serve_and_its_gate(scripted_app):
    from llada_cli.server.app import is_loopback

    assert all(is_loopback(h) for h in ("localhost", "127.0.0.1", "127.0.0.2", "::1"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "example.com", "localhost.evil.example"))
    assert scripted_app.get("/v1/models", headers={"host": "127.0.0.2:8000"}).status_code == 200


def test_a_parallel_batch_settles_at_what_the_server_takes(monkeypatch, capsys, tmp_path):
    """A server that takes one request at a time (503 for the others): --parallel 3 still finishes,
    the workers it kept answering busy having handed their items back."""
    import threading

    fake, gate, seen = FakeSglang(), threading.Lock(), {"busy": 0}

    def one_at_a_time(request):
        if request.url.path == "/v1/models":
            return fake(request)
        if not gate.acquire(blocking=False):
            seen["busy"] += 1
            return httpx.Response(503, json={"detail": "busy"}, headers={"Retry-After": "0"})
        try:
            time.sleep(0.05)
            return FakeSglang.picture_reply()
        finally:
            gate.release()

    monkeypatch.setattr(client_module, "Remote", lambda url, key=None, timeout=600.0: Remote(url, key, timeout, httpx.MockTransport(one_at_a_time)))  # fmt: skip
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"picture {i}\n" for i in range(6)))
    code = run(["generate", "--prompts-file", str(prompts), "--server", "http://sglang.test:30000", "--size", "64x64", "--parallel", "3", "--out-dir", str(tmp_path / "out")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert len(list((tmp_path / "out").glob("*.png"))) == 6 and seen["busy"] > 0


def test_a_conversation_encodes_each_picture_once(monkeypatch):
    from llada_cli.io import imagefiles

    calls = []
    real = imagefiles.png_bytes
    monkeypatch.setattr(imagefiles, "png_bytes", lambda *a: calls.append(1) or real(*a))
    fake, picture = FakeSglang(), source(colour=(1, 2, 3))
    r = remote_for(fake)
    turns = [("user", "what is it?", [picture])]
    r.answer(turns, ChatSettings())
    r.answer([*turns, ("assistant", "a square", []), ("user", "and now?", [])], ChatSettings())
    assert len(calls) == 1  # the second turn resends the same picture, encoded once
    assert fake.bodies[0]["messages"][1]["content"][0] == fake.bodies[1]["messages"][1]["content"][0]
