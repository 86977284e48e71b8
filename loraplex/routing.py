"""Which replica of a service a call goes to: target parsing and adapter-affine picking.

Pure Python (no grpc, no services, no SDK), so both the SDK and the services import
the one copy.

- `grpc_target(address)`: an address as the user writes it (`host:port`, a comma list
  of replicas on loopback `127.0.0.1:50054,127.0.0.1:50064`, `dns:///name:port` for a
  Kubernetes headless Service) → the target a gRPC channel with `round_robin` takes.
- `ReplicaPicker`: for each call, a replica. A call naming an adapter goes to the
  adapter's home replica by rendezvous (highest-random-weight) hashing, so an adapter
  stays warm on few replicas however many adapters there are; a replica carrying more
  than `balance_factor` times the mean in-flight load is passed over for the adapter's
  next replica in its own ranking (consistent hashing with bounded loads, as Envoy's
  `hash_balance_factor`), so a hot adapter spreads only under load and always to the
  same next replicas. Calls without an adapter go round-robin.

  Hashing alone puts 5 of 8 adapters on one of 2 replicas as often as not, and a
  replica with 4 slots then thrashes. Given `adapters_per_replica` (the replicas'
  LoRA slots), the picker also bounds the adapters homed on each replica: a new adapter
  goes to the first replica in its ranking with room, and only when every replica is
  full does its top replica give up its least recently used adapter.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")
#: gRPC round-robin load balancing, as a channel option: every resolved address is used.
ROUND_ROBIN_OPTION = ("grpc.lb_policy_name", "round_robin")


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port); a precise ValueError otherwise."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if host == "localhost":
        return ipaddress.IPv4Address("127.0.0.1")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{host!r} in a comma-separated address list must be an IP address (or"
            " localhost); for a name that resolves to every replica use dns:///name:port"
        ) from None


def replica_list(address: str) -> tuple[str, ...] | None:
    """The replicas a comma-separated list names, as `ip:port` (`[v6]:port`); None when
    `address` is one address or a scheme target."""
    if address.startswith(SCHEMES) or "," not in address:
        return None
    replicas = []
    for part in filter(None, (p.strip() for p in address.split(","))):
        host, port = split_host_port(part)
        ip = _literal(host)
        replicas.append(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    if not replicas:
        raise ValueError(f"{address!r} names no replica")
    return tuple(dict.fromkeys(replicas))


def grpc_target(address: str) -> str:
    """The gRPC target for `address`: a comma list becomes an `ipv4:`/`ipv6:` target (gRPC
    resolves those itself, no DNS), anything else is passed through."""
    replicas = replica_list(address)
    if replicas is None:
        return address
    families = {"ipv6" if r.startswith("[") else "ipv4" for r in replicas}
    if len(families) > 1:
        raise ValueError(f"{address!r} mixes IPv4 and IPv6 replicas; list one family")
    return f"{families.pop()}:{','.join(replicas)}"


def dns_name(address: str) -> tuple[str, int] | None:
    """(name, port) of a `dns:///name:port` target (the authority, if any, is ignored)."""
    if not address.startswith("dns:"):
        return None
    rest = address.removeprefix("dns:")
    if rest.startswith("//"):
        rest = rest[2:].partition("/")[2]  # dns://authority/name:port
    return split_host_port(rest)


def _score(key: str, replica: str) -> int:
    digest = hashlib.blake2b(f"{key}\x00{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def affinity_key(adapter_ref: str) -> str:
    """The adapter a reference names, without `@version`/`@alias`: every version of one
    adapter shares its replicas, so an alias flip finds the new version's neighbours warm."""
    return adapter_ref.partition("@")[0].strip()


@dataclass
class _Replica:
    address: str
    in_flight: int = 0
    down_until: float = 0.0
    #: Adapters homed here (with `adapters_per_replica`), least recently routed first.
    adapters: OrderedDict[str, None] = field(default_factory=OrderedDict)


