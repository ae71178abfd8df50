"""The flows the platform needs (who talks to whom, on which port), evaluated against the NetworkPolicies as
Kubernetes evaluates them: a flow passes when, on the destination's side, no policy selects the destination
pod for Ingress or one of those that do admits the source (peers: podSelector, namespaceSelector, both,
ipBlock; ports: number, name, endPort), and the same on the source's side for Egress.

Pods are described by their namespace, labels and container ports (`Pod`); addresses outside the cluster
(the load balancer, Cloud SQL, Memorystore, the metadata server) by an IP (`Address`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict = field(default_factory=dict, hash=False)
    ports: dict = field(default_factory=dict, hash=False)  # container port name -> (number, protocol)

    def port_number(self, port: int | str, protocol: str) -> int | None:
        if isinstance(port, int):
            return port
        named = self.ports.get(port)
        return named[0] if named and named[1] == protocol else None


@dataclass(frozen=True)
class Address:
    ip: str


@dataclass(frozen=True)
class Flow:
    name: str
    source: str  # workload names (see `Workloads`)
    destination: str
    port: int
    protocol: str = "TCP"
    why: str = ""


def selects(selector: dict | None, labels: dict) -> bool:
    """A label selector (matchLabels, matchExpressions) against labels; {} selects everything."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _peer_admits(peer: dict, policy_namespace: str, other, namespaces: dict[str, dict]) -> bool:
    if "ipBlock" in peer:
        if not isinstance(other, Address):
            return False  # pod IPs in ipBlocks are implementation-defined: never counted on here
        ip = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except", []))
    if not isinstance(other, Pod):
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespaces.get(other.namespace, {})):
            return False
    elif other.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector", {}), other.labels)


def _port_admits(rule_ports: list | None, target: Pod | Address, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for rule in rule_ports:
        if rule.get("protocol", "TCP") != protocol:
            continue
        if "port" not in rule:
            return True
        start = target.port_number(rule["port"], protocol) if isinstance(target, Pod) else \
            rule["port"] if isinstance(rule["port"], int) else None
        if start is not None and start <= port <= rule.get("endPort", start):
            return True
    return False


def _policy_types(policy: dict) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))


def _side(policies: list[dict], direction: str, subject: Pod, other, port_target, port: int, protocol: str,
          namespaces: dict[str, dict]) -> tuple[bool, list[str]]:
    """(admitted, names of the policies that select `subject` for `direction`)."""
    selecting = [p for p in policies if p["metadata"].get("namespace") == subject.namespace
                 and direction in _policy_types(p) and selects(p["spec"].get("podSelector", {}), subject.labels)]
    if not selecting:
        return True, []
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_admits(peer, policy["metadata"]["namespace"], other, namespaces)
                                 for peer in peers)) and _port_admits(rule.get("ports"), port_target, port, protocol):
                return True, []
    return False, [p["metadata"]["name"] for p in selecting]


def blocked(policies: list[dict], source: Pod | Address, destination: Pod | Address, port: int, protocol: str,
            namespaces: dict[str, dict]) -> str | None:
    """Why the flow is refused (None: admitted on both sides)."""
    if isinstance(destination, Pod):
        ok, names = _side(policies, "Ingress", destination, source, destination, port, protocol, namespaces)
        if not ok:
            return f"no ingress rule of {', '.join(names)} (which select the destination) admits it"
    if isinstance(source, Pod):
        ok, names = _side(policies, "Egress", source, destination, destination, port, protocol, namespaces)
        if not ok:
            return f"no egress rule of {', '.join(names)} (which select the source) admits it"
    return None


def flow_errors(flows: list[Flow], workloads: dict[str, Pod | Address], policies: list[dict],
                namespaces: dict[str, dict]) -> list[str]:
    errors = []
    for flow in flows:
        missing = [w for w in (flow.source, flow.destination) if w not in workloads]
        if missing:
            errors.append(f"flow {flow.name}: no workload {', '.join(missing)} among the manifests")
            continue
        why = blocked(policies, workloads[flow.source], workloads[flow.destination], flow.port, flow.protocol,
                      namespaces)
        if why:
            errors.append(f"flow {flow.name} ({flow.source} -> {flow.destination}:{flow.port}/{flow.protocol}"
                          f"{', ' + flow.why if flow.why else ''}) is blocked: {why}")
    return errors


def open_errors(flows: list[Flow], workloads: dict[str, Pod | Address], policies: list[dict],
                namespaces: dict[str, dict]) -> list[str]:
    """The flows that must be refused and are admitted."""
    return [f"flow {flow.name} ({flow.source} -> {flow.destination}:{flow.port}/{flow.protocol}"
            f"{', ' + flow.why if flow.why else ''}) is admitted by the NetworkPolicies"
            for flow in flows if blocked(policies, workloads[flow.source], workloads[flow.destination], flow.port,
                                         flow.protocol, namespaces) is None]
