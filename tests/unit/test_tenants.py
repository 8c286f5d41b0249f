"""Tenants without Ray or HTTP: keys, lanes, token buckets on a clock the test moves, config checks."""

import pytest
from pydantic import ValidationError

from serving.config import AppConfig
from serving.tenants import DEFAULT_TENANT, Tenants, TokenBucket, retry_after


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def config(**fields) -> AppConfig:
    return AppConfig.model_validate({"models": [{"name": "e", "kind": "embed"}]} | fields)


def test_keys_find_their_tenant_and_the_api_keys_are_the_default_tenant():
    tenants = Tenants.from_config(config(api_keys=["k0"], tenants=[
        {"name": "search", "keys": ["k1", "k1-next"], "priority": 0},
        {"name": "bulk", "keys": ["k2"], "priority": 7}]))
    assert tenants.auth
    assert tenants.find(b"k0").name == DEFAULT_TENANT
    assert tenants.find(b"k1").name == tenants.find(b"k1-next").name == "search"
    assert tenants.find(b"k2").priority == 7
    for wrong in (b"", b"k", b"k11", b"K1", b"k2 "):
        assert tenants.find(wrong) is None


def test_without_keys_everyone_is_the_default_tenant():
    tenants = Tenants.from_config(config())
    assert not tenants.auth and tenants.find(b"anything").name == DEFAULT_TENANT


@pytest.mark.parametrize("tenant_priority, requested, lane", [(0, 0, 0), (0, 5, 5), (5, 0, 5), (5, -3, 5),
                                                              (5, 9, 9), (5, None, 5)])
def test_a_request_may_lower_its_lane_never_raise_it(tenant_priority, requested, lane):
    tenant = Tenants.from_config(config(tenants=[{"name": "t", "keys": ["k"], "priority": tenant_priority}]))
    assert tenant.find(b"k").lane(requested) == lane


def test_a_request_quota_admits_its_burst_then_one_per_interval():
    clock = Clock()
    tenant = Tenants.from_config(config(tenants=[{"name": "t", "keys": ["k"], "requests_per_s": 2, "burst_s": 2}]),
                                 clock=clock).find(b"k")
    assert [tenant.admit() for _ in range(4)] == [0, 0, 0, 0]  # 2/s x 2 s at once
    assert tenant.admit() == pytest.approx(0.5)
    clock.now += 0.3
    assert tenant.admit() == pytest.approx(0.2)  # refusals take nothing
    clock.now += 0.2
    assert tenant.admit() == 0 and tenant.admit() == pytest.approx(0.5)
    clock.now += 100  # the bucket fills to its depth, not beyond
    assert [tenant.admit() for _ in range(5)][-1] == pytest.approx(0.5)


def test_quotas_are_shared_by_the_ingress_replicas():
    clock = Clock()
    spec = {"name": "t", "keys": ["k"], "requests_per_s": 10, "input_tokens_per_min": 600}
    fixed = Tenants.from_config(config(tenants=[spec], router={"num_replicas": 4}), clock=clock).find(b"k")
    assert (fixed.requests.rate, fixed.requests.depth, fixed.tokens.rate) == (2.5, 2.5, 2.5)
    scaled = Tenants.from_config(config(tenants=[spec], router={"autoscaling": True, "min_replicas": 1,
                                                                "max_replicas": 5}), clock=clock).find(b"k")
    assert scaled.requests.rate == 2  # never more than the quota in all: a share of max_replicas


def test_a_token_quota_admits_while_not_in_debt_and_charges_what_was_read():
    clock = Clock()
    tenant = Tenants.from_config(config(tenants=[{"name": "t", "keys": ["k"], "input_tokens_per_min": 60}]),
                                 clock=clock).find(b"k")
    assert tenant.admit() == 0
    tenant.charge_tokens(100)  # a minute's 60 and 40 more
    assert tenant.admit() == pytest.approx(40)  # 1 token/s
    clock.now += 40
    assert tenant.admit() == 0


def test_a_bucket_never_holds_more_than_its_depth():
    clock = Clock()
    bucket = TokenBucket(rate=1, depth=3, clock=clock)
    clock.now += 1000
    assert bucket.wait_s(3) == 0 and bucket.wait_s(4) == pytest.approx(1)


@pytest.mark.parametrize("wait_s, seconds, ms", [(0.2, "1", "200"), (1.0, "1", "1000"), (1.0001, "2", "1001"),
                                                 (39.5, "40", "39500")])
def test_retry_after_is_rounded_up_so_a_retry_then_is_admitted(wait_s, seconds, ms):
    assert retry_after(wait_s) == {"Retry-After": seconds, "retry-after-ms": ms}


def test_tenant_names_and_keys_must_be_unique_and_a_repeated_key_is_not_shown():
    with pytest.raises(ValidationError, match="repeated: \\['a'\\]"):
        config(tenants=[{"name": "a", "keys": ["k1"]}, {"name": "a", "keys": ["k2"]}])
    with pytest.raises(ValidationError, match="repeated: \\['default'\\]"):
        config(api_keys=["k0"], tenants=[{"name": "default", "keys": ["k1"]}])
    with pytest.raises(ValidationError, match="given twice") as error:
        config(api_keys=["secret-123"], tenants=[{"name": "a", "keys": ["secret-123"]}])
    assert "secret-123" not in str(error.value)
    with pytest.raises(ValidationError) as error:
        config(tenants=[{"name": "has space", "keys": ["secret-456"]}])
    assert "secret-456" not in str(error.value)
    with pytest.raises(ValidationError) as error:
        config(tenants=[{"name": "a", "keys": ["secret-789"], "priority": -1}])
    assert "secret-789" not in str(error.value)
    with pytest.raises(ValidationError):
        config(tenants=[{"name": "a", "keys": []}])


def test_the_ingress_receives_the_real_keys():
    data = config(api_keys=["k0"], tenants=[{"name": "a", "keys": ["k1", "k2"]}]).dump_with_keys()
    assert data["api_keys"] == ["k0"] and data["tenants"][0]["keys"] == ["k1", "k2"]
    assert Tenants.from_config(AppConfig.model_validate(data)).find(b"k2").name == "a"
