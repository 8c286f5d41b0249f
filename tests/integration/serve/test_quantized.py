"""Quantized embeddings through the clients that ask for them, on the shared app.

Each answer is checked against quantizing the app's own float vectors with `serving/quantization.py`
(itself checked against sentence-transformers' function in tests/unit/test_quantization.py). Within
one response the float and quantized vectors are the same vectors, so they must match exactly;
across two requests the floats may differ in their last bits (other requests share the batch), so
there a quantized value may move by one level, and a sign bit may flip only where the float is ~0.

`tiny-embed` has the default ranges ([-1, 1]); `tiny-embed-tp2` has the package's calibration file.
"""

import httpx
import numpy as np
import pytest

from serving.quantization import Quantizer, quantize
from serving.routing import ModelTable
from tests.integration.serve.conftest import API_KEY
from tests.texts import DOCUMENTS, QUERIES

pytestmark = pytest.mark.slow
TYPES = ["float", "int8", "uint8", "binary", "ubinary"]


@pytest.fixture(scope="module")
def cohere_v2(base_url):
    import cohere

    return cohere.ClientV2(api_key=API_KEY, base_url=base_url, timeout=120)


@pytest.fixture(scope="module")
def calibrated(calibration_file) -> Quantizer:
    return Quantizer.load(calibration_file)


def by_type(embeddings) -> dict[str, list]:
    return {t: getattr(embeddings, "float_" if t == "float" else t) for t in TYPES}


def test_cohere_v2_sdk_int8_and_ubinary_are_its_float_output_quantized(cohere_v2):
    response = cohere_v2.embed(model="tiny-embed", texts=DOCUMENTS, input_type="search_document",
                               embedding_types=["float", "int8", "ubinary"])
    floats = np.array(response.embeddings.float_, dtype=np.float32)
    assert response.embeddings.int8 == quantize(floats, "int8").tolist()
    assert response.embeddings.ubinary == quantize(floats, "ubinary").tolist()
    assert len(response.embeddings.ubinary[0]) == floats.shape[1] // 8


@pytest.mark.parametrize("output_dimension", [None, 64])
def test_cohere_v2_calibrated_model_scales_with_its_calibration_after_mrl(cohere_v2, calibrated, output_dimension):
    response = cohere_v2.embed(model="tiny-embed-tp2", texts=QUERIES, input_type="search_query",
                               embedding_types=TYPES, output_dimension=output_dimension)
    got = by_type(response.embeddings)
    floats = np.array(got["float"], dtype=np.float32)
    assert floats.shape[1] == (output_dimension or calibrated.calibration.shape[1])
    for kind in ("int8", "uint8", "binary", "ubinary"):
        expected = calibrated.quantize(floats, kind, full_width=output_dimension is None)
        assert got[kind] == expected.tolist(), kind
    assert got["int8"] != quantize(floats, "int8").tolist()  # not the default ranges


def test_cohere_v1_sdk_embed_by_type(base_url):
    import cohere

    client = cohere.Client(api_key=API_KEY, base_url=base_url, timeout=120)
    response = client.embed(model="tiny-embed", texts=DOCUMENTS[:3], input_type="search_document",
                            embedding_types=["float", "uint8", "binary"])
    assert response.response_type == "embeddings_by_type"
    floats = np.array(response.embeddings.float_, dtype=np.float32)
    assert response.embeddings.uint8 == quantize(floats, "uint8").tolist()
    assert response.embeddings.binary == quantize(floats, "binary").tolist()


def assert_near(quantized: np.ndarray, floats: np.ndarray, kind: str, quantizer: Quantizer, full_width: bool):
    """`quantized` (one request) against quantizing `floats` (another request of the same inputs)."""
    expected = quantizer.quantize(floats, kind, full_width=full_width)
    if kind in ("int8", "uint8"):
        assert np.abs(quantized.astype(int) - expected.astype(int)).max() <= 1
        return
    def bits(packed):  # int8 `binary` and uint8 `ubinary` alike: the same byte, XOR 0x80 for `binary`
        return np.unpackbits((np.asarray(packed).astype(np.int64) % 256).astype(np.uint8), axis=-1)

    flipped = bits(quantized) != bits(expected)
    near_zero = np.abs(np.pad(floats, ((0, 0), (0, flipped.shape[1] - floats.shape[1])))) < 1e-4
    assert not (flipped & ~near_zero).any()


@pytest.mark.parametrize("kind", ["int8", "uint8", "binary", "ubinary"])
def test_openai_sdk_quantized_encoding_format_with_dimensions(openai_client, kind):
    floats = openai_client.embeddings.create(model="tiny-embed", input=DOCUMENTS, dimensions=40,
                                             encoding_format="float")
    quantized = openai_client.embeddings.create(model="tiny-embed", input=DOCUMENTS, dimensions=40,
                                                encoding_format=kind)
    rows = np.array([d.embedding for d in quantized.data])
    assert rows.shape == (len(DOCUMENTS), 40 if kind.endswith("int8") else 5)
    assert_near(rows, np.array([d.embedding for d in floats.data], dtype=np.float32), kind, Quantizer(),
                full_width=False)


def test_openai_sdk_default_base64_still_gives_floats(openai_client):
    response = openai_client.embeddings.create(model="tiny-embed", input=DOCUMENTS[:2])
    assert all(isinstance(x, float) for x in response.data[0].embedding)


def test_an_alias_quantizes_with_the_ranges_of_the_model_that_served_it(base_url, auth, app_config_obj, calibrated):
    table = ModelTable(app_config_obj)
    keys = {}
    for i in range(200):  # one routing key per target model, as the router splits them
        keys.setdefault(table.resolve("embed-canary", "embed", f"quant-{i}"), f"quant-{i}")
    assert set(keys) == {"tiny-embed", "tiny-embed-tp2"}
    for model, key in keys.items():
        headers = auth | {"X-Request-Id": key}
        answers = {}
        for fmt in ("float", "int8"):
            response = httpx.post(f"{base_url}/v1/embeddings", headers=headers, timeout=120,
                                  json={"model": "embed-canary", "input": DOCUMENTS[:4], "encoding_format": fmt})
            assert response.status_code == 200, response.text
            assert response.json()["model"] == model
            answers[fmt] = np.array([d["embedding"] for d in response.json()["data"]])
        quantizer = calibrated if model == "tiny-embed-tp2" else Quantizer()
        assert_near(answers["int8"], answers["float"].astype(np.float32), "int8", quantizer, full_width=True)


@pytest.mark.parametrize("path, body, typo", [
    ("/v2/embed", {"model": "tiny-embed", "texts": ["a"], "embedding_types": ["unit8"]}, "unit8"),
    ("/v1/embeddings", {"model": "tiny-embed", "input": "a", "encoding_format": "bianry"}, "bianry"),
])
def test_a_misspelt_type_is_422_naming_it(base_url, auth, path, body, typo):
    response = httpx.post(f"{base_url}{path}", json=body, headers=auth, timeout=60)
    assert response.status_code == 422 and f"'{typo}'" in response.json()["error"]["message"]
