from training import precision


def test_auto_precision_is_bf16_only_where_bf16_is_native(monkeypatch):
    """An emulated bf16 (an AVX2 CPU) is ~90x slower than fp32, so "auto" falls back there; an
    explicit choice is kept either way."""
    monkeypatch.setattr(precision, "bf16_is_fast", lambda: False)
    assert precision.resolve("auto") == "no"
    assert precision.resolve("auto", slow="fp32") == "fp32"
    assert precision.resolve("bf16") == "bf16"
    monkeypatch.setattr(precision, "bf16_is_fast", lambda: True)
    assert precision.resolve("auto") == "bf16"
    assert precision.resolve("no") == "no"


def test_bf16_is_fast_answers_on_this_machine():
    assert isinstance(precision.bf16_is_fast(), bool)
