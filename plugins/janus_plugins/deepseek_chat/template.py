"""The official "deepseek" conversation format (janus/utils/conversation.py, DeepSeek separator style).

Rules, as the official `Conversation.get_prompt` and
`VLChatProcessor.apply_sft_template_for_multi_turn_prompts` apply them:

- a non-empty system prompt comes first, followed by `sep` ("\\n\\n");
- a turn with content renders as ``role + ": " + content`` followed by `sep` at even positions (user turns)
  and `sep2` (the EOS text) at odd positions (assistant turns);
- an empty turn renders as ``role + ":"`` (no space: an empty last assistant turn gives "<|Assistant|>:",
  leaving the prompt open for the answer);
- each content is strip()-ed, and so is the whole prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from janus_sdk.errors import InputError
from janus_sdk.registry import BuildContext

JANUS_PRO_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)
"""The system prompt the official VLChatProcessor always prepends to understanding conversations."""


class DeepSeekChatConfig(BaseModel):
    """The official "deepseek" template's strings (names follow the official `Conversation` fields)."""

    model_config = ConfigDict(extra="forbid")

    user_role: str = Field(default="<|User|>", description="Role string of user turns (roles[0]).")
    assistant_role: str = Field(
        default="<|Assistant|>", description="Role string of assistant turns (roles[1])."
    )
    sep: str = Field(default="\n\n", description="Text after the system prompt and after each user turn.")
    sep2: str = Field(
        default="<｜end▁of▁sentence｜>",
        description="Text after each completed assistant turn (the EOS token).",
    )
    image_tag: str = Field(
        default="<image_placeholder>", description="Text marking where an image goes in a turn's content."
    )
    system_prompt: str = Field(
        default=JANUS_PRO_SYSTEM_PROMPT,
        description="System prompt used for understanding when the caller gives none (the official Janus-Pro "
        "one; text-to-image prompts use an empty system prompt, as the official script does).",
    )


class DeepSeekChatTemplate:
    """Renders (role, content) turns, whose roles are this template's `user_role` / `assistant_role`."""

    def __init__(self, config: DeepSeekChatConfig | None = None) -> None:
        self.config = config or DeepSeekChatConfig()
        self.image_tag = self.config.image_tag
        self.user_role = self.config.user_role
        self.assistant_role = self.config.assistant_role
        self.default_system_prompt = self.config.system_prompt

    def render(self, turns: Sequence[tuple[str, str]], system_prompt: str) -> str:
        """The prompt string for `turns` (see the module docstring for the rules)."""
        roles = (self.user_role, self.assistant_role)
        separators = (self.config.sep, self.config.sep2)
        parts = [system_prompt + self.config.sep] if system_prompt else []
        for i, (role, content) in enumerate(turns):
            if role not in roles:
                raise InputError(
                    f"turn {i} has role {role!r}; this template knows only {roles[0]!r} and {roles[1]!r}"
                )
            text = content.strip()
            parts.append(f"{role}: {text}{separators[i % 2]}" if text else f"{role}:")
        return "".join(parts).strip()


def build_deepseek_template(config: DeepSeekChatConfig, context: BuildContext) -> DeepSeekChatTemplate:
    """The official "deepseek" conversation format of Janus / Janus-Pro."""
    return DeepSeekChatTemplate(config)
