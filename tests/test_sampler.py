"""The block-diffusion sampler's control flow, driven by scripted fake models, and on the real tiny model."""

from __future__ import annotations

import pytest
import torch

from llada_cli.models.llada2_moe import block_causal_mask
from llada_cli.sampling.block_diffusion import SamplerStats, quota_schedule, run
from llada_cli.sampling.settings import SamplerSettings

V, MASK = 50, 49


def sample(model, prompt, mask, *, gen_length, stop_ids=(), vocab_range=None, **kwargs):
    """The sampler with its settings inline: run-time keywords go to `run`, the rest are settings."""
    run_keys = ("generator", "stats", "on_step", "guidance", "include_stop")
    runs = {k: kwargs.pop(k) for k in run_keys if k in kwargs}
    settings = SamplerSettings(**kwargs)
    return run(
        model,
        prompt,
        mask,
        settings,
        gen_length=gen_length,
        stop_ids=stop_ids,
        vocab_range=vocab_range,
        **runs,
    )


class Scripted:
    """Wants token `want(pos)` at each position with confidence `conf(pos)`; records calls."""

    def __init__(self, want=lambda p: p % 40, conf=lambda p: 0.5):
        self.want, self.conf = want, conf
        self.commits: list[int] = []
        self.calls = 0

    def logits(self, tokens, start):
        self.calls += 1
        out = torch.full((len(tokens), V), -1e9)
        for i in range(len(tokens)):
            p = self.conf(start + i)
            out[i, :] = torch.log(torch.tensor((1 - p) / (V - 1)))
            out[i, self.want(start + i)] = torch.log(torch.tensor(p))
        return out

    def commit(self, tokens, start):
        self.commits.append(start)


@pytest.mark.parametrize(
    "L, S, expected", [(32, 8, [4] * 8), (32, 16, [2] * 16), (32, 32, [1] * 32), (32, 5, [7, 7, 6, 6, 6])]
)
def test_quota_schedule(L, S, expected):
    assert quota_schedule(L, S) == expected


def test_low_confidence_commits_exactly_the_quota_each_step():
    fake, stats = Scripted(), SamplerStats()
    prompt = list(range(10))
    out = sample(fake, prompt, MASK, gen_length=54, block_length=32, steps=8, stats=stats)
    assert out == [p % 40 for p in range(10, 64)]
    # first block: 22 generated slots at quota 4 (the last step takes what is left), then a full block
    assert stats.accepted_per_pass == [4, 4, 4, 4, 4, 2] + [4] * 8
    assert 0 in fake.commits  # the block holding the prompt tail is committed once finished
    assert MASK not in out


def test_threshold_accepts_a_whole_block_in_one_pass():
    fake, stats = Scripted(conf=lambda p: 0.99), SamplerStats()
    out = sample(fake, [1] * 32, MASK, gen_length=64, block_length=32, steps=8, stats=stats)
    assert len(out) == 64
    assert stats.accepted_per_pass == [32, 32]
    assert fake.calls == 2 and fake.commits == [0, 32, 64]  # prompt prefill, then each finished block


def test_stop_token_ends_generation_early():
    STOP = 45
    fake = Scripted(want=lambda p: STOP if p == 37 else 3, conf=lambda p: 0.99)
    cfg = dict(gen_length=200, block_length=32, steps=4, stop_ids=(STOP,))
    out = sample(fake, [1] * 32, MASK, **cfg)
    assert out == [3] * 5
    assert fake.calls == 1  # stopped inside the first generated block, nothing after it


def test_vocab_range_restricts_the_output():
    fake = Scripted(want=lambda p: 2)
    out = sample(fake, [1] * 3, MASK, gen_length=8, block_length=8, steps=2, vocab_range=(10, 20))
    assert all(10 <= t < 20 for t in out)


