"""One module per API dialect: its schemas and an adapter to the internal `EmbeddingRequest` /
`RerankRequest` and back, plus the routes that speak it (the way vLLM keeps one protocol per task).

- `native`: OpenAI embeddings and Cohere v1 / Jina / vLLM rerank, whose schemas are the internal ones
- `cohere`: Cohere API v2 (`/v2/rerank`, `/v2/embed`)
- `tei`: text-embeddings-inference (`/embed`, `/rerank` with `texts`, `/similarity`, `/tokenize`, `/decode`, `/`,
  `/info`), and each model's TEI base URL `/tei/{model}/...` with all of them, as a TEI server of that model
- `infinity`: Infinity (`/infinity/embeddings`, `/infinity/rerank`, `/infinity/models`; bare `/embeddings`, `/models`)
- `vllm`: vLLM's score API (`/v1/score`, `/score`); vLLM's request fields on the native routes live in
  `serving/api/protocol.py`
"""
