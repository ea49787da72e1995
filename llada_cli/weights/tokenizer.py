"""The tiny text tokenizer: a byte-level BPE with the real special-token strings.

Ids differ from the real tokenizer (which has 157,184 text ids); every code path looks tokens up by their
string, so only the strings and the layout matter: text ids first, image codes `<IMAGE{k}>` from
`image_token_offset` on. Reserved tokens fill the gap, as they do in the real Ling-2 vocabulary.
"""

from __future__ import annotations

# The strings the real Uni tokenizer carries (see shared checkpoint facts); order is ours.
SPECIAL_TOKENS = (
    "<|startoftext|>",
    "<|endoftext|>",
    "<|mask|>",
    "<|role_end|>",
    "<|image|>",
    "<|/image|>",
    "<boi>",
    "<role>",
    "</role>",
    "<uncondition>",
)
_CORPUS = (
    "You are a multimodal understanding assistant. Describe this image in detail.",
    "You are a text-to-image generation assistant. You are an image editing assistant.",
    "A red fox jumps over the lazy dog in a quiet green forest at sunrise.",
    "The quick brown cat sat on the warm mat and looked at the bright blue sky.",
    "Write a short illustrated guide to making tea: boil water, add leaves, wait, pour.",
    "hello world, what is in this picture? a photo of a mountain lake with snow.",
)


def build_tokenizer(bpe_vocab: int, image_token_offset: int, image_vocab: int):
    """Return a `tokenizers.Tokenizer` with specials, reserved fill-up tokens and image-code tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(list(_CORPUS) * 4, trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    n_reserved = image_token_offset - tok.get_vocab_size()
    if n_reserved < 256:
        raise ValueError("image_token_offset leaves room for fewer than 256 reserved tokens")
    tok.add_special_tokens([f"<|reserved_token_{n}|>" for n in range(n_reserved)])
    tok.add_special_tokens([f"<IMAGE{k}>" for k in range(image_vocab)])
    assert tok.token_to_id("<IMAGE0>") == image_token_offset
    return tok


def tokenizer_config(eos: str = "<|endoftext|>") -> dict:
    """tokenizer_config.json in the LLaDA2 family's shape (no BOS or EOS added on encode)."""
    return {
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": "<|startoftext|>",
        "eos_token": eos,
        "pad_token": eos,
        "mask_token": "<|mask|>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
