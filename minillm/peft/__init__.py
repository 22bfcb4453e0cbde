"""Parameter-efficient fine-tuning (chapter 9): transforms of a finished model that train a few new weights.

- `minillm.peft.lora`: LoRA adapters (`apply_lora`, merge / unmerge, adapter-only state dicts, sizes).
"""

from minillm.peft.lora import (
    CHATGLM_6B,
    LoraConfig,
    LoRALinear,
    apply_lora,
    base_param_count,
    linear_shapes,
    load_lora_state_dict,
    lora_layers,
    lora_param_count,
    lora_scaling,
    lora_size_table,
    lora_state_dict,
    merge_and_unload,
    merge_lora,
    unmerge_lora,
)

__all__ = [
    "CHATGLM_6B",
    "LoRALinear",
    "LoraConfig",
    "apply_lora",
    "base_param_count",
    "linear_shapes",
    "load_lora_state_dict",
    "lora_layers",
    "lora_param_count",
    "lora_scaling",
    "lora_size_table",
    "lora_state_dict",
    "merge_and_unload",
    "merge_lora",
    "unmerge_lora",
]

# ---- QLoRA (minillm.peft's NF4 module): its public names are added here, below this line, at merge.
