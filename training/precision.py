"""Which precision a training run can afford on the machine it runs on."""

import torch


def bf16_is_fast() -> bool:
    """bf16 is native on most CUDA GPUs and on CPUs with AVX512-BF16 or AMX. Elsewhere torch emulates
    it: on the AVX2-only EPYC of session 36 a 1024x1024 bf16 matmul ran at 0.95 GFLOP/s against 88 in
    fp32 on one core, and a latent cache that takes 15 minutes on a bf16 CPU had not finished its
    first bucket of twelve after 13 minutes."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu_has = lambda feature: bool(getattr(torch.cpu, feature, lambda: False)())  # private, so guarded
    return cpu_has("_is_avx512_bf16_supported") or cpu_has("_is_amx_tile_supported")


def resolve(choice: str, slow: str = "no") -> str:
    """An --X-precision argument: "auto" becomes "bf16" where bf16 is native and `slow` elsewhere."""
    if choice != "auto":
        return choice
    return "bf16" if bf16_is_fast() else slow
