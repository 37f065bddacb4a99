"""Deprecated: the image preprocessing moved to janus_sdk.images, conversations and prompts to
janus_sdk.prompts; this module re-exports them for one release."""

from janus_sdk import images, prompts
from janus_sdk.deprecation import moved_names

__getattr__ = moved_names(
    __name__,
    dict.fromkeys(("ImageProcessorConfig", "ImageProcessor"), images)
    | dict.fromkeys(
        (
            "IMAGE_TAG",
            "IMAGE_START_TAG",
            "IMAGE_END_TAG",
            "ProcessorConfig",
            "Message",
            "UnderstandingInputs",
            "build_understanding_inputs",
            "check_text",
            "expand_image_tokens",
            "format_generation_prompt",
            "build_generation_prompt_ids",
            "guidance_rows",
            "sample_rows",
            "left_pad",
        ),
        prompts,
    ),
)
