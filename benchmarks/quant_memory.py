"""Peak host memory of a streaming-quantized backbone load, against the checkpoint's full bf16 size.

Writes (once, then reuses) a random-weight backbone in the real layout: `config.json` with the Hub keys,
`model.safetensors.index.json` and ~500 MB bf16 shards holding one tensor per expert. The sizes are the
mid config of benchmarks/backbone.py with 10 layers, about 1.9 GB. Each load runs in a fresh process:
`load_backbone(root, "cpu", bfloat16, quant)` for quant none, int8 and nf4, and two baseline processes
that import what a load imports (torch + llada_cli, then also bitsandbytes) and load nothing. Each child
reports its peak RSS and a thread samples /proc/self/status to split it into anonymous memory and
file-backed pages (safetensors' mmap). The peak is VmHWM, not ru_maxrss: Linux carries ru_maxrss across
execve, so a child's ru_maxrss starts at the parent's RSS when it was spawned (both go into the JSON).
Run:  python benchmarks/quant_memory.py [--dir /tmp/llada-quant-memory] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

QUANTS = ("none", "int8", "nf4")
BASELINES = {"baseline": (), "baseline+bnb": ("bitsandbytes.functional",)}
BASELINE_OF = {"none": "baseline", "int8": "baseline+bnb", "nf4": "baseline+bnb"}
LAYERS = 10
SHARD_BYTES = 500_000_000
DTYPE_BYTES = {"BF16": 2, "F32": 4}
MARKER = ".quant-memory.json"
BUILDER_VERSION = 1
GB = 1e9
SAMPLE_S = 0.005


# ----------------------------------------------------------------------------------------------------------
# The checkpoint (parent process).
# ----------------------------------------------------------------------------------------------------------


def checkpoint_fields(layers: int) -> dict:
    """The real config.json keys with the mid sizes (pad id moved inside the small vocab)."""
    from backbone import MID  # benchmarks/backbone.py, beside this script

    from llada_cli.weights import real_configs

    return {**real_configs.BACKBONE, **MID, "num_hidden_layers": layers, "pad_token_id": 0}


def spec_bytes(spec) -> int:
    return spec.numel * DTYPE_BYTES[spec.dtype]


def plan_shards(manifest: dict, shard_bytes: int) -> list[list[str]]:
    """Tensor names in manifest order, cut into groups of about `shard_bytes` each."""
    groups, current, size = [], [], 0
    for name, spec in manifest.items():
        current.append(name)
        size += spec_bytes(spec)
        if size >= shard_bytes:
            groups.append(current)
            current, size = [], 0
    return groups + [current] if current else groups


def write_checkpoint(dest: Path, fields: dict, shard_bytes: int, seed: int) -> None:
    """Config, index and shards; each shard's tensors are drawn just before it is written, then dropped."""
    import torch
    from safetensors.torch import save_file

    from llada_cli.models.llada2_moe import BackboneConfig, backbone_manifest
    from llada_cli.weights.tiny import _random_state

    manifest = backbone_manifest(BackboneConfig.from_dict(fields))
    groups = plan_shards(manifest, shard_bytes)
    gen = torch.Generator().manual_seed(seed)
    weight_map = {}
    for i, names in enumerate(groups, start=1):
        fname = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        print(f"writing {fname} ({len(names)} tensors)", file=sys.stderr)
        state = _random_state({n: manifest[n] for n in names}, gen)
        save_file(state, str(dest / fname), metadata={"format": "pt"})
        del state
        weight_map.update(dict.fromkeys(names, fname))
    total = sum(spec_bytes(s) for s in manifest.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (dest / "config.json").write_text(json.dumps(fields, indent=2) + "\n")


def ensure_checkpoint(base: Path, layers: int, seed: int) -> Path:
    """Build once into `base`, reuse afterwards; built in a staging folder and renamed when complete."""
    from llada_cli.checkpoint.components import inspect_component

    final = base / f"mid-{layers}layers-seed{seed}-v{BUILDER_VERSION}"
    if not (final / MARKER).is_file():
        base.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=base))
        try:
            write_checkpoint(staging, checkpoint_fields(layers), SHARD_BYTES, seed)
            (staging / MARKER).write_text(json.dumps({"layers": layers, "seed": seed}) + "\n")
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    inspect_component(final, "backbone")  # strict: every header matches the manifest
    return final


def shard_sizes(root: Path) -> list[int]:
    return [p.stat().st_size for p in sorted(root.glob("model-*.safetensors"))]


# ----------------------------------------------------------------------------------------------------------
# The measured process (child).
# ----------------------------------------------------------------------------------------------------------


