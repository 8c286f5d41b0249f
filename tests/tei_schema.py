"""TEI's `GET /info` answer as TEI documents it, restated as a JSON Schema for tests to validate ours against.

Source: huggingface/text-embeddings-inference at 0d124dc9773be6ac5a9a57d8439aba9bbbf33273 (v1.9.3),
`docs/openapi.json`: `components.schemas` `Info`, `ModelType`, `ClassifierModel`, `EmbeddingModel`, with their
`required` lists as given there; OpenAPI's `nullable: true` becomes a `null` type. TEI's router
(`router/src/lib.rs`, struct `Info`) serialises every field, so a TEI client also sees the optional ones, as
null when they have no value: `ALWAYS_SENT`.
"""

from __future__ import annotations

import jsonschema

_CLASSIFIER_MODEL = {
    "type": "object",
    "required": ["id2label", "label2id"],
    "properties": {
        "id2label": {"type": "object", "additionalProperties": {"type": "string"}},
        "label2id": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
    },
}

INFO_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["model_id", "model_dtype", "served_model_name", "model_type", "max_concurrent_requests",
                 "max_input_length", "max_batch_tokens", "max_client_batch_size", "auto_truncate",
                 "tokenization_workers", "version"],
    "properties": {
        "auto_truncate": {"type": "boolean"},
        "docker_label": {"type": ["string", "null"]},
        "max_batch_requests": {"type": ["integer", "null"], "minimum": 0},
        "max_batch_tokens": {"type": "integer", "minimum": 0},
        "max_client_batch_size": {"type": "integer", "minimum": 0},
        "max_concurrent_requests": {"type": "integer", "minimum": 0},
        "max_input_length": {"type": "integer", "minimum": 0},
        "model_dtype": {"type": "string"},
        "model_id": {"type": "string"},
        "model_sha": {"type": ["string", "null"]},
        "model_type": {"$ref": "#/$defs/ModelType"},
        "served_model_name": {"type": "string"},
        "sha": {"type": ["string", "null"]},
        "tokenization_workers": {"type": "integer", "minimum": 0},
        "version": {"type": "string"},
    },
    "$defs": {
        "ModelType": {"oneOf": [
            {"type": "object", "required": ["classifier"], "properties": {"classifier": _CLASSIFIER_MODEL}},
            {"type": "object", "required": ["embedding"], "properties": {"embedding": {
                "type": "object", "required": ["pooling"], "properties": {"pooling": {"type": "string"}}}}},
            {"type": "object", "required": ["reranker"], "properties": {"reranker": _CLASSIFIER_MODEL}},
        ]},
    },
}

ALWAYS_SENT = frozenset(INFO_SCHEMA["properties"])  # the 15 fields of TEI's `Info` struct


def check_info(info: dict) -> None:
    """Raise unless `info` is what a TEI server's `/info` could answer: valid, and every field present."""
    jsonschema.validate(info, INFO_SCHEMA, cls=jsonschema.Draft202012Validator)
    assert set(info) == ALWAYS_SENT, sorted(set(info) ^ ALWAYS_SENT)
