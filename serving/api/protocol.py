"""Request and response schemas: OpenAI embeddings, Cohere v2 / Jina rerank, model listing.

Schemas fix types and shapes (422 when wrong). Size limits come from config and are checked
by the router (413), and `dimensions` against the chosen model's range (422).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

NonEmptyStr = Annotated[str, StringConstraints(strict=True, min_length=1)]
TokenIds = Annotated[list[StrictInt], Field(min_length=1)]


class _Request(BaseModel):
    # Unknown fields are rejected rather than silently ignored.
    model_config = ConfigDict(extra="forbid")


class EmbeddingRequest(_Request):
    model: NonEmptyStr
    input: NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)] | TokenIds | Annotated[
        list[TokenIds], Field(min_length=1)] = Field(
        description="A string, a list of strings, a token list or a list of token lists.")
    dimensions: StrictInt | None = Field(None, description="MRL output size, 32..model hidden size.")
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = Field(None, description="End-user id; logged with the routing key for abuse tracing.")
    input_type: Literal["query", "document"] = Field(
        "document", description="Extension: `query` applies the instruction format, `document` embeds as-is.")
    instruction: NonEmptyStr | None = Field(None, description="Extension: task instruction for queries.")

    def inputs(self) -> list[str] | list[list[int]]:
        """`input` as a list of items: strings or token lists."""
        if isinstance(self.input, str):
            return [self.input]
        if self.input and isinstance(self.input[0], int):
            return [self.input]  # one token list
        return self.input


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class TextDocument(_Request):
    text: Annotated[str, StringConstraints(strict=True, min_length=1)]


class RerankRequest(_Request):
    model: NonEmptyStr
    query: NonEmptyStr
    documents: Annotated[list[NonEmptyStr | TextDocument], Field(min_length=1)]
    top_n: StrictInt | None = Field(None, ge=1, description="Return only the best n results.")
    return_documents: bool = Field(True, description="Echo each document's text in its result.")
    max_tokens_per_doc: StrictInt | None = Field(None, ge=1, description="Truncate each document to this many tokens.")
    instruction: NonEmptyStr | None = Field(None, description="Task instruction; the model card's default if unset.")

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class BilledUnits(BaseModel):
    search_units: int = 1


class RerankMeta(BaseModel):
    billed_units: BilledUnits = Field(default_factory=BilledUnits)


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    usage: Usage
    meta: RerankMeta = Field(default_factory=RerankMeta, description="Cohere-style billing metadata.")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "qwen3-serving"
    kind: Literal["embed", "rerank"]
    source: str | None = Field(None, description="Checkpoint the model serves (hub id or path).")
    fallback: bool = Field(False, description="True when a tiny random stand-in replaced an unreachable hub model.")
    targets: dict[str, float] | None = Field(None, description="For aliases: model -> traffic share.")
    max_dimensions: int | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str


class ErrorResponse(BaseModel):
    """Every error, in OpenAI's shape."""

    error: ErrorDetail


class ReadyResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    models: dict[str, str] = Field(description="Deployment name -> `ready` or `unavailable: <reason>`.")
