# Puts the repository root on sys.path so tests import `pipeline`, `ui`, `training` and `eval` as a
# user's checkout does; keeps every test offline.
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
