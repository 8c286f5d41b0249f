"""Schemathesis fuzzes the live app from its own /openapi.json: no input, however malformed,
gets a 5xx, and every answer conforms to the document (status, content type, body schema).

Bodies get a served model name most of the time, so cases reach the engines, not just 404. The routes
under each model's TEI base URL, `/tei/{model}/...`, are in the document with the path parameter `model`,
whose enum lists the served models, so the fuzzer names them there by itself (and other strings, 404,
in negative mode); a body's `model` is ignored there.
"""

import collections
import random

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_schema_conformance, status_code_conformance,
)

from tests.integration.serve.conftest import CANARY

pytestmark = pytest.mark.slow

EMBED_MODELS = ["tiny-embed", "embed-canary", *CANARY]
ALL_MODELS = [*EMBED_MODELS, "tiny-rerank"]
MODELS = {**{path: EMBED_MODELS for path in ("/v1/embeddings", "/v2/embed", "/v1/embed", "/embed", "/similarity",
                                             "/infinity/embeddings", "/embeddings")},
          **{path: ["tiny-rerank"] for path in ("/v1/rerank", "/rerank", "/v2/rerank", "/v1/score", "/score",
                                                "/infinity/rerank")},
          **{path: ALL_MODELS for path in ("/", "/tokenize", "/decode")}}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 30  # per operation and mode: 36 operations (13 under /tei/{model}) x 2 modes


def fuzz(schema_url: str, base_url: str, headers: dict[str, str], max_examples: int) -> dict:
    """Run every operation of the document; return {operation: Counter(status)} and the failures."""
    schema = schemathesis.openapi.from_url(schema_url)
    pick = random.Random(0)

    @schema.hook
    def map_body(context, body):
        models = MODELS.get(context.operation.path)
        if models and isinstance(body, dict) and pick.random() < 0.8:
            body["model"] = pick.choice(models)
        return body

    statuses: dict[str, collections.Counter] = {}
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    # Valid bodies per the document, then bodies that break it (wrong types, missing fields, ...).
    for operation, mode in [(op, mode) for op in operations for mode in (GenerationMode.POSITIVE,
                                                                         GenerationMode.NEGATIVE)]:
        seen = statuses.setdefault(operation.label, collections.Counter())

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def run(case):
            response = case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=120)
            seen[response.status_code] += 1

        try:
            run()
        except Unsatisfiable:  # no invalid input exists for an operation with no parameters (GET /health)
            pass
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # schemathesis raises a group: the first failing case, with a curl line
            failures[f"{operation.label} ({mode.value})"] = str(exc)[:3000]
    return {"statuses": statuses, "failures": failures}


def test_no_server_errors_and_answers_conform_to_the_openapi_document(base_url, auth, measurements):
    outcome = fuzz(f"{base_url}/openapi.json", base_url, auth, EXAMPLES_PER_OPERATION)
    measurements["schemathesis cases by operation and status"] = {
        op: dict(counts) for op, counts in outcome["statuses"].items()}
    assert not outcome["failures"], "\n\n".join(f"{op}:\n{text}" for op, text in outcome["failures"].items())
    # The fuzzer reached the engines, not only the validation layer, at the root and under a TEI base URL.
    for operation in ("POST /v1/embeddings", "POST /v1/rerank", "POST /tei/{model}/embed", "POST /tei/{model}/rerank"):
        assert outcome["statuses"][operation][200] > 0, outcome["statuses"][operation]