def test_seeded_sampling_is_reproducible():
    fake = Scripted(conf=lambda p: 0.3)
    cfg = dict(gen_length=32, block_length=32, steps=8, temperature=1.0, top_k=5)
    a = sample(fake, [1], MASK, **cfg, generator=torch.Generator().manual_seed(7))
    b = sample(fake, [1], MASK, **cfg, generator=torch.Generator().manual_seed(7))
    c = sample(fake, [1], MASK, **cfg, generator=torch.Generator().manual_seed(8))
    assert a == b and a != c


class Uncached:
    """Reference adapter: recompute the whole window with the block-causal mask every step."""

    def __init__(self, model, prompt_len):
        self.model, self.committed = model, torch.empty(0, dtype=torch.long)

    def logits(self, tokens, start):
        ids = torch.cat((self.committed[:start], tokens))[None]
        n = ids.shape[1]
        mask = block_causal_mask(n, 32)[None, None]
        return self.model(ids, torch.arange(n)[None], mask)[0, start:]

    def commit(self, tokens, start):
        self.committed = torch.cat((self.committed[:start], tokens))


class Cached:
    def __init__(self, model, max_len):
        self.model, self.cache = model, model.make_cache(1, max_len)

    def logits(self, tokens, start):
        pos = torch.arange(start, start + len(tokens))[None]
        return self.model(tokens[None], pos, None, self.cache, commit=False)[0]

    def commit(self, tokens, start):
        pos = torch.arange(start, start + len(tokens))[None]
        self.model(tokens[None], pos, None, self.cache, commit=True)


def test_cached_and_uncached_runs_agree_on_the_tiny_model(tiny_dir):
    from llada_cli.checkpoint.components import load_backbone

    model = load_backbone(tiny_dir, dtype=torch.float32)
    prompt = list(range(5, 45))
    cfg = dict(gen_length=48, block_length=32, steps=8, threshold=0.95)
    a = sample(Uncached(model, len(prompt)), prompt, 2, **cfg)
    b = sample(Cached(model, 128), prompt, 2, **cfg)
    assert a == b and len(a) == 48


def test_left_padded_companion_row_equals_the_row_run_alone(tiny_dir):
    from llada_cli.checkpoint.components import load_backbone
    from llada_cli.pipelines.runner import BackboneRunner

    model = load_backbone(tiny_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    cond = torch.randint(0, 700, (70,), generator=g).tolist()
    uncond = torch.randint(0, 700, (6,), generator=g).tolist()  # pad = 64, two whole blocks
    block = torch.randint(0, 700, (32,), generator=g)
    both = BackboneRunner(
        model, [cond, uncond], mask_id=2, gen_length=60, settings=SamplerSettings(block_length=32)
    )
    both.commit(torch.tensor(cond[:64]), 0)
    rows = both.logits(torch.cat((torch.tensor(cond[64:]), block[6:])), 64)
    alone = BackboneRunner(
        model, [uncond], mask_id=2, gen_length=60, settings=SamplerSettings(block_length=32)
    )
    single = alone.logits(torch.cat((torch.tensor(uncond), block[6:])), 0)
    assert rows.shape == (2, 32, model.cfg.vocab_size)
    assert torch.isfinite(rows).all()
    assert torch.allclose(rows[1], single[0], atol=1e-5)
    causal = block_causal_mask(96, 32)[None, None]
    full = model(torch.tensor([cond + block[6:].tolist()]), torch.arange(96)[None], causal)
    assert torch.allclose(rows[0], full[0, 64:], atol=1e-5)


def test_guidance_combiners():
    from llada_cli.sampling import guidance

    rows = torch.randn(3, 4, 10)
    assert torch.allclose(guidance.simple(1.0)(rows[:2]), rows[0])
    assert torch.allclose(guidance.simple(3.0)(rows[:2]), rows[1] + 3 * (rows[0] - rows[1]))
    assert torch.allclose(guidance.three_way(2.0, 0.0)(rows), guidance.simple(2.0)(rows[:2]))
    expected = rows[1] + 2 * (rows[0] - rows[1]) + 1.5 * (rows[1] - rows[2])
    assert torch.allclose(guidance.three_way(2.0, 1.5)(rows), expected)


def test_mask_id_is_never_sampled():
    fake = Scripted(want=lambda p: MASK, conf=lambda p: 0.99)
    out = sample(fake, [1] * 4, MASK, gen_length=12, block_length=8, steps=2)
    assert len(out) == 12 and MASK not in out


def test_recompute_mode_equals_the_exact_cache_with_guidance_rows(tiny_dir):
    """The performance suite's baseline recomputes the whole canvas every step; with left-padded CFG rows
    it must pick exactly what the cached runner picks, and never build a cache."""
    from llada_cli.checkpoint.components import load_backbone
    from llada_cli.pipelines import runner as runner_mod
    from llada_cli.sampling import guidance

    model = load_backbone(tiny_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    cond = torch.randint(3, 700, (45,), generator=g).tolist()
    uncond = torch.randint(3, 700, (9,), generator=g).tolist()
    cfg = dict(gen_length=50, block_length=32, steps=8, threshold=0.95, vocab_range=(768, 1024))

    def decode(prefix_cache):
        settings = SamplerSettings(block_length=32, steps=8, prefix_cache=prefix_cache)
        r = runner_mod.BackboneRunner(model, [cond, uncond], 2, 50, settings)
        return r, sample(r, cond, 2, **cfg, prefix_cache=prefix_cache, guidance=guidance.simple(2.0))

    exact_runner, exact = decode("exact")
    calls = []
    hook = model.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[1]))
    recompute_runner, recomputed = decode("recompute")
    hook.remove()
    assert recomputed == exact and len(exact) == 50
    assert recompute_runner.cache is None and exact_runner.cache is not None
    assert calls[0] == 64 and calls[-1] == 96  # each step runs everything up to its block's end


