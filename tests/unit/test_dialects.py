"""Every dialect's routes against a fake service (no Ray, no vLLM): each converts to the internal
request the router sees, and back to its own response shape. Vectors and scores are checked
against the reference on the real stack in tests/integration/serve/test_clients.py."""

import asyncio

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api.errors import ValidationFailed
from serving.api.protocol import ModelCard, ModelList
from serving.api.routes import build_api
from serving.config import AppConfig
from serving.deployments.router import resolve_any_model, resolve_model
from serving.engines.base import decode_ids, tokenize_texts
from serving.engines.errors import EngineInputError
from serving.routing import ModelTable

TWO_EMBED = [{"name": "e", "kind": "embed"}, {"name": "e2", "kind": "embed"}, {"name": "r", "kind": "rerank"}]
ONE_EMBED = [{"name": "e", "kind": "embed"}, {"name": "r", "kind": "rerank"}]


class ResolvingService:
    """Resolves `model` like the router (ModelTable, same error mapping) and records what it got."""

    def __init__(self, models=ONE_EMBED, tokenizer=None):
        self.config = AppConfig.model_validate({"models": models})
        self.table = ModelTable(self.config)
        self.calls: list = []
        self.keys: list[str] = []
        self.tokenizer = tokenizer  # a real HF tokenizer for /tokenize and /decode, when a test gives one

    def _resolve(self, name, kind, key):
        return resolve_model(self.table, name, kind, key)

    async def embed(self, request, routing_key, clock=None, tenant=None):
        name = self._resolve(request.model, "embed", routing_key)
        self.calls.append(request)
        self.keys.append(routing_key)
        n = len(request.inputs())
        return name, np.arange(n * 4, dtype=np.float32).reshape(n, 4), 5 * n

    async def rerank(self, request, routing_key, clock=None, tenant=None):
        name = self._resolve(request.model, "rerank", routing_key)
        self.calls.append(request)
        # Scores that depend on the pair, so reassembly order is visible.
        return name, [len(request.query) + len(d) / 100 for d in request.texts()], 10 * len(request.documents)

    async def tokenize(self, request, routing_key):
        name = resolve_any_model(self.table, request.model, routing_key)
        self.calls.append(request)
        texts = [f"Q:{t}" if request.input_type == "query" else t for t in request.texts]
        return name, tokenize_texts(self.tokenizer, texts, request.add_special_tokens)

    async def decode(self, request, routing_key):
        name = resolve_any_model(self.table, request.model, routing_key)
        self.calls.append(request)
        try:
            return name, decode_ids(self.tokenizer, request.ids, request.skip_special_tokens)
        except EngineInputError as exc:  # as the router maps it
            raise ValidationFailed(str(exc)) from None

    async def models(self):
        # What the router reports of running engines (vLLM's scheduler limits included).
        engine = {"dtype": "float32", "max_num_batched_tokens": 8192, "max_num_seqs": 256}
        return ModelList(data=[ModelCard(id=m.name, created=0, kind=m.kind, source=f"/m/{m.name}",
                                         max_model_len=512 if m.kind == "embed" else 256,
                                         max_dimensions=128 if m.kind == "embed" else None, **engine)
                               for m in self.config.models])

    async def readiness(self):
        return {}

    async def metrics_text(self):
        return ""

    def record(self, clock):
        pass


def serve(models=ONE_EMBED, tokenizer=None) -> tuple[TestClient, ResolvingService]:
    service = ResolvingService(models, tokenizer)
    return TestClient(build_api(service)), service


