"""The model card's transformers implementations, kept as the exactness reference.

Tests compare the vLLM engines against these on the same weights, and the engine benchmark
uses them as the baseline. They follow the card line by line: left padding, last-token
pooling, L2 normalisation; the reranker's yes/no log-softmax over the last position.
Nothing in the serving path imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence

from serving import prompts


def last_token_pool(last_hidden_states, attention_mask):
    import torch

    left_padding = attention_mask[:, -1].sum() == attention_mask.shape[0]
    if left_padding:
        return last_hidden_states[:, -1]
    sequence_lengths = attention_mask.sum(dim=1) - 1
    batch_size = last_hidden_states.shape[0]
    return last_hidden_states[torch.arange(batch_size, device=last_hidden_states.device), sequence_lengths]


def get_detailed_instruct(task_description: str, query: str) -> str:
    return f"Instruct: {task_description}\nQuery:{query}"


class ReferenceEmbedder:
    def __init__(self, model_path: str, dtype: str = "float32", max_length: int = 8192):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        self.model = AutoModel.from_pretrained(model_path, dtype=getattr(torch, dtype)).eval()
        self.max_length = max_length

    def embed(self, input_texts: Sequence[str], dimensions: int | None = None):
        """Float32 tensor (n, dimensions); MRL truncates and re-normalises, as the card describes."""
        import torch
        import torch.nn.functional as F

        batch_dict = self.tokenizer(list(input_texts), padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt")
        with torch.no_grad():
            outputs = self.model(**batch_dict)
        embeddings = last_token_pool(outputs.last_hidden_state, batch_dict["attention_mask"]).float()
        if dimensions is not None:
            embeddings = embeddings[:, :dimensions]
        return F.normalize(embeddings, p=2, dim=1)


class ReferenceReranker:
    def __init__(self, model_path: str, dtype: str = "float32", max_length: int = 8192):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).eval()
        self.max_length = max_length
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.prefix_tokens = self.tokenizer.encode(prompts.RERANK_PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(prompts.RERANK_SUFFIX, add_special_tokens=False)

    @staticmethod
    def format_instruction(instruction: str | None, query: str, doc: str) -> str:
        if instruction is None:
            instruction = "Given a web search query, retrieve relevant passages that answer the query"
        return "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}".format(
            instruction=instruction, query=query, doc=doc)

    def process_inputs(self, pairs: Sequence[str]):
        inputs = self.tokenizer(
            list(pairs), padding=False, truncation="longest_first", return_attention_mask=False,
            max_length=self.max_length - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        return self.tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=self.max_length)

    def compute_logits(self, inputs) -> list[float]:
        import torch

        with torch.no_grad():
            batch_scores = self.model(**inputs).logits[:, -1, :]
        true_vector = batch_scores[:, self.token_true_id]
        false_vector = batch_scores[:, self.token_false_id]
        batch_scores = torch.stack([false_vector, true_vector], dim=1).float()
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        return batch_scores[:, 1].exp().tolist()

    def rerank(self, query: str, documents: Sequence[str], instruction: str | None = None) -> list[float]:
        pairs = [self.format_instruction(instruction, query, doc) for doc in documents]
        return self.compute_logits(self.process_inputs(pairs))
