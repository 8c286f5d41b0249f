"""The internal requests and the native schemas: OpenAI embeddings and Cohere v1 / Jina / vLLM
rerank, with vLLM's request extensions; model listing; errors.

`EmbeddingRequest` and `RerankRequest` are also what every other dialect converts to
(`serving/api/dialects/`): the router and engines see only these two, and `TokenizeRequest` /
`DecodeRequest` for the tokenizer of any served model.

Schemas fix types and shapes (422 when wrong). Size limits come from config and are checked
by the router (413), and `dimensions` against the chosen model's range (422).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

NonEmptyStr = Annotated[str, StringConstraints(strict=True, min_length=1)]
TokenIds = Annotated[list[StrictInt], Field(min_length=1)]
EmbedInput = NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)] | TokenIds | Annotated[
    list[TokenIds], Field(min_length=1)]
ModelName = NonEmptyStr | None
MODEL_DESCRIPTION = ("Model or alias name. May be omitted when exactly one model of this kind is served; "
                     "otherwise omitting it is a 422 that lists the choices.")


class _Request(BaseModel):
    # Unknown fields are rejected rather than silently ignored.
    model_config = ConfigDict(extra="forbid")


PRIORITY = ("Lower runs first (vLLM's and Cohere's sense). A request runs in its tenant's lane, or a less urgent "
            "one if this is larger: it can never be more urgent than its tenant's `priority`.")


class _VllmOptions(_Request):
    """Request fields vLLM's pooling APIs add, accepted with vLLM's meaning."""

    truncate_prompt_tokens: StrictInt | None = Field(
        None, ge=-1, le=1_000_000, description="vLLM: keep at most this many tokens per input (-1: the model's limit). "
                                 "Unset: the server's truncation (`engine.truncate`).")
    truncate: bool | None = Field(
        None, description="Extension: false rejects over-long inputs with 413 instead of truncating; "
                          "unset: the model's `engine.truncate`.")
    request_id: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        None, description="vLLM: the request's id; routes alias traffic like `X-Request-Id` when that header is "
                          "absent.")
    priority: StrictInt = Field(0, ge=-1_000_000, le=1_000_000, description=PRIORITY)
    user: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        None, description="End-user id; logged with the routing key for abuse tracing.")


class EmbeddingRequest(_VllmOptions):
    model: ModelName = Field(None, description=MODEL_DESCRIPTION)
    input: EmbedInput = Field(description="A string, a list of strings, a token list or a list of token lists.")
    dimensions: StrictInt | None = Field(None, description="MRL output size, 32..model hidden size.")
    encoding_format: Literal["float", "base64", "int8", "uint8", "binary", "ubinary"] = Field(
        "float", description="`float`: a JSON list of floats per vector; `base64`: the vector's bytes (little-endian "
                             "float32 unless `embed_dtype` / `endianness` say otherwise). Extension: `int8` / `uint8` "
                             "a JSON list of integers, one per dimension, scaled by the model's calibration ranges; "
                             "`binary` (int8) / `ubinary` (uint8) the sign bits, eight dimensions per integer. "
                             "Applied after `dimensions`.")
    input_type: Literal["query", "document"] = Field(
        "document", description="Extension: `query` applies the instruction format, `document` embeds as-is.")
    instruction: NonEmptyStr | None = Field(None, description="Extension: task instruction for queries.")
    truncation_side: Literal["left", "right"] | None = Field(
        None, description="vLLM: `right` keeps the first tokens of the full sequence, `left` the last (with the "
                          "EOS). Unset: the tokenizer's truncation, first tokens plus the EOS.")
    use_activation: bool | None = Field(
        None, description="vLLM: false returns the pooled hidden state without L2 normalisation.")
    embed_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="vLLM: the element type of `base64` vectors.")
    endianness: Literal["native", "big", "little"] = Field(
        "native", description="vLLM: the byte order of `base64` vectors (`native`: the server's).")

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
    embedding: list[float] | list[int] | str = Field(description="Floats, integers (a quantized "
                                                             "`encoding_format`), or base64 of the vector's bytes.")


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


class ScoringOptions(_VllmOptions):
    """What every rerank/score request carries besides its texts (vLLM's scoring fields)."""

    model: ModelName = Field(None, description=MODEL_DESCRIPTION)
    instruction: NonEmptyStr | None = Field(None, description="Task instruction; the model card's default if unset.")
    max_tokens_per_doc: StrictInt | None = Field(
        None, ge=0, description="Truncate each document to this many tokens (0 or unset: no limit).")
    max_tokens_per_query: StrictInt | None = Field(
        None, ge=0, description="vLLM: truncate the query to this many tokens (0 or unset: no limit).")
    truncation_side: Literal["right"] | None = Field(
        None, description="vLLM: only `right`; the prompt's body is cut from its end, never the instruction.")
    use_activation: bool | None = Field(
        None, description="vLLM: false returns raw scores, logp(yes) - logp(no), instead of p(yes).")

    def options(self) -> dict:
        """The fields above, to copy onto another request of this family."""
        return self.model_dump(include=set(ScoringOptions.model_fields))


class RerankRequest(ScoringOptions):
    query: NonEmptyStr
    documents: Annotated[list[NonEmptyStr | TextDocument], Field(min_length=1)]
    top_n: StrictInt | None = Field(None, ge=0, description="Return only the best n results (0 or unset: all).")
    return_documents: bool = Field(True, description="Echo each document's text in its result.")
    rank_fields: list[NonEmptyStr] | None = Field(None, description="Cohere v1: accepted, no effect (documents "
                                                                    "have one field, `text`).")
    max_chunks_per_doc: StrictInt | None = Field(None, ge=1, description="Cohere v1: accepted, no effect "
                                                                         "(`max_tokens_per_doc` cuts documents).")

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]

    def top(self, scores: list[float]) -> list[int]:
        """Indices of the best `top_n` results, best first."""
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return order[: self.top_n] if self.top_n else order


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


class TokenizeRequest(_Request):
    """Internal: texts through a served model's tokenizer (any kind). No dialect's own schema."""

    model: ModelName = Field(None, description="Model or alias; unset: the first configured model.")
    texts: Annotated[list[NonEmptyStr], Field(min_length=1)]
    add_special_tokens: bool = True
    input_type: Literal["query", "document"] = Field(
        "document", description="`query` tokenizes the query prompt built from each text (embed models).")


class DecodeRequest(_Request):
    """Internal: token ids back to text with a served model's tokenizer."""

    model: ModelName = Field(None, description="Model or alias; unset: the first configured model.")
    ids: Annotated[list[list[StrictInt]], Field(min_length=1)]
    skip_special_tokens: bool = True


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
    dtype: str | None = Field(None, description="The dtype the engine runs (`auto` resolved).")
    max_num_batched_tokens: int | None = Field(None, description="The engine's token budget per step (vLLM's, "
                                                                 "its default when the config sets none).")
    max_num_seqs: int | None = Field(None, description="The engine's sequences per step (vLLM's).")


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
