"""Ling Studio's model: a causal video VAE, a spatiotemporal DiT and the text-to-video pipeline.

Nothing here fetches from a model hub: weights come from a local folder or an installed package.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
