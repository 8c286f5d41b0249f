"""Every prompt string the Qwen3 embedding and reranker models need, verbatim from the model card.

These are facts about the models; ``tests/unit/test_prompts.py`` pins them against
``../shared/seeds/qwen3-embedding-model-card.md``. Config fields take their defaults from here
so a deployment can override them in YAML without code changes.
"""

# Embedding: queries carry a one-sentence task instruction, documents are embedded as-is.
DEFAULT_EMBED_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
EMBED_QUERY_TEMPLATE = "Instruct: {instruction}\nQuery:{query}"

# Reranker (the model card's transformers reference, which is the exactness reference).
DEFAULT_RERANK_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
RERANK_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
RERANK_PAIR_TEMPLATE = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
# Ends with an empty think block and TWO newlines; vLLM's example jinja template drops one.
RERANK_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
RERANK_YES_TOKEN = "yes"
RERANK_NO_TOKEN = "no"
