"""What `llada serve` buys and what it costs, measured side by side in one run, on the tiny checkpoint
and on a mid-size one (benchmarks/backbone.py's MID backbone, 0.66 GB of bf16 shards in the real layout,
with a tokenizer built for its vocabulary and the tiny image stack; written once into --dir).

1. N answers as N one-shot `llada chat` processes (each loads the model) against one `llada serve` and N
   `llada chat --server` processes, and against N raw HTTP requests to that server: the load paid once.
2. The server's own overhead: the same N answers (and, on tiny, N pictures) from the engine called
   directly and through HTTP to an in-process server over the same engine (JSON, base64 PNG, the worker).

Run:  python benchmarks/server.py [--requests 4] [--dir /tmp/llada-server-bench] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

ASK = ["--max-tokens", "32", "--steps", "8"]


def cli(*args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llada_cli", *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"llada {' '.join(args)} failed: {proc.stderr.strip()[-300:]}")
    return time.perf_counter() - start


def mid_checkpoint(base: Path) -> Path:
    """The MID backbone as a model folder: its shards (quant_memory's builder), a tokenizer with its
    image offset, the tiny checkpoint's image stack linked in."""
    from quant_memory import ensure_checkpoint

    from llada_cli.hub.resolve import parse_model_ref, resolve
    from llada_cli.weights.tiny import TINY_BPE_VOCAB
    from llada_cli.weights.tokenizer import build_tokenizer, tokenizer_config

    root = ensure_checkpoint(base, layers=4, seed=0)
    config = json.loads((root / "config.json").read_text())
    if not (root / "tokenizer.json").exists():
        offset = config["image_token_offset"]
        build_tokenizer(TINY_BPE_VOCAB, offset, config["vocab_size"] - offset).save(str(root / "tokenizer.json"))
        (root / "tokenizer_config.json").write_text(json.dumps(tokenizer_config()) + "\n")
    tiny = resolve(parse_model_ref("tiny"), ("backbone",))
    for name in ("generation_config.json", "image_tokenizer", "decoder", "decoder-turbo", "vae"):
        if not (root / name).exists():
            os.symlink(tiny / name, root / name)
    return root


def start_server_process(model: str) -> tuple[subprocess.Popen, str, float]:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "llada_cli", "serve", "--model", model, "--device", "cpu", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        found = re.search(r"serving on (http://\S+)/v1", line)
        if found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its pipe drained
            return proc, found.group(1), time.perf_counter() - start
    raise SystemExit("llada serve did not start")


def processes(model: str, n: int) -> dict:
    import httpx

    one_shot = [cli("chat", f"question {i}", "--model", model, "--device", "cpu", "--seed", str(i), *ASK) for i in range(n)]  # fmt: skip
    proc, url, startup = start_server_process(model)
    try:
        via_cli = [cli("chat", f"question {i}", "--server", url, "--seed", str(i), *ASK) for i in range(n)]
        raw = []
        with httpx.Client(base_url=url, timeout=600) as http:
            for i in range(n):
                body = {"messages": [{"role": "user", "content": f"question {i}"}], "seed": i, "max_tokens": 32, "steps": 8}  # fmt: skip
                start = time.perf_counter()
                http.post("/v1/chat/completions", json=body).raise_for_status()
                raw.append(time.perf_counter() - start)
    finally:
        proc.terminate()
        proc.wait(60)
    return {
        "one_shot_s": sum(one_shot),
        "server_start_s": startup,
        "server_cli_s": sum(via_cli),
        "server_http_s": sum(raw),
        "one_shot_median_s": statistics.median(one_shot),
        "server_cli_median_s": statistics.median(via_cli),
        "server_http_median_s": statistics.median(raw),
    }


def in_process_server(engine):
    import uvicorn

    from llada_cli.server.app import ServeOptions, create_app

    server = uvicorn.Server(uvicorn.Config(create_app(engine, ServeOptions()), host="127.0.0.1", port=0, log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


def overhead(engine, n: int, pictures: bool) -> dict:
    """The same answers (and pictures) direct and over HTTP, interleaved so drift hits both alike."""
    import httpx

    from llada_cli.inputs.prompts import Turn
    from llada_cli.sampling.settings import SamplerSettings
    from llada_cli.settings import ChatSettings, DecoderSettings, ImageSettings

    server, thread, url = in_process_server(engine)
    out = {"answer_direct_s": 0.0, "answer_http_s": 0.0, "picture_direct_s": 0.0, "picture_http_s": 0.0}

    def side_by_side(task: str, counted: bool, direct, path: str, body: dict) -> None:
        """The engine call, then the same work over HTTP; the seconds of each added to `task`'s pair."""
        for way, run in (("direct", direct), ("http", lambda: http.post(path, json=body).raise_for_status())):
            start = time.perf_counter()
            run()
            if counted:
                out[f"{task}_{way}_s"] += time.perf_counter() - start

    try:
        with httpx.Client(base_url=url, timeout=600) as http:
            for i in range(n + 1):  # the first round warms both paths and is not counted
                settings = ChatSettings(sampler=SamplerSettings(steps=8), max_tokens=32, seed=i)
                question = {"messages": [{"role": "user", "content": f"question {i}"}], "seed": i, "max_tokens": 32, "steps": 8}  # fmt: skip
                side_by_side("answer", i > 0, lambda i=i, s=settings: engine.answer([Turn("user", [f"question {i}"])], s), "/v1/chat/completions", question)  # fmt: skip
                if pictures:
                    image = ImageSettings(sampler=SamplerSettings(steps=4))
                    draw = lambda i=i, s=image: engine.text_to_image("a fox", grid=(4, 4), settings=s, decoder=DecoderSettings(), seed=i)  # noqa: E731
                    side_by_side("picture", i > 0, draw, "/v1/images/generations", {"prompt": "a fox", "size": "128x128", "steps": 4, "seed": i})  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "llada-server-bench")
    args = parser.parse_args()
    from llada_cli.engine import Engine
    from llada_cli.settings import RunOptions

    n, threads = args.requests, os.cpu_count()
    models = {"tiny": "tiny", "mid": str(mid_checkpoint(args.dir))}
    results = {"requests": n, "cpu_threads": threads, "processes": {}, "overhead": {}}
    print(f"{n} chat answers (32 tokens, 8 steps) on the CPU, {threads} threads")
    for name, model in models.items():
        p = results["processes"][name] = processes(model, n)
        print(f"{name}: {n} one-shot `llada chat` processes {p['one_shot_s']:7.2f} s (median {p['one_shot_median_s']:.2f} s each)")  # fmt: skip
        print(f"{name}: `llada serve` start (load once)     {p['server_start_s']:7.2f} s")
        print(f"{name}: {n} `llada chat --server` processes {p['server_cli_s']:7.2f} s (median {p['server_cli_median_s']:.2f} s each)")  # fmt: skip
        print(f"{name}: {n} raw HTTP requests               {p['server_http_s']:7.2f} s (median {p['server_http_median_s']:.2f} s each)")  # fmt: skip
        print(f"{name}: one-shot / --server {p['one_shot_s'] / p['server_cli_s']:.2f}x, one-shot / HTTP {p['one_shot_s'] / p['server_http_s']:.2f}x")  # fmt: skip
    for name, model in models.items():
        pictures = name == "tiny"  # the mid folder's image stack is tiny's: its codes would not match
        o = overhead(Engine(model, RunOptions(device="cpu")), n, pictures)
        results["overhead"][name] = o
        line = f"{name:<5} answers: direct {o['answer_direct_s']:6.2f} s, HTTP {o['answer_http_s']:6.2f} s, HTTP/direct {o['answer_http_s'] / o['answer_direct_s']:.3f}"  # fmt: skip
        if pictures:
            line += f"; 128px pictures: direct {o['picture_direct_s']:6.2f} s, HTTP {o['picture_http_s']:6.2f} s, HTTP/direct {o['picture_http_s'] / o['picture_direct_s']:.3f}"  # fmt: skip
        print(line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