def read_status() -> dict[str, int]:
    """VmHWM (peak RSS of this program image), VmRSS, RssAnon and RssFile, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


class RssSampler(threading.Thread):
    """Polls /proc/self/status; keeps the largest anon and file RSS, and the split at the largest total."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop, self.anon, self.file, self.at_peak = threading.Event(), 0, 0, {"VmRSS": 0}

    def run(self) -> None:
        while not self.stop.is_set():
            now = read_status()
            self.anon, self.file = max(self.anon, now["RssAnon"]), max(self.file, now["RssFile"])
            if now["VmRSS"] > self.at_peak["VmRSS"]:
                self.at_peak = now
            time.sleep(SAMPLE_S)


def child(mode: str, root: Path) -> dict:
    """Import, (load,) and report this process's memory as one JSON-able record."""
    import importlib

    import torch

    import llada_cli.checkpoint.components as components

    for module in BASELINES.get(mode, ()):
        importlib.import_module(module)
    record: dict = {"mode": mode}
    if mode in QUANTS:
        sampler = RssSampler()
        sampler.start()
        start = time.perf_counter()
        model = components.load_backbone(root, "cpu", torch.bfloat16, quant=mode)
        record["load_s"] = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
        record["weights_bytes"] = model.quant_report.bytes
        record["summary"] = model.quant_report.line()
        record["sampled"] = {
            "peak_anon": sampler.anon,
            "peak_file": sampler.file,
            "anon_at_peak": sampler.at_peak.get("RssAnon", 0),
            "file_at_peak": sampler.at_peak.get("RssFile", 0),
        }
    record["end"] = read_status()
    record["peak_rss"] = record["end"]["VmHWM"]
    record["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return record


def run_child(mode: str, root: Path) -> dict:
    print(f"child {mode} ...", file=sys.stderr)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--dir", str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"child {mode} failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------------------------------------


def row(rec: dict, base: dict, disk: int) -> dict:
    above = rec["peak_rss"] - base["peak_rss"]
    anon = rec["sampled"]["anon_at_peak"] - base["end"]["RssAnon"]
    file = rec["sampled"]["file_at_peak"] - base["end"]["RssFile"]
    return {
        **rec,
        "baseline": base["mode"],
        "above_baseline": above,
        "fraction_of_bf16": above / disk,
        "anon_fraction_of_bf16": anon / disk,
        "file_fraction_of_bf16": file / disk,
    }


def print_table(rows: list[dict], baselines: dict, disk: int) -> None:
    head = (
        f"{'quant':<6} | {'load s':>6} | {'weights GB':>10} | {'peak RSS GB':>11} | "
        f"{'peak RSS - baseline GB':>22} | {'bf16 checkpoint GB on disk':>26} | "
        f"{'anon / file at peak GB':>22}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        s = r["sampled"]
        split = f"{s['anon_at_peak'] / GB:.2f} / {s['file_at_peak'] / GB:.2f}"
        print(
            f"{r['mode']:<6} | {r['load_s']:>6.1f} | {r['weights_bytes'] / GB:>10.3f} | "
            f"{r['peak_rss'] / GB:>11.3f} | {r['above_baseline'] / GB:>22.3f} | {disk / GB:>26.3f} | "
            f"{split:>22}"
        )
    for b in baselines.values():
        print(
            f"{b['mode']:<13} (imports only, nothing loaded): peak RSS {b['peak_rss'] / GB:.3f} GB "
            f"(anon {b['end']['RssAnon'] / GB:.2f}, file {b['end']['RssFile'] / GB:.2f})"
        )
    for r in rows:
        print(f"{r['mode']}: {r['summary']}")
    for r in rows:
        print(
            f"{r['mode']}: peak RSS above baseline is {r['fraction_of_bf16']:.0%} of the bf16 size "
            f"(anonymous {r['anon_fraction_of_bf16']:.0%}, file-backed shard pages "
            f"{r['file_fraction_of_bf16']:.0%}; the loaded weights are {r['weights_bytes'] / disk:.0%}; "
            f"still mapped after the load: {r['end']['RssFile'] / GB:.2f} GB file-backed)"
        )


def measure(root: Path) -> dict:
    import torch

    disk = sum(shard_sizes(root))
    baselines = {mode: run_child(mode, root) for mode in BASELINES}
    rows = [row(run_child(q, root), baselines[BASELINE_OF[q]], disk) for q in QUANTS]
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs; checkpoint {root} "
        f"({len(shard_sizes(root))} shards, {disk / GB:.3f} GB bf16)"
    )
    print_table(rows, baselines, disk)
    return {
        "checkpoint": str(root),
        "shard_bytes": shard_sizes(root),
        "bf16_bytes": disk,
        "baselines": baselines,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "llada-quant-memory")
    parser.add_argument("--layers", type=int, default=LAYERS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=(*QUANTS, *BASELINES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dir)))
        return
    result = measure(ensure_checkpoint(args.dir, args.layers, args.seed))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
