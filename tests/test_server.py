"""`llada serve --model tiny` as a real process on a loopback port: every endpoint over httpx, the official
`openai` client, every command with `--server` against a local run of the same seed, bad requests, a
client that goes away, a server killed mid-batch, and SIGTERM. One server for the module."""

from __future__ import annotations

import base64
import io
import json
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from llada_cli.cli.app import run

from .conftest import ServerProcess

KEY = "sk-test-0123456789"
SMALL = ["--size", "64x64", "--steps", "2"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ServerProcess(
        tmp_path_factory, "serve", "--port", "0", "--api-key", KEY, "--max-body-mb", "4", "--max-queue", "1"
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    """A source photo (RGB) and a reference with transparent pixels."""
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(folder / "src.png")
    Image.fromarray(rng.integers(0, 255, (50, 60, 4), dtype=np.uint8)).save(folder / "ref.png")
    return {"src": folder / "src.png", "ref": folder / "ref.png"}


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def remote(server) -> list[str]:
    return ["--server", server.url, "--api-key", KEY]


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def pixels(source) -> np.ndarray:
    return np.asarray(Image.open(source if not isinstance(source, bytes) else io.BytesIO(source)))


def record_of(data: bytes) -> dict:
    return json.loads(Image.open(io.BytesIO(data)).text["llada"])


def user(text: str, *images: Path) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": data_uri(p)}} for p in images]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


# -- endpoints --------------------------------------------------------------------------------------


def test_health_and_models(server, http):
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    refused = httpx.get(server.url + "/v1/models")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["error"]["type"] == "authentication_error"
    wrong = httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer sk-wrong"})
    assert wrong.status_code == 401
    card = http.get("/v1/models").json()["data"][0]
    assert card["id"] == "tiny" and card["owned_by"] == "llada"
    assert card["quantization"] == {"backbone": "none", "decoder": "none"}


def test_chat_answer_and_its_stream_are_the_local_answer(server, http, capsys):
    code, out, err = cli(capsys, "chat", "hello there", "--model", "tiny", "--seed", "4", "--max-tokens", "24", "--json")  # fmt: skip
    assert code == 0, err
    local = json.loads(out)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 24, "seed": 4}
    reply = http.post("/v1/chat/completions", json=body).json()
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"] == local["answer"]
    assert reply["usage"]["completion_tokens"] == local["tokens"]["generated"]
    assert reply["usage"]["prompt_tokens"] == local["tokens"]["prompt"]

    stream = body | {"stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/chat/completions", json=stream) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]" and frames.count("[DONE]") == 1
    chunks = [json.loads(f) for f in frames[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == local["answer"]
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    generated = local["tokens"]["generated"]  # all 24 asked for: "length"; fewer: it stopped
    assert chunks[-2]["choices"][0]["finish_reason"] == ("length" if generated == 24 else "stop")
    assert chunks[-1]["choices"] == []  # usage rides alone on the last chunk, as OpenAI sends it
    assert chunks[-1]["usage"]["completion_tokens"] == local["tokens"]["generated"]


def test_chat_pictures_in_both_shapes_with_the_cli_record_and_pixels(http, capsys, tmp_path):
    code, _, err = cli(capsys, "generate", "a red fox", "--model", "tiny", *SMALL, "--seed", "5", "-o", str(tmp_path / "l.png"))  # fmt: skip
    assert code == 0, err
    gen = {"width": 64, "height": 64, "seed": 5, "dllm_steps": 2}
    body = {"messages": [{"role": "user", "content": "a red fox"}], "modalities": ["image"], "image_generation": gen}
    message = http.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
    (entry,) = message["images"]
    assert entry["format"] == "png" and (entry["width"], entry["height"]) == (64, 64)
    assert message["image"]["data"] == entry["data"]  # SGLang-Omni's first shape too
    png = base64.b64decode(entry["data"])
    assert (pixels(png) == pixels(tmp_path / "l.png")).all()
    local = json.loads(Image.open(tmp_path / "l.png").text["llada"])
    assert record_of(png) == entry["record"] == {k: v for k, v in local.items() if k != "codes_file"}
    assert entry["grid"] == [2, 2] and len(entry["codes"]) == 4

    with http.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    progress = [c["llada_progress"] for c in chunks if "llada_progress" in c]
    assert {p["stage"] for p in progress} == {"backbone", "decoder"}
    (last_images,) = [c["choices"][0]["delta"]["images"] for c in chunks if "images" in c["choices"][0]["delta"]]
    assert last_images[0]["data"] == entry["data"]


def test_images_endpoints(http, pictures, capsys, tmp_path):
    body = {"prompt": "a lighthouse", "n": 2, "size": "64x64", "seed": 9, "steps": 2}
    data = http.post("/v1/images/generations", json=body).json()["data"]
    assert [d["seed"] for d in data] == [9, 10]
    first = base64.b64decode(data[0]["b64_json"])
    code, _, err = cli(capsys, "generate", "a lighthouse", "--model", "tiny", *SMALL, "--seed", "10", "-o", str(tmp_path / "l.png"))  # fmt: skip
    assert code == 0, err
    assert (pixels(base64.b64decode(data[1]["b64_json"])) == pixels(tmp_path / "l.png")).all()
    assert record_of(first)["seed"] == 9
    as_url = http.post("/v1/images/generations", json=body | {"n": 1, "response_format": "url"}).json()
    assert as_url["data"][0]["url"].startswith("data:image/png;base64,")

    files = [("image[]", ("src.png", pictures["src"].read_bytes(), "image/png")), ("image[]", ("ref.png", pictures["ref"].read_bytes(), "image/png"))]  # fmt: skip
    edited = http.post("/v1/images/edits", files=files, data={"prompt": "combine them", "seed": "3", "steps": "2"})
    assert edited.status_code == 200, edited.text
    record = record_of(base64.b64decode(edited.json()["data"][0]["b64_json"]))
    assert record["instruction"] == "combine them" and len(record["images"]) == 2


def test_the_official_openai_client(server, pictures):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    reply = client.chat.completions.create(
        model="tiny", messages=user("What is in this picture?", pictures["src"]), max_tokens=16, seed=4
    )
    assert isinstance(reply.choices[0].message.content, str) and reply.usage.completion_tokens == 16

    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=16, seed=4, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    plain = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=16, seed=4)  # fmt: skip
    assert streamed == plain.choices[0].message.content

    made = client.images.generate(
        model="tiny", prompt="a fox", size="64x64", response_format="b64_json", extra_body={"seed": 2, "steps": 2}
    )
    assert Image.open(io.BytesIO(base64.b64decode(made.data[0].b64_json))).size == (64, 64)
    with open(pictures["src"], "rb") as f:
        edited = client.images.edit(model="tiny", image=f, prompt="make it blue", extra_body={"seed": 1, "steps": 2})
    assert record_of(base64.b64decode(edited.data[0].b64_json))["instruction"] == "make it blue"

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], temperature=-1)
    assert refused.value.body["param"] == "temperature"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0).models.list()


