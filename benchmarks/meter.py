"""Counters for the performance suite: what every backbone forward did, and peak memory per stage.

The figures that scale to the real model (spec/performance.md §6) rather than wall time: forwards (NFE),
query tokens, context tokens and LM-head rows per forward, and distinct experts touched per MoE layer per
forward (a proxy for the bytes a GPU reads). Attached with hooks, so the model code is not touched.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from llada_cli.models import llada2_moe


@dataclass
class ForwardLog:
    forwards: int = 0
    commits: int = 0
    query_tokens: int = 0
    context_tokens: int = 0
    logit_rows: int = 0
    touched: list[int] = field(default_factory=list)  # distinct experts, one entry per MoE layer call
    seconds: float = 0.0

    def summary(self) -> dict:
        n = max(self.forwards, 1)
        return {
            "forwards": self.forwards,
            "commit_forwards": self.commits,
            "query_tokens_per_forward": round(self.query_tokens / n, 1),
            "context_tokens_per_forward": round(self.context_tokens / n, 1),
            "logit_rows_per_forward": round(self.logit_rows / n, 1),
            "touched_experts_per_layer": round(sum(self.touched) / max(len(self.touched), 1), 1),
            "ms_per_forward": round(1e3 * self.seconds / n, 2),
        }


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@contextmanager
def count_forwards(model: torch.nn.Module):
    """Log every forward of a LLaDA2MoeModel while the block runs (route() is wrapped to see the experts)."""
    log, began = ForwardLog(), [0.0]
    real_route = llada2_moe.route

    def counting_route(*args, **kwargs):
        ids, weights = real_route(*args, **kwargs)
        log.touched.append(int(ids.unique().numel()))
        return ids, weights

    def before(_module, args, kwargs):
        ids = args[0]
        mask = args[2] if len(args) > 2 else kwargs.get("mask")
        cache = args[3] if len(args) > 3 else kwargs.get("cache")
        commit = kwargs.get("commit", args[4] if len(args) > 4 else False)
        b, t = ids.shape
        log.forwards += 1
        log.commits += bool(commit)
        log.query_tokens += b * t
        keys = mask.shape[-1] if mask is not None else t + (cache.length if cache is not None else 0)
        log.context_tokens += b * keys
        log.logit_rows += b * (t - kwargs.get("logits_from", 0))
        _sync()
        began[0] = time.perf_counter()

    def after(_module, _args, _kwargs, _out):
        _sync()
        log.seconds += time.perf_counter() - began[0]

    handles = [
        model.register_forward_pre_hook(before, with_kwargs=True),
        model.register_forward_hook(after, with_kwargs=True),
    ]
    llada2_moe.route = counting_route
    try:
        yield log
    finally:
        llada2_moe.route = real_route
        for h in handles:
            h.remove()


@dataclass
class Stage:
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    peak_cuda_bytes: int | None = None


@contextmanager
def stage(interval: float = 0.005):
    """Wall time and peak resident memory (sampled) of the enclosed work; peak CUDA memory when present."""
    import psutil

    proc, result, done = psutil.Process(), Stage(), threading.Event()
    result.peak_rss_bytes = proc.memory_info().rss

    def sample() -> None:
        while not done.wait(interval):
            result.peak_rss_bytes = max(result.peak_rss_bytes, proc.memory_info().rss)

    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    began = time.perf_counter()
    try:
        yield result
    finally:
        _sync()
        result.seconds = time.perf_counter() - began
        done.set()
        thread.join()
        result.peak_rss_bytes = max(result.peak_rss_bytes, proc.memory_info().rss)
        if cuda:
            result.peak_cuda_bytes = torch.cuda.max_memory_allocated()
