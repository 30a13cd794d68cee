"""A method's typed configuration: its name, the frame count, and the options of each of
its mechanisms, composed from the mechanisms' own option dataclasses (PEFT style: the
options of context prompts live in ``context_prompts.py``, next to the module).

``MethodConfig`` is the common base; the registry composes one frozen dataclass per method
(``config_class(name)``), so a method accepts exactly the options its parts read and a
misspelt or inapplicable option fails loudly. Configs round-trip through ``to_dict`` /
``vop.methods.config_from_dict`` (the form stored in checkpoints and indexes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields, replace
from typing import Any

from vop.defaults import NUM_FRAMES
from vop.methods.mechanism import Options, check_at_least

# Checkpoints and indexes written before per-method options (one flat config for every
# method) record every option, applicable or not, at these values. Reading one drops the
# options the method does not take (they never changed its model).
LEGACY_DEFAULTS: dict[str, Any] = {
    "text_prompt_length": 8, "text_prompt_layout": "prefix", "visual_prompt_length": 8,
    "specific_prompt_length": 4, "prompt_depth": None, "intra_layers": None, "video_prompt_length": 8,
    "context_hidden": None, "adapter_width": 64, "prompt_init_std": 0.02, "frame_pos_init_std": 0.02,
    "frame_pos_lr_scale": 1.0, "context_lr_scale": 1.0, "bias_include_norm": False,
}


@dataclass(frozen=True, kw_only=True)
class MethodConfig(Options):
    method: str  # registry name, e.g. "vop-fc"
    num_frames: int = NUM_FRAMES  # frames per video; fixes the size of frame-position tables

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 1, "num_frames")

    @classmethod
    def option_names(cls) -> list[str]:
        """The options this config class takes (``num_frames`` included, ``method`` not)."""
        return [f.name for f in fields(cls) if f.name != "method"]

    def to_dict(self) -> dict[str, Any]:
        out = {"method": self.method}
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "method"})
        return out

    def updated(self, **changes: Any) -> "MethodConfig":
        return replace(self, **changes)


def compose(name: str, parts_options: list[type[Options]]) -> type[MethodConfig]:
    """One frozen dataclass inheriting ``MethodConfig`` and every part's options class.
    Parts that share an option (``prompt_depth``) share it through a common base class."""
    bases: list[type] = [MethodConfig]
    for options in parts_options:
        if options is not Options and not any(issubclass(b, options) for b in bases):
            bases = [b for b in bases if not issubclass(options, b) or b is MethodConfig] + [options]
    seen: dict[str, Any] = {}
    for base in bases:
        for f in fields(base):
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.name in seen and seen[f.name] != default:
                raise ValueError(f"method {name!r}: option {f.name!r} has two different defaults in its parts")
            seen[f.name] = default
    class_name = "".join(w.capitalize() for w in name.replace("_", "-").split("-")) + "Config"
    try:
        return dataclasses.make_dataclass(class_name, [], bases=tuple(bases), frozen=True, kw_only=True)
    except TypeError as exc:  # an inconsistent MRO: two parts' options classes conflict
        raise ValueError(f"method {name!r}: its parts' option classes cannot be combined ({exc})") from exc