# -- every command against the server ---------------------------------------------------------------


def test_a_client_run_never_loads_torch(server, tmp_path):
    """`--server` work is HTTP and pictures: the client starts in well under a second, without torch."""
    probe = (
        "import sys; from llada_cli.cli.app import run; code = run(sys.argv[1:]);"
        "sys.exit(code or 10 * ('torch' in sys.modules))"
    )
    for args in (["chat", "hi", "--max-tokens", "8"], ["generate", "a fox", *SMALL, "-o", str(tmp_path / "f.png")]):
        proc = subprocess.run([sys.executable, "-c", probe, *args, *remote(server)], capture_output=True, text=True)
        assert proc.returncode == 0, (args, proc.returncode, proc.stderr)


def test_generate_and_edit_with_server_are_the_local_pixels(server, pictures, capsys, tmp_path):
    prompts = ["a red fox", "a blue bird", "a green tree"]
    args = ["generate", *prompts, *SMALL, "--seed", "5"]
    assert cli(capsys, *args, "--model", "tiny", "--out-dir", str(tmp_path / "local"))[0] == 0
    code, out, err = cli(capsys, *args, *remote(server), "--parallel", "2", "--out-dir", str(tmp_path / "remote"), "--json")  # fmt: skip
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(line["index"] for line in lines) == [0, 1, 2]
    for png in sorted((tmp_path / "local").glob("*.png")):
        twin = tmp_path / "remote" / png.name
        assert (pixels(png) == pixels(twin)).all()
        assert Image.open(png).text["llada"] == Image.open(twin).text["llada"]
        codes = json.loads(png.with_suffix(".codes.json").read_text())
        assert json.loads(twin.with_suffix(".codes.json").read_text())["codes"] == codes["codes"]
    states = [json.loads(line)["state"] for line in (tmp_path / "remote" / "manifest.jsonl").read_text().splitlines()]  # fmt: skip
    assert states.count("done") == 3

    edit = ["edit", "-i", str(pictures["src"]), "-i", str(pictures["ref"]), "put them together", "--steps", "2", "--seed", "3"]  # fmt: skip
    assert cli(capsys, *edit, "--model", "tiny", "-o", str(tmp_path / "le.png"))[0] == 0
    code, _, err = cli(capsys, *edit, *remote(server), "-o", str(tmp_path / "re.png"))
    assert code == 0, err
    assert (pixels(tmp_path / "le.png") == pixels(tmp_path / "re.png")).all()
    local, there = (json.loads(Image.open(tmp_path / n).text["llada"]) for n in ("le.png", "re.png"))
    assert there == local | {"codes_file": "re.codes.json"}  # the sources named as the local files


