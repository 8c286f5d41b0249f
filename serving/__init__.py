"""Serving stack for Qwen3-Embedding and Qwen3-Reranker on vLLM."""

__version__ = "0.1.0"
