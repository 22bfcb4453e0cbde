# Exercise cells of chapter 12, section 12.3 (ZeRO-Offload and DeepSpeed), to be joined into exercises/src/12_*.py
# by the coordinator (percent format: "# %%" starts a code cell, "# %% [markdown]" a markdown cell). Checkers:
# minillm/grading/ch12_offload.py (OFFLOAD_EXERCISES); ids 12.7-12.8 may be renumbered when joined.

# %%
from minillm.grading import check

# %% [markdown]
# ## 12.7 ZeRO-Offload: bytes on the GPU, on the CPU and over PCIe (1 point)
#
# Read first: [12.3 ZeRO-Offload and DeepSpeed](../notebooks/12_zero_fsdp/03_offload_deepspeed.ipynb), sections
# 1, 2 and 4. One GPU trains a model of $\Psi$ parameters with Adam in mixed precision under ZeRO-Offload. The GPU
# keeps what forward and backward need: the low-precision weights (`weight_bytes` per parameter) and the gradients
# backward produces (`grad_bytes` per parameter; count them all, as if every gradient waited on the GPU for the
# step: the upper bound, section 4's `bucket_numel=inf`). Everything the optimizer needs lives on the CPU: Adam's fp32
# master weights, $m$ and $v$, and the gradients as the CPU stores them (`host_grad_bytes` per parameter). Each
# step the gradients go from the GPU to the CPU as the GPU made them, and the updated weights come back in the
# GPU's format.
#
# Write `offload_bytes(psi, weight_bytes, grad_bytes, host_grad_bytes)`: a tuple of three numbers, the bytes of
# model states on the GPU, the bytes of model states on the CPU, and the bytes that cross PCIe in one step (both
# directions together). No activations, no buffers. Worked examples: `psi = 10**10` with the defaults gives
# `(40e9, 160e9, 40e9)`; with `host_grad_bytes = 2` it gives `(40e9, 140e9, 40e9)`.

# %%
def offload_bytes(psi: int, weight_bytes: int = 2, grad_bytes: int = 2,
                  host_grad_bytes: int = 4) -> tuple[float, float, float]:
    """(GPU bytes, CPU bytes, PCIe bytes per step) of ZeRO-Offload for psi parameters."""
    # BEGIN SOLUTION 12.7: return the GPU bytes, the CPU bytes and the PCIe bytes of one step
    gpu = (weight_bytes + grad_bytes) * psi  # low-precision weights + the gradients backward makes
    cpu = (4 + 4 + 4 + host_grad_bytes) * psi  # fp32 master, Adam m, Adam v + the gradients received
    pcie = (grad_bytes + weight_bytes) * psi  # gradients down, updated weights up, in the GPU's format
    return gpu, cpu, pcie
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# List the tensors by where they live: two kinds on the GPU, four on the CPU. Then follow one step: what leaves
# the GPU, what comes back, and in which format each travels.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# GPU: weights and gradients. CPU: three fp32 tensors of Adam (4 bytes each) plus the received gradients. PCIe:
# the gradients down in `grad_bytes`, the weights up in `weight_bytes`. With the defaults: $4\Psi$, $16\Psi$,
# $4\Psi$.
#
# </details>

# %%
check("12.7", offload_bytes)


# %% [markdown]
# ## 12.8 DeepSpeed's batch identity (1 point)
#
# Read first: [12.3 ZeRO-Offload and DeepSpeed](../notebooks/12_zero_fsdp/03_offload_deepspeed.ipynb), section 6.
# A DeepSpeed config names three batch quantities: `train_batch_size` (rows per optimizer step, all GPUs
# together), `train_micro_batch_size_per_gpu` (rows one GPU runs in one forward and backward: `micro` below) and
# `gradient_accumulation_steps` (`accum`). With `world_size` GPUs they must satisfy
# train_batch_size = micro × accum × world_size. A config may leave some of them out (`None`):
#
# - all three given: they must satisfy the identity;
# - one of the three missing: it is inferred, and must come out as a whole number;
# - `accum` missing together with one of the two batch sizes: `accum` is 1 and the other batch size is inferred;
# - both batch sizes missing: nothing can be inferred.
#
# Write `ds_batch(train_batch_size, micro, accum, world_size)`: the completed tuple
# `(train_batch_size, micro, accum)` of ints, or `None` when the given values admit no such tuple. Worked
# examples with `world_size = 4`: `ds_batch(32, 4, None, 4)` is `(32, 4, 2)`; `ds_batch(32, 4, 3, 4)` is `None`;
# `ds_batch(30, 4, None, 4)` is `None`; `ds_batch(8, None, None, 2)` is `(8, 4, 1)`.

# %%
def ds_batch(train_batch_size: int | None, micro: int | None, accum: int | None,
             world_size: int) -> tuple[int, int, int] | None:
    """(train_batch_size, micro, accum) completed as DeepSpeed does, or None if impossible."""
    # BEGIN SOLUTION 12.8: return the completed triple, or None when no triple fits
    if train_batch_size is None and micro is None:
        return None
    if train_batch_size is None:
        accum = accum or 1
        return micro * accum * world_size, micro, accum
    if micro is None:
        accum = accum or 1
        micro, rest = divmod(train_batch_size, accum * world_size)
        return (train_batch_size, micro, accum) if rest == 0 else None
    if accum is None:
        accum, rest = divmod(train_batch_size, micro * world_size)
        return (train_batch_size, micro, accum) if rest == 0 else None
    return (train_batch_size, micro, accum) if train_batch_size == micro * accum * world_size else None
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Treat the cases in the order of the list above. Division gives the missing value; the remainder says whether it
# is a whole number.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `micro = train_batch_size / (accum × world_size)` and `accum = train_batch_size / (micro × world_size)`, each
# only when the remainder is 0; when `accum` is missing with a batch size, set it to 1 first.
#
# </details>

# %%
check("12.8", ds_batch)