def test_chat_and_interleave_with_server_are_the_local_ones(server, pictures, capsys, tmp_path):
    ask = ["chat", "-i", str(pictures["src"]), "what is it", "--seed", "4", "--max-tokens", "24"]
    code, local, _ = cli(capsys, *ask, "--model", "tiny")
    code2, there, err = cli(capsys, *ask, *remote(server))
    assert code == code2 == 0, err
    assert there == local and there.endswith("\n")

    doc = ["interleave", "a short story", "--seed", "2", "--max-frames", "1", "--max-new-tokens", "48", "--image-steps", "2"]  # fmt: skip
    assert cli(capsys, *doc, "--model", "tiny", "--out-dir", str(tmp_path / "li"))[0] == 0
    code, _, err = cli(capsys, *doc, *remote(server), "--out-dir", str(tmp_path / "ri"))
    assert code == 0, err
    assert (tmp_path / "ri" / "document.md").read_text() == (tmp_path / "li" / "document.md").read_text()
    local_doc, remote_doc = (json.loads((tmp_path / d / "document.json").read_text()) for d in ("li", "ri"))
    assert remote_doc["segments"] == local_doc["segments"] and remote_doc["finish_reason"] == local_doc["finish_reason"]


def test_server_flags_refused_before_any_work(server, capsys, tmp_path):
    code, _, err = cli(capsys, "generate", "a fox", *remote(server), "--quant", "nf4", "-o", str(tmp_path / "x.png"))
    assert code == 2 and "--quant" in err and "llada serve --quant" in err
    code, _, err = cli(capsys, "generate", "a fox", "--parallel", "2", "--model", "tiny", "-o", str(tmp_path / "x.png"))
    assert code == 2 and "--server" in err
    code, _, err = cli(capsys, "chat", "hi", "--server", server.url)  # no key
    assert code == 2 and "--api-key" in err and "Traceback" not in err
    code, _, err = cli(capsys, "generate", "a fox", "--server", "http://127.0.0.1:9", "-o", str(tmp_path / "x.png"))
    assert code == 1 and "cannot reach http://127.0.0.1:9" in err and len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "x.png").exists()
    assert run(["serve", "--model", "tiny", "--host", "0.0.0.0"]) == 2  # another address needs a key
    assert "an API key is required" in capsys.readouterr().err


# -- bad requests -----------------------------------------------------------------------------------


