"""Target parsing and the adapter-affine, load-bounded replica picker."""

from __future__ import annotations

from collections import Counter

import pytest

from loraplex.routing import (
    ReplicaPicker,
    affinity_key,
    dns_name,
    grpc_target,
    replica_list,
)

REPLICAS = [f"10.0.0.{i}:50054" for i in range(1, 5)]


def test_targets_pass_through_or_become_static_lists():
    assert grpc_target("127.0.0.1:50054") == "127.0.0.1:50054"
    assert grpc_target("inference:50054") == "inference:50054"
    assert grpc_target("dns:///inference-headless:50054") == "dns:///inference-headless:50054"
    assert grpc_target("127.0.0.1:1, localhost:2,127.0.0.1:1") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert grpc_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    assert replica_list("127.0.0.1:1") is None


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("inference:1,inference:2", "must be an IP address"),
        ("127.0.0.1:1,[::1]:2", "mixes IPv4 and IPv6"),
        ("127.0.0.1,127.0.0.1:2", "is not host:port"),
        ("127.0.0.1:0,127.0.0.1:2", "is not host:port"),
        (",,", "names no replica"),
    ],
)
def test_bad_lists_say_what_is_wrong(address, message):
    with pytest.raises(ValueError, match=message):
        grpc_target(address)


def test_dns_names():
    assert dns_name("dns:///inference-headless.ml.svc:50054") == (
        "inference-headless.ml.svc",
        50054,
    )
    assert dns_name("dns://10.0.0.10:53/inference:50054") == ("inference", 50054)
    assert dns_name("inference:50054") is None


def test_affinity_key_ignores_version_and_alias():
    assert affinity_key("acme/support@3") == affinity_key("acme/support@prod") == "acme/support"


def test_an_adapter_has_one_home_when_idle():
    picker = ReplicaPicker(REPLICAS)
    homes = set()
    for _ in range(10):
        replica = picker.pick("acme/support")
        picker.done(replica)
        homes.add(replica)
    assert homes == {picker.ranking("acme/support")[0]}


def test_adapters_spread_over_replicas():
    picker = ReplicaPicker(REPLICAS)
    homes = Counter(picker.ranking(f"acme/a{i}")[0] for i in range(400))
    assert set(homes) == set(REPLICAS)
    assert min(homes.values()) > 60  # ~100 each


def test_adding_a_replica_moves_only_the_adapters_it_takes():
    before = ReplicaPicker(REPLICAS)
    after = ReplicaPicker([*REPLICAS, "10.0.0.9:50054"])
    moved = [
        key
        for key in (f"acme/a{i}" for i in range(500))
        if before.ranking(key)[0] != after.ranking(key)[0]
    ]
    assert all(after.ranking(key)[0] == "10.0.0.9:50054" for key in moved)
    assert 50 < len(moved) < 150  # ~1/5 of them


def test_a_loaded_home_spills_to_the_adapters_next_replica_only():
    picker = ReplicaPicker(REPLICAS, balance_factor=1.25)
    ranking = picker.ranking("acme/hot")
    placed = Counter(picker.pick("acme/hot") for _ in range(40))  # none finishes
    assert placed[ranking[0]] >= placed[ranking[1]] >= placed[ranking[2]]
    assert max(placed.values()) <= 1.25 * 40 / 4 + 1
    assert sum(placed.values()) == 40


def test_spread_shares_an_adapter_between_its_top_replicas():
    picker = ReplicaPicker(REPLICAS, spread=2)
    top = set(picker.ranking("acme/x")[:2])
    assert {picker.pick("acme/x"), picker.pick("acme/x")} == top  # both in flight


def test_without_an_adapter_calls_go_round_robin():
    picker = ReplicaPicker(REPLICAS)
    placed = Counter()
    for _ in range(40):
        replica = picker.pick()
        picker.done(replica)
        placed[replica] += 1
    assert set(placed.values()) == {10}


def test_a_down_replica_is_passed_over_until_it_is_due():
    now = [0.0]
    picker = ReplicaPicker(REPLICAS, clock=lambda: now[0])
    home = picker.ranking("acme/x")[0]
    picker.mark_down(home, 5)
    assert picker.pick("acme/x") == picker.ranking("acme/x")[1]
    assert home not in {picker.pick() for _ in range(8)}
    now[0] = 6
    assert picker.pick("acme/x") == home


def test_excluded_replicas_are_used_only_when_nothing_else_is_left():
    picker = ReplicaPicker(REPLICAS[:2])
    assert picker.pick("acme/x", exclude=[REPLICAS[0]]) == REPLICAS[1]
    assert picker.pick("acme/x", exclude=REPLICAS[:2]) in REPLICAS[:2]


def test_update_keeps_counts_and_drops_gone_replicas():
    picker = ReplicaPicker(REPLICAS[:2])
    first = picker.pick()
    picker.update([first, REPLICAS[2]])
    assert picker.replicas == (first, REPLICAS[2])
    assert picker.in_flight(first) == 1
    picker.done(first)
    assert picker.in_flight(first) == 0
    with pytest.raises(ValueError, match="no replicas"):
        picker.update([])


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="spread"):
        ReplicaPicker(REPLICAS, spread=0)
    with pytest.raises(ValueError, match="balance_factor"):
        ReplicaPicker(REPLICAS, balance_factor=0.5)


def test_a_slot_bound_homes_adapters_evenly_instead_of_by_hash_alone():
    picker = ReplicaPicker(REPLICAS[:2], adapters_per_replica=4)
    keys = [f"acme/a{i}" for i in range(8)]
    for _ in range(3):
        for key in keys:
            picker.done(picker.pick(key))
    homes = Counter(picker.homes(key)[0] for key in keys)
    assert set(homes.values()) == {4}
    assert all(len(picker.homes(key)) == 1 for key in keys)
    # each adapter keeps its home; the first to come has its rendezvous first choice
    assert picker.homes(keys[0]) == [picker.ranking(keys[0])[0]]
    for key in keys:
        replica = picker.pick(key)
        picker.done(replica)
        assert [replica] == picker.homes(key)


def test_when_every_replica_is_full_the_top_one_gives_up_its_oldest_adapter():
    picker = ReplicaPicker(REPLICAS[:2], adapters_per_replica=1)
    for key in ("acme/a", "acme/b"):
        picker.done(picker.pick(key))
    top = picker.ranking("acme/c")[0]
    displaced = [k for k in ("acme/a", "acme/b") if picker.homes(k) == [top]]
    assert picker.pick("acme/c") == top
    assert picker.homes("acme/c") == [top] and picker.homes(displaced[0]) == []
