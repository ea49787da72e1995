"""Image-code generation: rows and guidance, the image-code range, exact counts, thinking mode."""

from __future__ import annotations

import pytest
import torch

from llada_cli.checkpoint.components import load_backbone
from llada_cli.inputs.prompts import t2i_thinking_prompt
from llada_cli.inputs.tokenizer import TextTokenizer
from llada_cli.pipelines.text2image import TextToImage, ThinkingFailed
from llada_cli.sampling.settings import SamplerSettings
from llada_cli.settings import ImageSettings

from .conftest import ScriptedBackbone


@pytest.fixture(scope="module")
def parts(tiny_dir):
    return load_backbone(tiny_dir, "cpu", torch.float32), TextTokenizer(tiny_dir / "tokenizer.json")


def test_guidance_rows_and_exact_code_count(parts):
    model, tok = parts
    gen = TextToImage(model, tok)
    fake = ScriptedBackbone(model, [], tok.ids["eos"], 10**6, image_fallback=True)
    gen.model = fake
    result = gen.generate("a boat", (3, 5), ImageSettings(cfg=3.0, sampler=SamplerSettings(steps=4)), seed=0)
    assert len(result.codes) == 15 and all(0 <= c < 7 for c in result.codes)
    assert set(fake.rows_seen) == {2}  # conditional + <uncondition>
    fake.rows_seen.clear()
    gen.generate("a boat", (3, 5), ImageSettings(cfg=1.0, sampler=SamplerSettings(steps=4)), seed=0)
    assert set(fake.rows_seen) == {1}  # guidance off: one row only


def test_thinking_writes_reasoning_then_draws(parts):
    model, tok = parts
    gen = TextToImage(model, tok)
    prompt_len = len(gen.ids(t2i_thinking_prompt("a kite")))
    header = [
        tok.ids["image_start"],
        tok.token_id("<|reserved_token_2|>"),
        tok.token_id("<|reserved_token_3|>"),
        tok.ids["boi"],
    ]
    fake = ScriptedBackbone(
        model, tok.encode("A red kite over hills.") + header, tok.ids["eos"], prompt_len, image_fallback=True
    )
    gen.model = fake
    result = gen.generate(
        "a kite",
        (2, 3),
        ImageSettings(thinking=True, sampler=SamplerSettings(steps=4), thinking_length=64),
        seed=0,
    )
    assert result.thinking == "A red kite over hills."
    assert len(result.codes) == 6 and result.thinking_stats.forward_passes > 0


def test_thinking_without_an_image_header_is_a_clear_error(parts):
    model, tok = parts
    gen = TextToImage(model, tok)
    gen.model = ScriptedBackbone(model, tok.encode("just words"), tok.ids["eos"], 0, image_fallback=True)
    with pytest.raises(ThinkingFailed, match="without opening an image"):
        gen.generate(
            "a kite",
            (2, 2),
            ImageSettings(thinking=True, sampler=SamplerSettings(steps=4), thinking_length=64),
            seed=0,
        )


def test_real_tiny_model_codes_stay_in_the_image_range(parts):
    model, tok = parts
    result = TextToImage(model, tok).generate("a fox", (4, 4), ImageSettings(), seed=1)
    assert len(result.codes) == 16 and all(0 <= c < model.cfg.image_vocab_size for c in result.codes)
