"""Parameter-efficient fine-tuning (chapter 9): transforms of a finished model that train a few new weights.

- `minillm.peft.lora`: LoRA adapters (`apply_lora`, merge / unmerge, adapter-only state dicts, sizes);
- `minillm.peft.nf4`: QLoRA's 4-bit NormalFloat (blockwise quantisation, double quantisation, `LinearNF4`);
- `minillm.peft.qlora`: NF4 base + LoRA in one call, and the memory of full / LoRA / QLoRA fine-tuning;
- `minillm.peft.adalora`: AdaLoRA (SVD-form adapters, importance scores, the cubic rank budget);
- `minillm.peft.adapters`: Houlsby (serial) and parallel bottleneck adapters, AdapterDrop's layer choice;
- `minillm.peft.prompts` / `minillm.peft.prefix`: prompt tuning, P-tuning, prefix tuning, P-tuning v2, MAM.
"""

from minillm.peft.adalora import (
    AdaLoraConfig,
    RankAllocator,
    SVDLinear,
    adalora_layers,
    adalora_state_dict,
    apply_adalora,
    budget_schedule,
    load_adalora_state_dict,
    orth_regularizer,
)
from minillm.peft.adapters import (
    AdapterConfig,
    Bottleneck,
    ParallelAdapter,
    SerialAdapter,
    adapter_modules,
    adapter_param_count,
    adapter_state_dict,
    apply_adapters,
    load_adapter_state_dict,
)
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
from minillm.peft.nf4 import (
    NF4_CODE,
    LinearNF4,
    bits_per_parameter,
    dequantize_nf4,
    quantize_model_nf4,
    quantize_nf4,
)
from minillm.peft.prompts import (
    PrefixModel,
    PrefixTuningConfig,
    PromptModel,
    PromptTuningConfig,
    PTuningConfig,
    apply_mam,
    apply_p_tuning,
    apply_prefix_tuning,
    apply_prompt_tuning,
    load_prefix_state_dict,
    load_prompt_state_dict,
    prefix_param_count,
    prefix_state_dict,
    prompt_param_count,
    prompt_state_dict,
)
from minillm.peft.qlora import apply_qlora, finetune_memory, memory_table

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
    # QLoRA
    "NF4_CODE",
    "LinearNF4",
    "apply_qlora",
    "bits_per_parameter",
    "dequantize_nf4",
    "finetune_memory",
    "memory_table",
    "quantize_model_nf4",
    "quantize_nf4",
    # AdaLoRA
    "AdaLoraConfig",
    "RankAllocator",
    "SVDLinear",
    "adalora_layers",
    "adalora_state_dict",
    "apply_adalora",
    "budget_schedule",
    "load_adalora_state_dict",
    "orth_regularizer",
    # adapters and prompts (9.4)
    "AdapterConfig",
    "Bottleneck",
    "ParallelAdapter",
    "SerialAdapter",
    "adapter_modules",
    "adapter_param_count",
    "adapter_state_dict",
    "apply_adapters",
    "load_adapter_state_dict",
    "PrefixModel",
    "PrefixTuningConfig",
    "PromptModel",
    "PromptTuningConfig",
    "PTuningConfig",
    "apply_mam",
    "apply_p_tuning",
    "apply_prefix_tuning",
    "apply_prompt_tuning",
    "load_prefix_state_dict",
    "load_prompt_state_dict",
    "prefix_param_count",
    "prefix_state_dict",
    "prompt_param_count",
    "prompt_state_dict",
]
