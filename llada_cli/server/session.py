"""`llada chat --server`: the conversation is kept here and each answer asked of the server, so the
one-shot command and the REPL (its /set, /save, /edit) behave as they do locally."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError
from ..pipelines.chat import ChatSession


@dataclass(kw_only=True)
class RemoteAnswerResult:
    """One answer from a server, with what `chat --json` prints locally (what the server did not say is null)."""

    answer: str
    seed: int | None
    prompt_tokens: int | None
    generated_tokens: int | None
    seconds: float
    settings: object
    images: list = field(default_factory=list)  # LoadedImage sent with the question
    server: str = ""

    def record(self) -> dict:
        s = self.settings
        flat = {**s.sampler.record(), "max_tokens": s.max_tokens, "system": s.system}
        return {
            "answer": self.answer,
            "seed": self.seed,
            "settings": flat | {"seed": self.seed},
            "images": [i.record() for i in self.images],
            "tokens": {"prompt": self.prompt_tokens, "generated": self.generated_tokens, "image": None},
            "memory": {},
            "quant": None,
            "sampler": None,
            "server": {"url": self.server, "seconds": round(self.seconds, 4)},
        }


@dataclass
class RemoteSession(ChatSession):
    """A ChatSession whose `engine` is a server.client.Remote."""

    remote = True  # answers stream as text from the server, not as sampler steps

    def user_turn(self, text: str, images: list = ()) -> tuple:
        if not text.strip():
            raise UsageError("the prompt is empty", "type a question")
        return ("user", text, list(images)), []  # images go to the server as they are

    def ask(self, text: str, images: list = (), on_text=None, turn=None) -> RemoteAnswerResult:
        user, _ = turn or self.user_turn(text, images)
        reply = self.engine.answer([*self.turns, user], self.settings, on_text)
        self.turns += [user, ("assistant", reply.answer, [])]
        sources = [{"source": i.source, "sha256": i.sha256} for i in user[2]]
        self.log += [
            {"role": "user", "content": text, "images": sources},
            {"role": "assistant", "content": reply.answer, "seed": reply.seed},
        ]
        return RemoteAnswerResult(
            answer=reply.answer, seed=reply.seed, prompt_tokens=reply.prompt_tokens,
            generated_tokens=reply.generated_tokens, seconds=reply.seconds, settings=self.settings,
            images=list(user[2]), server=self.engine.url,
        )  # fmt: skip

    def edit_image(self, image, instruction: str, settings, decoder, seed: int):
        """(picture, its record, the source's record) for the REPL's /edit."""
        picture = self.engine.edit([image], instruction, settings, decoder, seed)
        source = (picture.record.images or [{}])[0]
        return picture.image, picture.record.to_json(), source