class ReplicaPicker:
    """Chooses a replica per call and counts calls in flight on each; thread-safe.

    `spread`: replicas an adapter's calls share while none is overloaded (1: one home).
    `balance_factor`: a replica with more than `balance_factor` times the mean in-flight
    calls (counting the new one) is overloaded and passed over (≥ 1).
    `adapters_per_replica`: adapters homed on one replica at most (0: no bound).
    """

    def __init__(
        self,
        replicas: Iterable[str],
        spread: int = 1,
        balance_factor: float = 1.25,
        adapters_per_replica: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if spread < 1:
            raise ValueError("spread must be at least 1")
        if balance_factor < 1:
            raise ValueError("balance_factor must be at least 1")
        self.spread = spread
        self.balance_factor = balance_factor
        self.adapters_per_replica = max(0, adapters_per_replica)
        self.clock = clock
        self._lock = threading.Lock()
        self._replicas: dict[str, _Replica] = {}
        self._turn = itertools.count()
        self.update(replicas)

    @property
    def replicas(self) -> tuple[str, ...]:
        return tuple(self._replicas)

    def update(self, replicas: Iterable[str]) -> None:
        """Replaces the replica set (DNS answered anew); counts of kept replicas stay."""
        wanted = list(dict.fromkeys(replicas))
        if not wanted:
            raise ValueError("no replicas to pick from")
        with self._lock:
            self._replicas = {a: self._replicas.get(a) or _Replica(a) for a in wanted}

    def in_flight(self, replica: str) -> int:
        item = self._replicas.get(replica)
        return item.in_flight if item else 0

    def ranking(self, key: str) -> list[str]:
        """Every replica, the key's most preferred first (rendezvous order)."""
        return sorted(self._replicas, key=lambda a: _score(key, a), reverse=True)

    def pick(self, key: str | None = None, exclude: Sequence[str] = ()) -> str:
        """A replica for one call (counted as in flight until `done`); `exclude`: replicas
        that just failed this call. Down and excluded replicas are used only if nothing
        else is left."""
        with self._lock:
            now = self.clock()
            live = [
                r
                for r in self._replicas.values()
                if r.down_until <= now and r.address not in exclude
            ]
            if not live:
                live = [r for r in self._replicas.values() if r.address not in exclude]
            if not live:
                live = list(self._replicas.values())
            chosen = self._affine(key, live) if key else self._round_robin(live)
            chosen.in_flight += 1
            return chosen.address

    def _round_robin(self, live: list[_Replica]) -> _Replica:
        return live[next(self._turn) % len(live)]

    def _affine(self, key: str, live: list[_Replica]) -> _Replica:
        ranked = sorted(live, key=lambda r: _score(key, r.address), reverse=True)
        if self.adapters_per_replica:
            ranked = self._homes_first(key, ranked)
        total = sum(r.in_flight for r in self._replicas.values()) + 1
        bound = math.ceil(self.balance_factor * total / len(live))
        home = ranked[: self.spread]
        best = min(home, key=lambda r: r.in_flight)  # ties: the higher-ranked
        if best.in_flight + 1 <= bound:
            return best
        for replica in ranked[self.spread :]:
            if replica.in_flight + 1 <= bound:
                return replica
        return min(ranked, key=lambda r: r.in_flight)

    def _homes_first(self, key: str, ranked: list[_Replica]) -> list[_Replica]:
        """`ranked` with the key's homes first, placing it where there is room if needed."""
        wanted = min(self.spread, len(ranked))
        homes = [r for r in ranked if key in r.adapters]
        for replica in ranked:
            if len(homes) >= wanted:
                break
            if replica not in homes and len(replica.adapters) < self.adapters_per_replica:
                homes.append(replica)
        for replica in ranked:  # every replica full: the best ones give up their oldest
            if len(homes) >= wanted:
                break
            if replica not in homes:
                replica.adapters.popitem(last=False)
                homes.append(replica)
        for replica in homes:
            replica.adapters[key] = None
            replica.adapters.move_to_end(key)
        return homes + [r for r in ranked if r not in homes]

    def homes(self, key: str) -> list[str]:
        """Replicas the key is homed on (with `adapters_per_replica`)."""
        return [a for a, r in self._replicas.items() if key in r.adapters]

    def done(self, replica: str) -> None:
        with self._lock:
            item = self._replicas.get(replica)
            if item is not None and item.in_flight > 0:
                item.in_flight -= 1

    def mark_down(self, replica: str, seconds: float) -> None:
        """`replica` answered UNAVAILABLE: pass it over for `seconds` while others are up."""
        with self._lock:
            item = self._replicas.get(replica)
            if item is not None:
                item.down_until = self.clock() + seconds