def error(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["message"]


# --- Cohere v2


def test_cohere_v2_rerank_answers_in_v2_shape_sorted_without_documents():
    c, service = serve()
    body = c.post("/v2/rerank", json={"model": "r", "query": "q", "documents": ["aa", "a", "aaa"], "top_n": 2,
                                      "max_tokens_per_doc": 9}).json()
    assert [r["index"] for r in body["results"]] == [2, 0]
    assert set(body["results"][0]) == {"index", "relevance_score"}
    assert body["meta"] == {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
    assert service.calls[0].max_tokens_per_doc == 9 and service.calls[0].return_documents is False


def test_cohere_v2_embed_maps_input_type_truncate_and_embedding_types():
    c, service = serve()
    body = c.post("/v2/embed", json={"model": "e", "texts": ["a", "b"], "input_type": "search_query",
                                     "embedding_types": ["float", "base64"], "truncate": "START",
                                     "output_dimension": 64}).json()
    assert body["response_type"] == "embeddings_by_type" and body["texts"] == ["a", "b"]
    assert body["embeddings"]["float"][1] == [4.0, 5.0, 6.0, 7.0]
    assert np.frombuffer(__import__("base64").b64decode(body["embeddings"]["base64"][1]), "<f4").tolist() == [
        4.0, 5.0, 6.0, 7.0]
    internal = service.calls[0]
    assert (internal.input_type, internal.truncation_side, internal.dimensions) == ("query", "left", 64)
    c.post("/v2/embed", json={"texts": ["a"], "truncate": "NONE"})
    assert service.calls[1].truncate is False and service.calls[1].input_type == "document"


def test_cohere_v2_embed_rejects_max_tokens_with_truncate_none_and_unknown_types():
    c, _ = serve()
    assert "truncate: NONE" in error(c.post("/v2/embed", json={"texts": ["a"], "max_tokens": 4, "truncate": "NONE"}),
                                     422)
    assert "'int4'" in error(c.post("/v2/embed", json={"texts": ["a"], "embedding_types": ["int4"]}), 422)
    error(c.post("/v2/embed", json={"texts": ["a"], "input_type": "classification"}), 422)


# --- TEI


def test_tei_embed_returns_bare_vectors_and_maps_its_fields():
    c, service = serve()
    response = c.post("/embed", json={"inputs": ["a", "b"], "truncate": True, "truncation_direction": "Left",
                                      "normalize": False, "prompt_name": "query", "dimensions": 32})
    assert response.json() == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
    internal = service.calls[0]
    assert internal.model is None and internal.input_type == "query" and internal.dimensions == 32
    assert (internal.truncate_prompt_tokens, internal.truncation_side, internal.use_activation) == (-1, "left", False)


def test_tei_embed_truncate_false_rejects_and_unset_keeps_the_server_default():
    c, service = serve()
    c.post("/embed", json={"inputs": "a", "truncate": False})
    c.post("/embed", json={"inputs": "a"})
    assert service.calls[0].truncate is False and service.calls[0].truncate_prompt_tokens is None
    assert service.calls[1].truncate is None and service.calls[1].truncate_prompt_tokens is None


def test_model_omitted_with_several_embed_models_is_422_listing_the_choices():
    c, _ = serve(TWO_EMBED)
    message = error(c.post("/embed", json={"inputs": "a"}), 422)
    assert "`model` is required" in message and "['e', 'e2']" in message
    assert c.post("/embed", json={"inputs": "a", "model": "e2"}).status_code == 200
    assert "['e', 'e2']" in error(c.post("/v1/embeddings", json={"input": "a"}), 422)


def test_model_omitted_with_one_model_of_the_kind_resolves():
    c, _ = serve(TWO_EMBED)
    assert c.post("/v1/rerank", json={"query": "q", "documents": ["d"]}).json()["model"] == "r"
    assert c.post("/v1/score", json={"text_1": "q", "text_2": ["d"]}).json()["model"] == "r"


def test_tei_rerank_shape_is_told_apart_from_the_cohere_shape_by_its_fields():
    c, service = serve()
    tei = c.post("/rerank", json={"query": "q", "texts": ["a", "aaa"], "return_text": True, "raw_scores": True})
    assert tei.json() == [{"index": 1, "score": pytest.approx(1.03), "text": "aaa"},
                          {"index": 0, "score": pytest.approx(1.01), "text": "a"}]
    assert service.calls[0].use_activation is False
    no_text = c.post("/rerank", json={"query": "q", "texts": ["a"]}).json()
    assert no_text == [{"index": 0, "score": pytest.approx(1.01)}]
    cohere = c.post("/rerank", json={"model": "r", "query": "q", "documents": ["a", "aaa"]}).json()
    assert cohere["results"][0] == {"index": 1, "relevance_score": pytest.approx(1.03), "document": {"text": "aaa"}}


@pytest.mark.parametrize("body, field", [
    ({"query": "q", "texts": ["a"], "return_txt": True}, "return_txt"),
    ({"query": "q", "documents": ["a"], "top": 1}, "top"),
    ({"inputs": "a", "normalise": True}, "normalise"),
])
def test_typos_are_still_422_naming_the_field(body, field):
    c, _ = serve()
    path = "/embed" if "inputs" in body else "/rerank"
    assert field in error(c.post(path, json=body), 422)


def test_tei_rerank_left_truncation_is_rejected():
    c, _ = serve()
    error(c.post("/rerank", json={"query": "q", "texts": ["a"], "truncation_direction": "Left"}), 422)


def test_tei_info_describes_a_model_with_tei_fields():
    c, _ = serve()
    info = c.get("/info").json()
    assert info["model_id"] == "/m/e" and info["model_type"] == {"embedding": {"pooling": "last_token"}}
    assert info["max_input_length"] == 512 and info["auto_truncate"] is True
    rerank = c.get("/info", params={"model": "r"}).json()
    assert "reranker" in rerank["model_type"] and rerank["max_input_length"] == 256
    assert "Available" in error(c.get("/info", params={"model": "nope"}), 404)


# --- vLLM


def test_vllm_fields_are_accepted_on_embeddings_and_reach_the_router():
    c, service = serve()
    response = c.post("/v1/embeddings", json={"model": "e", "input": ["a"], "truncate_prompt_tokens": 7,
                                              "truncation_side": "right", "use_activation": False,
                                              "request_id": "abc", "priority": 0, "user": "u"})
    assert response.status_code == 200, response.text
    internal = service.calls[0]
    assert (internal.truncate_prompt_tokens, internal.truncation_side, internal.use_activation) == (7, "right", False)
    assert service.keys == ["abc"]  # vLLM's request_id routes alias traffic when no X-Request-Id is sent


@pytest.mark.parametrize("extra", [{"truncate_prompt_tokens": -2}, {"priority": 2_000_000}, {"truncation_side": "middle"},
                                   {"truncate_prompt_tokens": 1.5}])
def test_vllm_fields_out_of_range_are_422(extra):
    c, _ = serve()
    error(c.post("/v1/embeddings", json={"model": "e", "input": "a"} | extra), 422)


def test_vllm_rerank_fields_top_n_zero_means_all_and_zero_limits_mean_none():
    c, service = serve()
    body = c.post("/v1/rerank", json={"query": "q", "documents": ["a", "b", "c"], "top_n": 0,
                                      "max_tokens_per_doc": 0, "max_tokens_per_query": 3,
                                      "truncate_prompt_tokens": -1, "use_activation": True}).json()
    assert len(body["results"]) == 3
    assert service.calls[0].max_tokens_per_query == 3 and service.calls[0].truncate_prompt_tokens == -1
    error(c.post("/v1/rerank", json={"query": "q", "documents": ["a"], "truncation_side": "left"}), 422)


def test_score_one_to_many_keeps_input_order():
    c, service = serve()
    body = c.post("/v1/score", json={"text_1": "q", "text_2": ["aaa", "a"], "instruction": "Find it"}).json()
    assert [d["index"] for d in body["data"]] == [0, 1] and body["object"] == "list"
    assert [d["score"] for d in body["data"]] == pytest.approx([1.03, 1.01])
    assert body["usage"]["total_tokens"] == 20 and service.calls[0].instruction == "Find it"


def test_score_pairwise_groups_by_text_1_and_reassembles():
    c, service = serve()
    body = c.post("/score", json={"text_1": ["q", "qq", "q"], "text_2": ["a", "b", "ccc"]}).json()
    assert [d["score"] for d in body["data"]] == pytest.approx([1.01, 2.01, 1.03])
    assert sorted(len(r.documents) for r in service.calls) == [1, 2]  # one rerank call per distinct text_1
    assert "text_1" in error(c.post("/score", json={"text_1": ["q", "p"], "text_2": ["a", "b", "c"]}), 422)


def test_score_pairs_count_against_the_document_limit():
    service = ResolvingService()
    service.config = service.config.model_copy(update={"limits": service.config.limits.model_copy(
        update={"max_documents_per_request": 2})})
    c = TestClient(build_api(service))
    error(c.post("/v1/score", json={"text_1": "q", "text_2": ["a", "b", "c"]}), 413)


def test_every_route_is_in_the_openapi_document_with_its_error_statuses():
    c, _ = serve()
    paths = c.get("/openapi.json").json()["paths"]
    for path in ("/v2/rerank", "/v2/embed", "/v1/embed", "/embed", "/rerank", "/v1/score", "/score", "/similarity",
                 "/tokenize", "/decode", "/", "/infinity/embeddings", "/embeddings", "/infinity/rerank"):
        assert {"200", "400", "404", "413", "422", "429", "503"} <= set(paths[path]["post"]["responses"]), path
    assert "200" in paths["/info"]["get"]["responses"]


@pytest.mark.parametrize("dtype, endianness", [("float16", "big"), ("bfloat16", "little"), ("float32", "native")])
def test_vllm_embed_dtype_and_endianness_shape_base64(dtype, endianness):
    import base64

    import torch

    c, _ = serve()
    body = c.post("/v1/embeddings", json={"model": "e", "input": ["a", "b"], "encoding_format": "base64",
                                          "embed_dtype": dtype, "endianness": endianness}).json()
    raw = base64.b64decode(body["data"][1]["embedding"])
    expected = torch.tensor([4.0, 5.0, 6.0, 7.0]).to(getattr(torch, dtype))
    order = {"big": "big", "little": "little", "native": __import__("sys").byteorder}[endianness]
    ints = expected.view(torch.int16 if dtype != "float32" else torch.int32).tolist()
    width = 2 if dtype != "float32" else 4
    assert raw == b"".join(int(i).to_bytes(width, order, signed=True) for i in ints)


def test_bfloat16_rounds_like_torch():
    import base64

    import torch

    from serving.api.pipeline import encode_base64

    values = np.random.default_rng(0).standard_normal(256).astype(np.float32)
    got = np.frombuffer(base64.b64decode(encode_base64(values, "bfloat16", "little")), "<u2")
    assert got.tolist() == [v & 0xFFFF for v in torch.tensor(values).to(torch.bfloat16).view(torch.int16).tolist()]


def test_a_value_the_internal_schema_refuses_is_a_422_not_a_500():
    from serving.api.errors import ValidationFailed
    from serving.api.pipeline import to_internal
    from serving.api.protocol import EmbeddingRequest

    with pytest.raises(ValidationFailed, match="truncate_prompt_tokens"):
        to_internal(EmbeddingRequest, input="a", truncate_prompt_tokens=24208784)
    c, _ = serve()
    assert "max_tokens" in error(c.post("/v2/embed", json={"texts": ["a"], "max_tokens": 24208784}), 422)


# --- TEI: similarity, tokenize, decode, `POST /`


def test_tei_similarity_is_the_cosine_of_the_source_with_each_sentence():
    c, service = serve()
    got = c.post("/similarity", json={"inputs": {"source_sentence": "a", "sentences": ["b", "c"]},
                                      "parameters": {"prompt_name": "query", "truncate": True}}).json()
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)  # the fake's vectors: source first
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    assert got == pytest.approx((unit[1:] @ unit[0]).tolist())
    internal = service.calls[0]
    assert internal.input == ["a", "b", "c"] and internal.input_type == "query"
    assert internal.truncate_prompt_tokens == -1


def test_tei_tokenize_gives_byte_offsets_and_marks_the_added_eos_special(embed_tokenizer):
    c, _ = serve(tokenizer=embed_tokenizer)
    [tokens] = c.post("/tokenize", json={"inputs": "héllo wörld"}).json()
    assert [t["id"] for t in tokens] == embed_tokenizer("héllo wörld")["input_ids"]
    text = "héllo wörld".encode()
    for t in tokens[:-1]:
        assert not t["special"] and text[t["start"]:t["stop"]].decode() == t["text"]
    assert tokens[-1] == {"id": 151643, "text": "<|endoftext|>", "special": True, "start": None, "stop": None}


def test_tei_tokenize_batch_without_special_tokens_and_with_the_query_prompt(embed_tokenizer):
    c, service = serve(tokenizer=embed_tokenizer)
    got = c.post("/tokenize", json={"inputs": ["a b", "c"], "add_special_tokens": False,
                                    "prompt_name": "query"}).json()
    assert len(got) == 2 and not any(t["special"] for t in got[0] + got[1])
    assert service.calls[0].input_type == "query" and service.calls[0].add_special_tokens is False


def test_tei_decode_single_and_batch(embed_tokenizer):
    c, _ = serve(tokenizer=embed_tokenizer)
    assert c.post("/decode", json={"ids": [9707, 1879, 151643]}).json() == ["Hello world"]
    assert c.post("/decode", json={"ids": [[9707, 1879, 151643], [9707]], "skip_special_tokens": False}).json() == [
        "Hello world<|endoftext|>", "Hello"]
    assert "not a token id" in error(c.post("/decode", json={"ids": [10**7]}), 422)


def test_tokenizer_routes_default_to_the_first_model_and_take_any_kind(embed_tokenizer):
    c, service = serve(tokenizer=embed_tokenizer)
    c.post("/tokenize", json={"inputs": "a"})
    c.post("/tokenize", json={"inputs": "a", "model": "r"})
    assert [r.model for r in service.calls] == [None, "r"]
    assert "Available" in error(c.post("/decode", json={"ids": [1], "model": "nope"}), 404)


def test_tei_root_goes_by_body_shape():
    c, service = serve()
    assert c.post("/", json={"inputs": ["a"]}).json() == [[0.0, 1.0, 2.0, 3.0]]
    assert [r["index"] for r in c.post("/", json={"query": "q", "texts": ["a", "aa"]}).json()] == [1, 0]
    assert len(c.post("/", json={"inputs": {"source_sentence": "a", "sentences": ["b"]}}).json()) == 1
    assert [type(r).__name__ for r in service.calls] == ["EmbeddingRequest", "RerankRequest", "EmbeddingRequest"]


@pytest.mark.parametrize("models, missing", [(ONE_EMBED, "inputs"), ([{"name": "r", "kind": "rerank"}], "texts")])
def test_tei_root_reads_a_body_of_neither_shape_as_the_first_models_route(models, missing):
    c, _ = serve(models)
    assert missing in error(c.post("/", json={"truncate": True}), 422)


# --- Infinity


@pytest.mark.parametrize("path", ["/infinity/embeddings", "/embeddings"])
def test_infinity_embeddings_answer_in_openai_shape_with_id_and_created(path):
    c, service = serve()
    body = c.post(path, json={"input": ["a", "b"], "model": "default/not-specified", "dimensions": 0,
                              "modality": "text"}).json()
    assert body["data"][1]["embedding"] == [4.0, 5.0, 6.0, 7.0] and body["id"].startswith("infinity-")
    assert isinstance(body["created"], int) and body["usage"] == {"prompt_tokens": 10, "total_tokens": 10}
    assert service.calls[0].model is None and service.calls[0].dimensions is None
    c.post(path, json={"input": "a", "model": "e", "dimensions": 64})
    assert service.calls[1].dimensions == 64
    error(c.post(path, json={"input": "a", "modality": "image"}), 422)


def test_infinity_rerank_gives_documents_as_plain_strings_only_when_asked():
    c, service = serve()
    body = c.post("/infinity/rerank", json={"query": "q", "documents": ["a", "aa", "aaa"], "return_documents": True,
                                            "top_n": 2, "raw_scores": True}).json()
    assert body["object"] == "rerank" and body["model"] == "r"
    assert body["results"] == [{"relevance_score": pytest.approx(1.03), "index": 2, "document": "aaa"},
                               {"relevance_score": pytest.approx(1.02), "index": 1, "document": "aa"}]
    assert service.calls[0].use_activation is False
    plain = c.post("/infinity/rerank", json={"query": "q", "documents": ["a"]}).json()
    assert plain["results"] == [{"relevance_score": pytest.approx(1.01), "index": 0}]


@pytest.mark.parametrize("path", ["/infinity/models", "/models"])
def test_infinity_models_list_capabilities(path):
    c, _ = serve()
    data = c.get(path).json()["data"]
    assert [(m["id"], m["capabilities"]) for m in data] == [("e", ["embed"]), ("r", ["rerank"])]


# --- Cohere: return_documents on v2 rerank, v1 embed, fields the peers document


def test_cohere_v2_rerank_return_documents_echoes_the_text():
    c, _ = serve()
    body = c.post("/v2/rerank", json={"query": "q", "documents": ["a", "aa"], "return_documents": True}).json()
    assert body["results"][0] == {"index": 1, "relevance_score": pytest.approx(1.02), "document": {"text": "aa"}}
    plain = c.post("/v2/rerank", json={"query": "q", "documents": ["a"], "return_documents": False}).json()
    assert set(plain["results"][0]) == {"index", "relevance_score"}


@pytest.mark.parametrize("path, extra", [("/v2/rerank", {"rank_fields": ["text"], "max_chunks_per_doc": 2}),
                                         ("/v1/rerank", {"rank_fields": ["text"], "max_chunks_per_doc": 2})])
def test_cohere_documented_rerank_fields_are_accepted(path, extra):
    c, _ = serve()
    assert c.post(path, json={"query": "q", "documents": ["a"]} | extra).status_code == 200


def test_cohere_v1_embed_answers_floats_without_embedding_types_and_by_type_with():
    c, service = serve()
    floats = c.post("/v1/embed", json={"texts": ["a", "b"], "model": "e", "input_type": "search_query",
                                       "truncate": "START"}).json()
    assert floats["response_type"] == "embeddings_floats" and floats["embeddings"][1] == [4.0, 5.0, 6.0, 7.0]
    assert floats["texts"] == ["a", "b"] and floats["meta"] == {"api_version": {"version": "1"},
                                                                "billed_units": {"input_tokens": 10}}
    assert (service.calls[0].input_type, service.calls[0].truncation_side) == ("query", "left")
    by_type = c.post("/v1/embed", json={"texts": ["a"], "embedding_types": ["float", "base64"],
                                        "input_type": "clustering", "truncate": "NONE"}).json()
    assert by_type["response_type"] == "embeddings_by_type" and set(by_type["embeddings"]) == {"float", "base64"}
    assert service.calls[1].input_type == "document" and service.calls[1].truncate is False
    assert "'bits'" in error(c.post("/v1/embed", json={"texts": ["a"], "embedding_types": ["bits"]}), 422)


@pytest.mark.parametrize("path, body, field", [
    ("/v1/embed", {"texts": ["a"], "embeding_types": ["float"]}, "embeding_types"),
    ("/v2/rerank", {"query": "q", "documents": ["a"], "return_document": True}, "return_document"),
    ("/infinity/rerank", {"query": "q", "documents": ["a"], "topn": 1}, "topn"),
    ("/tokenize", {"inputs": "a", "add_special_token": False}, "add_special_token"),
    ("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"prompt": "q"}}, "prompt"),
])
def test_misspelt_fields_on_the_new_routes_are_422_naming_them(path, body, field):
    c, _ = serve()
    assert field in error(c.post(path, json=body), 422)


# --- quantized embeddings (the math itself: tests/unit/test_quantization.py)


def unit_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


class UnitVectorService(ResolvingService):
    """L2-normalised vectors `dimensions` wide (16 when unset), as an engine returns them."""

    async def embed(self, request, routing_key, clock=None, tenant=None):
        name, _, tokens = await super().embed(request, routing_key)
        return name, unit_vectors(len(request.inputs()), request.dimensions or 16), tokens


def serve_unit(models=ONE_EMBED) -> TestClient:
    return TestClient(build_api(UnitVectorService(models)))


ALL_TYPES = ["float", "int8", "uint8", "binary", "ubinary", "base64"]


def test_cohere_v2_embed_quantized_types_are_its_float_vectors_quantized_and_the_sdk_parses_them():
    from cohere import EmbedByTypeResponse

    from serving.quantization import quantize

    c = serve_unit()
    body = c.post("/v2/embed", json={"texts": ["a", "b", "c"], "embedding_types": ALL_TYPES,
                                     "output_dimension": 40}).json()
    floats = np.array(body["embeddings"]["float"], dtype=np.float32)
    assert floats.shape == (3, 40)
    for kind in ("int8", "uint8", "binary", "ubinary"):
        assert body["embeddings"][kind] == quantize(floats, kind).tolist(), kind
    assert len(body["embeddings"]["ubinary"][0]) == 5 and min(min(r) for r in body["embeddings"]["binary"]) < 0
    parsed = EmbedByTypeResponse.model_validate(body)
    assert parsed.embeddings.int8 == body["embeddings"]["int8"]
    assert parsed.embeddings.ubinary == body["embeddings"]["ubinary"]


def test_cohere_v1_embed_answers_quantized_types_by_type():
    from serving.quantization import quantize

    c = serve_unit()
    body = c.post("/v1/embed", json={"texts": ["a"], "embedding_types": ["int8", "ubinary"]}).json()
    assert body["response_type"] == "embeddings_by_type" and set(body["embeddings"]) == {"int8", "ubinary"}
    assert body["embeddings"]["int8"] == quantize(unit_vectors(1, 16), "int8").tolist()
    assert body["embeddings"]["ubinary"] == quantize(unit_vectors(1, 16), "ubinary").tolist()


@pytest.mark.parametrize("kind", ["int8", "uint8", "binary", "ubinary"])
def test_openai_quantized_encoding_formats_are_integer_lists_quantized_after_dimensions(kind):
    from serving.quantization import quantize

    c = serve_unit()
    body = c.post("/v1/embeddings", json={"input": ["a", "b"], "dimensions": 24, "encoding_format": kind}).json()
    assert [d["embedding"] for d in body["data"]] == quantize(unit_vectors(2, 24), kind).tolist()


def test_openai_base64_of_floats_is_unchanged_by_the_extension():
    c = serve_unit()
    body = c.post("/v1/embeddings", json={"input": "a", "encoding_format": "base64"}).json()
    raw = np.frombuffer(__import__("base64").b64decode(body["data"][0]["embedding"]), "<f4")
    np.testing.assert_array_equal(raw, unit_vectors(1, 16)[0])


@pytest.mark.parametrize("path, body, typo", [
    ("/v2/embed", {"texts": ["a"], "embedding_types": ["float", "unit8"]}, "unit8"),
    ("/v1/embed", {"texts": ["a"], "embedding_types": ["ubinnary"]}, "ubinnary"),
    ("/v1/embeddings", {"input": "a", "encoding_format": "bianry"}, "bianry"),
])
def test_a_misspelt_embedding_type_is_422_naming_it(path, body, typo):
    c = serve_unit()
    assert f"'{typo}'" in error(c.post(path, json=body), 422)


def calibrated(tmp_path, calibration: np.ndarray) -> list[dict]:
    path = tmp_path / "calibration.npy"
    np.save(path, calibration)
    return [{"name": "e", "kind": "embed", "quantization": {"calibration": str(path)}}, {"name": "r", "kind": "rerank"}]


def test_a_models_calibration_file_scales_int8_at_full_width_and_for_mrl_dimensions(tmp_path):
    from serving.quantization import Quantizer, quantize

    calibration = unit_vectors(200, 16, seed=7) * 0.5  # narrower than [-1, 1], so the ranges matter
    c = serve_unit(calibrated(tmp_path, calibration))
    full = c.post("/v2/embed", json={"texts": ["a", "b"], "embedding_types": ["int8"]}).json()["embeddings"]["int8"]
    assert full == Quantizer(calibration).quantize(unit_vectors(2, 16), "int8", full_width=True).tolist()
    assert full != quantize(unit_vectors(2, 16), "int8").tolist()
    mrl = c.post("/v1/embeddings", json={"input": ["a", "b"], "dimensions": 8, "encoding_format": "uint8"}).json()
    assert [d["embedding"] for d in mrl["data"]] == Quantizer(calibration).quantize(
        unit_vectors(2, 8), "uint8", full_width=False).tolist()


def test_a_calibration_of_another_width_is_a_server_error_naming_the_model(tmp_path):
    c = serve_unit(calibrated(tmp_path, unit_vectors(10, 32)))
    message = error(c.post("/v1/embeddings", json={"input": "a", "encoding_format": "int8"}), 500)
    assert "model e" in message and "calibrate again" in message
    assert c.post("/v1/embeddings", json={"input": "a", "encoding_format": "binary"}).status_code == 200


def test_a_missing_calibration_file_fails_the_app_build(tmp_path):
    from serving.quantization import CalibrationError

    models = [{"name": "e", "kind": "embed", "quantization": {"calibration": str(tmp_path / "none.npy")}}]
    with pytest.raises(CalibrationError, match="none.npy"):
        build_api(UnitVectorService(models))


@pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument")  # the SDKs' own timeouts
def test_the_cohere_and_openai_sdks_ask_for_and_parse_quantized_types():
    import cohere
    from openai import OpenAI

    from serving.quantization import quantize

    c = serve_unit()

    async def with_cohere():
        # Cohere's SDK is built on httpx; Starlette's TestClient on httpx2 (what OpenAI's SDK now uses),
        # whose client the SDK cannot drive. So Cohere's async clients get an httpx client on the app.
        import httpx

        def http() -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=httpx.ASGITransport(app=c.app), base_url=str(c.base_url))

        v2 = cohere.AsyncClientV2(api_key="k", base_url=str(c.base_url), httpx_client=http())
        response = await v2.embed(model="e", texts=["a", "b"], input_type="search_document",
                                  embedding_types=["int8", "ubinary"], output_dimension=32)
        assert response.embeddings.int8 == quantize(unit_vectors(2, 32), "int8").tolist()
        assert response.embeddings.ubinary == quantize(unit_vectors(2, 32), "ubinary").tolist()
        unset = await v2.embed(model="e", texts=["a"], input_type="search_query", embedding_types=["uint8"],
                               output_dimension=None)
        assert unset.embeddings.uint8 == quantize(unit_vectors(1, 16), "uint8").tolist()
        v1 = cohere.AsyncClient(api_key="k", base_url=str(c.base_url), httpx_client=http())
        assert (await v1.embed(texts=["a"], embedding_types=["binary"])).embeddings.binary == quantize(
            unit_vectors(1, 16), "binary").tolist()

    asyncio.run(with_cohere())
    openai = OpenAI(api_key="k", base_url=f"{c.base_url}/v1", http_client=c)
    rows = openai.embeddings.create(model="e", input=["a", "b"], encoding_format="uint8").data
    assert [r.embedding for r in rows] == quantize(unit_vectors(2, 16), "uint8").tolist()