def _huge_png() -> bytes:
    """A valid PNG whose header claims 20000x20000 pixels (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data[12:29]  # the chunk type and its 13 bytes
    ihdr[4:12] = struct.pack(">II", 20000, 20000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def _chat(**changes) -> dict:
    return {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8} | changes


def _image(**gen) -> dict:
    return _chat(modalities=["image"], image_generation={"width": 64, "height": 64} | gen)


def _with_image(uri: str) -> dict:
    return _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": "what"}]}])  # fmt: skip


BAD_CHATS = [
    (b"{not json", 400, None),
    ([], 400, None),
    ({"max_tokens": 8}, 400, "messages"),
    (_chat(messages="hi"), 400, "messages"),
    (_chat(messages=[{"role": "tool", "content": "x"}]), 400, "messages[0]"),
    (_chat(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content"),
    (_chat(messages=[{"role": "assistant", "content": "x"}]), 400, "messages"),
    (_chat(foo=1), 400, "foo"),
    (_chat(max_tokens="ten"), 400, "max_tokens"),
    (_chat(max_tokens=0), 400, "max_tokens"),
    (_chat(max_tokens=True), 400, "max_tokens"),
    (_chat(temperature=-1), 400, "temperature"),
    (_chat(top_p=0), 400, "top_p"),
    (_chat(n=2), 400, "n"),
    (_chat(stream="yes"), 400, "stream"),
    (_chat(sprint={"keep_ratio": 3}), 400, "sprint"),
    (_chat(modalities=["audio"]), 400, "modalities"),
    (_chat(image_generation={"seed": 1}), 400, "modalities"),
    (_image(width=33), 400, "image_generation.size"),
    (_image(decode_mode="fast"), 400, "image_generation.decode_mode"),
    (_image(decoder_steps=0), 400, "image_generation.decoder_steps"),
    (_image(dllm_steps=0), 400, "image_generation.dllm_steps"),
    (_image(bogus=1), 400, "image_generation.bogus"),
    (_image(cfg_rescale=0.7), 400, "image_generation.cfg_rescale"),
    (_image(cfg_scale="NaN"), 400, "image_generation.cfg_scale"),
    (_image(mode="dream"), 400, "image_generation.mode"),
    (_with_image("http://example.com/a.png"), 400, "messages[0].content[0].image_url"),
    (_with_image("/etc/passwd"), 400, "messages[0].content[0].image_url"),
    (_with_image("data:image/png;base64,@@@"), 400, "messages[0].content[0].image_url"),
    (_with_image("data:image/png;base64," + base64.b64encode(b"not an image at all").decode()), 400, "messages[0].content[0].image_url"),  # fmt: skip
    (_with_image("data:image/png;base64," + base64.b64encode(_huge_png()).decode()), 413, "messages[0].content[0].image_url"),  # fmt: skip
    (_chat(model="gpt-4"), 404, "model"),
    (_chat(modalities=[["text"]]), 400, "modalities"),  # unhashable items, duplicates: not a 500
    (_chat(modalities=["text", "text"]), 400, "modalities"),
    (_image(decode_mode={}), 400, "image_generation.decode_mode"),
    (_image(mode=[]), 400, "image_generation.mode"),
    (b'{"messages": [{"role": "user", "content": "x"}], "modalities": ["image"], "image_generation": {"width": 1e999}}', 400, "image_generation.width"),  # fmt: skip
    (b"[" * 100000 + b"]" * 100000, 400, None),
    (_chat(modalities=["text", "image"], image_generation={"mode": "interleaved", "size": "64x64"}), 400, "image_generation.size"),  # fmt: skip
    (_chat(messages=[{"role": "user", "content": "word " * 9000}]), 422, None),
    (b"x" * (5 << 20), 413, None),
]


def test_bad_requests_get_their_status_and_name_the_field(server, http):
    for body, status, param in BAD_CHATS:
        if isinstance(body, bytes):
            response = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        else:
            response = http.post("/v1/chat/completions", json=body)
        assert response.status_code == status, (body if not isinstance(body, bytes) else body[:20], response.text)
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"] and "Traceback" not in error["message"]
        if param is not None:
            assert error["param"] == param, (param, error)

    images = [
        ({"n": 1}, 400, "prompt"),
        ({"prompt": "x", "n": 9}, 400, "n"),
        ({"prompt": "x", "size": "big"}, 400, "size"),
        ({"prompt": "x", "response_format": "png"}, 400, "response_format"),
        ({"prompt": "x", "quality": "hd"}, 400, "quality"),
        ({"prompt": "x", "seed": -1}, 400, "seed"),
        ({"prompt": "x", "decode_mode": {}}, 400, "decode_mode"),
        ({"prompt": "x", "cfg_scale": "bogus"}, 400, "cfg_scale"),
        ({"prompt": "x", "max_frames": 2}, 400, "max_frames"),
        ({"prompt": "x", "format": "jpeg"}, 400, "format"),
        ({"prompt": "x", "mode": []}, 400, "mode"),
    ]
    for body, status, param in images:
        response = http.post("/v1/images/generations", json=body)
        assert response.status_code == status and response.json()["error"]["param"] == param, response.text
    assert http.post("/v1/images/edits", json={"prompt": "x"}).status_code == 400
    no_file = http.post("/v1/images/edits", data={"prompt": "x"}, files={"other": ("a.txt", b"hi")})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "image"
    not_image = http.post("/v1/images/edits", data={"prompt": "x"}, files={"image": ("a.png", b"hi", "image/png")})
    assert not_image.status_code == 400 and not_image.json()["error"]["param"] == "image[0]"
    assert http.get("/v1/nothing").json()["error"]["message"]
    wrong_method = http.post("/v1/models")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET"
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"
    wrong_model = http.post("/v1/chat/completions", json=_chat(model="gpt-4")).json()["error"]
    assert (wrong_model["type"], wrong_model["code"]) == ("invalid_request_error", "model_not_found")
    foreign = http.post("/v1/chat/completions", json=_chat(), headers={"origin": "http://evil.example"})
    assert foreign.status_code == 403  # a web page of another origin cannot use the server
    assert httpx.post(server.url + "/v1/chat/completions", content=b"x" * (5 << 20)).status_code == 401  # before the body  # fmt: skip
    capped = http.post("/v1/chat/completions", json=_chat(max_completion_tokens=None, max_tokens=4)).json()
    assert capped["usage"]["completion_tokens"] <= 4
    top = http.post("/v1/images/generations", json={"prompt": "x", "n": 2, "seed": (1 << 64) - 1, "size": "64x64", "steps": 2})  # fmt: skip
    assert [d["seed"] for d in top.json()["data"]] == [(1 << 64) - 1, 0]  # seeds wrap round
    assert httpx.get(server.url + "/health").json()["status"] == "ok"  # nothing crashed


# -- operations -------------------------------------------------------------------------------------

LONG = _chat(max_tokens=2048, threshold=1.0, steps=32)  # about 40 s on tiny unless cancelled


def _idle(server, within: float) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        if not httpx.get(server.url + "/health").json()["running"]:
            return True
        time.sleep(0.1)
    return False


def test_a_client_that_goes_away_cancels_its_request(server, http):
    with http.stream("POST", "/v1/chat/completions", json=LONG | {"stream": True}) as response:
        lines = response.iter_lines()
        next(lines)  # the role chunk: the job has been queued
        assert not _idle(server, 1), "the streamed job is not running"
    assert _idle(server, 10), "the streamed job kept running after its client left"
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=LONG, timeout=1.5)
    assert _idle(server, 10), "the job kept running after its client timed out"
    assert "POST /v1/chat/completions 499" in server.text()


def test_a_full_queue_answers_503_with_retry_after(server):
    from contextlib import ExitStack

    headers, lines = {"Authorization": f"Bearer {KEY}"}, []
    with ExitStack() as stack:
        for _ in range(2):  # one runs, one waits (--max-queue 1)
            client = stack.enter_context(httpx.Client(base_url=server.url, headers=headers, timeout=60))
            waiting = stack.enter_context(client.stream("POST", "/v1/chat/completions", json=LONG | {"stream": True}))  # fmt: skip
            lines.append(waiting.iter_lines())  # kept: a dropped line iterator closes its response
            next(lines[-1])
        third = httpx.post(server.url + "/v1/chat/completions", json=_chat(), headers=headers, timeout=30)
        assert third.status_code == 503 and third.headers["retry-after"] == "5"
        assert third.json()["error"]["type"] == "server_busy"
    assert _idle(server, 10)


def test_server_killed_mid_batch_then_resume_finishes(tmp_path_factory, tmp_path):
    first = ServerProcess(tmp_path_factory, "resume", "--port", "0")
    prompts = [f"picture number {i}" for i in range(16)]
    cmd = [sys.executable, "-m", "llada_cli", "generate", *prompts, "--size", "64x64", "--steps", "8", "--seed", "1", "--out-dir", str(tmp_path)]  # fmt: skip
    batch = subprocess.Popen([*cmd, "--server", first.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    manifest = tmp_path / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not manifest.exists() or '"done"' not in manifest.read_text()):
        time.sleep(0.02)
    first.stop(signal.SIGKILL)
    _, err = batch.communicate(timeout=60)
    assert batch.returncode == 1, err
    assert err.count("error:") == 1 and ("cannot reach" in err or "broke off" in err), err
    done = manifest.read_text().count('"done"')
    assert 1 <= done < 16
    # What the manifest calls done is on disk, whole, and nothing else is: no half-written picture, no
    # reservation lock left behind by the run the dead server stopped.
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == done and all(json.loads(Image.open(p).text["llada"])["prompt"] in prompts for p in pngs)
    assert not list(tmp_path.glob(".*.llada-reserved")) and not list(tmp_path.glob(".*.part"))

    second = ServerProcess(tmp_path_factory, "resume-again", "--port", "0")
    try:
        resumed = subprocess.run([*cmd, "--server", second.url, "--resume"], capture_output=True, text=True, timeout=300)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        assert len(list(tmp_path.glob("*.png"))) == 16
        assert manifest.read_text().count('"done"') == 16
        # --resume asked the new server for exactly the pictures the first run did not finish
        assert second.text().count("POST /v1/chat/completions 200") == 16 - done
        holder = {}
        long = threading.Thread(target=lambda: holder.update(r=_post_quietly(second.url, LONG)))
        long.start()
        time.sleep(1.0)
        start = time.time()
        assert second.stop(signal.SIGTERM) == 0  # a clean stop, the running request cancelled
        assert time.time() - start < 30
        long.join(30)
        assert holder["r"] in (503, "gone")
        assert "stopped (SIGTERM)" in second.text()
    finally:
        second.stop(signal.SIGKILL)


def _post_quietly(url: str, body: dict):
    try:
        return httpx.post(url + "/v1/chat/completions", json=body, timeout=60).status_code
    except httpx.HTTPError:
        return "gone"