# --- The last block's tail (issue 14.1) -----------------------------------------------------------------
# Official rule (`generate_bd_image_logic`): the canvas is prompt + gen_length masks padded to a whole
# block; `active = current[:, -block_length:] == mask_id` takes every masked position of the block, the
# padding included; the quota and threshold race is over all of them; only the returned
# `x[:, :prompt_length + gen_length]` is cut. Steps are `min(steps, gen_length // minimal_topk)`.


def official_block_diffusion(logits_fn, prompt, gen_length, L, steps, threshold, mask_id):
    """The official loop, transcribed (greedy, one row, no early stop): `logits_fn(window, start)` sees the
    canvas up to the current block's end and gives the block's logits. Returns the whole canvas and the
    forward passes spent on each block."""
    steps = min(steps, gen_length // 1)
    P = len(prompt)
    n_blocks = (P + gen_length + L - 1) // L
    x = torch.full((n_blocks * L,), mask_id, dtype=torch.long)
    x[:P] = torch.tensor(prompt)
    schedule = torch.full((steps,), L // steps, dtype=torch.int64)
    schedule[: L % steps] += 1
    passes = []
    for b in range(P // L, n_blocks):
        current, n = x[: (b + 1) * L], 0
        for s in range(steps):
            active = current[-L:] == mask_id
            if not active.any():
                break
            probs = logits_fn(current.clone(), b * L).softmax(-1)
            n += 1
            confidence, tokens = probs.max(-1)
            scores = torch.where(active, confidence, -torch.inf)
            count = int(schedule[s])
            high = scores > threshold
            selected = torch.zeros(L, dtype=torch.bool)
            if int(high.sum()) >= count:
                selected = high
            else:
                selected[torch.topk(scores, k=min(count, int(active.sum()))).indices] = True
            current[-L:][selected] = tokens[selected]
        passes.append(n)
    return x, passes


class Contextual:
    """Predictions that depend on what the block already holds, so any difference in which positions
    were written (the tail's included) changes later tokens and confidences."""

    def __init__(self):
        self.seen: list[torch.Tensor] = []
        self.commits: list[int] = []

    def logits(self, tokens, start):
        self.seen.append(tokens.clone())
        written = int((tokens != MASK).sum()) + int(tokens[tokens != MASK].sum())
        out = torch.zeros(len(tokens), V)
        out[:, MASK] = -torch.inf  # the sampler never picks the mask id; keep it out of the softmax too
        for i in range(len(tokens)):
            p = start + i
            out[i, (p * 7 + written) % 40] = 2.0 + ((p * 13 + written) % 11) / 3
        return out

    def commit(self, tokens, start):
        self.commits.append(start)


@pytest.mark.parametrize("P, G, L, S", [(5, 10, 16, 4), (37, 29, 32, 8), (3, 58, 32, 32), (20, 7, 16, 16)])
def test_the_sampler_follows_the_official_loop_for_a_partial_last_block(P, G, L, S):
    prompt = [(3 * i + 1) % 40 for i in range(P)]
    fake = Contextual()
    reference, passes = official_block_diffusion(
        lambda window, start: fake.logits(window[start:], start), prompt, G, L, S, 0.95, MASK
    )
    stats = SamplerStats()
    out = sample(Contextual(), prompt, MASK, gen_length=G, block_length=L, steps=S, stats=stats)
    assert out == reference[P : P + G].tolist()
    blocks = len(passes)
    assert stats.forward_passes - stats.committed_blocks - (1 if P // L else 0) == sum(passes)
    assert stats.committed_blocks == blocks
    held = sample(Contextual(), prompt, MASK, gen_length=G, block_length=L, steps=S, tail="hold")
    assert held != out  # the earlier rule commits other positions in the last block: other tokens


def test_the_cached_runner_on_the_tiny_model_follows_the_official_loop(tiny_dir):
    """The real backbone through the exact prefix cache, against the official loop's whole-window
    recompute, on a prompt whose answer ends inside a block."""
    from llada_cli.checkpoint.components import load_backbone
    from llada_cli.pipelines.runner import BackboneRunner

    model = load_backbone(tiny_dir, dtype=torch.float32)
    prompt = torch.randint(3, 700, (41,), generator=torch.Generator().manual_seed(5)).tolist()

    def whole_window(window, start):
        n = len(window)
        return model(window[None], torch.arange(n)[None], block_causal_mask(n, 32)[None, None])[0, start:]

    mask_id = 2
    with torch.no_grad():
        reference, _ = official_block_diffusion(whole_window, prompt, 37, 32, 8, 0.95, mask_id)
    cfg = dict(gen_length=37, block_length=32, steps=8)  # 41 + 37 = 78: 18 tail positions
    out = sample(
        BackboneRunner(model, [prompt], mask_id, 37, SamplerSettings(block_length=32)),
        prompt,
        mask_id,
        **cfg,
        include_stop=True,
    )
    assert out == reference[41:78].tolist()


@pytest.mark.parametrize("sprint", [False, True])
def test_tail_positions_compete_for_the_quota_and_later_steps_see_them(sprint):
    # prompt 5 + gen 10 = 15 in one 16-token block: position 15 is the tail; it is the surest position
    from llada_cli.sampling.sprint import SprintSettings

    fake = Scripted(want=lambda p: 30 if p == 15 else p % 20, conf=lambda p: 0.9 if p == 15 else 0.5)
    cfg = dict(gen_length=10, block_length=16, steps=4, sprint=SprintSettings() if sprint else None)
    events = []
    out = sample(fake, [1] * 5, MASK, **cfg, on_step=events.append)
    k = 3 if sprint else 4  # SPRINT: ceil(11 masked / 4 steps left); exact: the quota of 4
    assert 15 in events[0].positions and len(events[0].positions) == k  # the tail takes part in the race
    assert all(e.end == 15 for e in events)
    assert events[-1].block_tokens[-1] == 30  # the tail was written, and stays in the block
    assert out == [p % 20 for p in range(5, 15)]  # exactly gen_length tokens: the tail is cut
    held = []
    sample(fake, [1] * 5, MASK, gen_length=10, block_length=16, steps=4, tail="hold", on_step=held.append)
    assert all(15 not in e.positions for e in held) and held[-1].block_tokens[-1] == MASK


def test_later_steps_of_the_block_see_the_tail_token():
    model = Contextual()
    sample(model, [1] * 5, MASK, gen_length=10, block_length=16, steps=10)
    written = [i for i, seen in enumerate(model.seen) if seen[15] != MASK]
    assert written and written[-1] == len(model.seen) - 1  # once written, every later step sees it


def test_steps_never_exceed_gen_length():
    # official: steps = min(steps, gen_length); 8 tokens in a 32 block at steps 32 -> 8 steps of 4
    fake, stats = Scripted(), SamplerStats()
    sample(fake, [1] * 32, MASK, gen_length=8, block_length=32, steps=32, stats=stats)
    assert stats.accepted_per_pass == [4] * 8


def test_a_stop_written_in_the_tail_ends_the_run_without_returning_it():
    STOP = 45
    # gen 10 after a 5-token prompt: positions 5..14 are text, the tail (15) is where the stop lands
    fake = Scripted(want=lambda p: STOP if p == 15 else 3, conf=lambda p: 0.99)
    cfg = dict(gen_length=10, block_length=16, steps=4, stop_ids=(STOP,))
    assert sample(fake, [1] * 5, MASK, **cfg, include_stop=True) == [3] * 10
    # a stop inside the answer still ends it early, with nothing after it
    fake = Scripted(want=lambda p: STOP if p == 9 else 3, conf=lambda p: 0.99)
    assert sample(fake, [1] * 5, MASK, **cfg, include_stop=True) == [3, 3, 3, 3, STOP]


# --- The block step without host syncs (issue 18.2) -----------------------------------------------------


class NoHostSync:
    """Inside it, reading a tensor's value on the host (bool, int, float, item, tolist) raises: on a GPU
    each of those makes the host wait for the device."""

    NAMES = ("__bool__", "__int__", "__float__", "item", "tolist")

    def __enter__(self):
        self.saved = {n: getattr(torch.Tensor, n) for n in self.NAMES}

        def refuse(*_a, **_k):
            raise AssertionError("a host sync in the step")

        for n in self.NAMES:
            setattr(torch.Tensor, n, refuse)

    def __exit__(self, *exc):
        for n, f in self.saved.items():
            setattr(torch.Tensor, n, f)


def official_selection(confidence, active, count, threshold):
    """The official step's choice (generate_bd_image_logic), as in official_block_diffusion."""
    scores = torch.where(active, confidence, -torch.inf)
    high = scores > threshold
    if int(high.sum()) >= count:
        return high
    selected = torch.zeros_like(active)
    selected[torch.topk(scores, k=min(count, int(active.sum()))).indices] = True
    return selected


def test_the_quota_rule_needs_no_host_sync_and_chooses_as_the_official_step():
    from llada_cli.sampling.block_diffusion import choose_transfer

    gen = torch.Generator().manual_seed(0)
    cases = 0
    for L in (8, 32):
        for _ in range(60):
            conf = torch.rand(L, generator=gen)
            if cases % 3 == 0:  # ties: the scripted models give every position the same confidence
                conf = (conf * 3).floor() / 3
            if cases % 5 == 0:
                conf[: L // 2] = 0.99  # enough above the threshold
            active = torch.rand(L, generator=gen) < (0.2 + 0.8 * (cases % 4) / 3)
            quota = 1 + cases % L
            with NoHostSync():
                ours = choose_transfer(conf, active, quota, 0.95)
            assert torch.equal(ours, official_selection(conf, active, quota, 0.95)), (L, quota)
            cases += 1
    with pytest.raises(AssertionError, match="host sync"), NoHostSync():
        official_selection(torch.rand(4), torch.ones(4, dtype=torch.bool), 2, 0.95)  # the guard bites
