"""The text tokenizer, on the `tokenizers` library: no BOS on encode, specials looked up by string.

No token id is written in code: every special token is found by its string in `tokenizer.json`, and a
missing one is a clear error. Image code k is the token `<IMAGE{k}>` at `image_token_offset + k`.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, CorruptFile

# Strings the Uni prompts need as single tokens. `<uncondition>` may be several pieces in the real
# vocabulary (the evidence is split), so it only has to encode.
REQUIRED_SPECIALS = {
    "eos": "<|endoftext|>",
    "mask": "<|mask|>",
    "image_start": "<|image|>",
    "image_end": "<|/image|>",
    "boi": "<boi>",
    "role_open": "<role>",
    "role_close": "</role>",
}
UNCONDITION = "<uncondition>"


def reserved_token(n: int) -> str:
    """Grid-size tokens: `<|reserved_token_H|><|reserved_token_W|>` carry an image's rows and columns."""
    return f"<|reserved_token_{n}|>"


class TextTokenizer:
    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a plain Exception for any parse failure
            raise CorruptFile(
                f"{path} cannot be read as a tokenizer: {exc}", "re-run `llada download MODEL`"
            ) from None
        self.path = Path(path)
        self.ids = {name: self.token_id(text) for name, text in REQUIRED_SPECIALS.items()}
        self.token_id(reserved_token(1))

    def token_id(self, text: str) -> int:
        token_id = self._tok.token_to_id(text)
        if token_id is None or self._tok.encode(text, add_special_tokens=False).ids != [token_id]:
            raise ConfigError(
                f"{self.path.name} lacks the special token {text}",
                "this tokenizer is not LLaDA2.0-Uni's; re-run `llada download MODEL`",
            )
        return token_id

    def reserved_value(self, token_id: int) -> int | None:
        """N for the id of `<|reserved_token_N|>` (a grid side in an image header), else None."""
        import re

        text = self._tok.id_to_token(token_id) or ""
        m = re.fullmatch(r"<\|reserved_token_(\d+)\|>", text)
        return int(m.group(1)) if m else None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """Ids without BOS; with allow_special=False a `<role>` typed by a user stays plain text."""
        self._tok.encode_special_tokens = not allow_special
        try:
            return self._tok.encode(text, add_special_tokens=False).ids
        finally:
            self._tok.encode_special_tokens = False

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    def check_image_offset(self, image_token_offset: int) -> None:
        """`<IMAGE0>` must sit at the config's `image_token_offset`, or image codes would be misread."""
        found = self._tok.token_to_id("<IMAGE0>")
        if found is not None and found != image_token_offset:
            raise ConfigError(
                f"{self.path.name} puts <IMAGE0> at {found}, "
                f"but config.json says image_token_offset {image_token_offset}"
            )
