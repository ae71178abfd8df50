"""Ports a service picks before binding them: never the service's own port, never one handed out twice."""

import socket

from recsys_assets.serving import ports
from recsys_assets.serving.config import ServingConfig
from recsys_assets.settings import Settings


def test_a_port_reserved_or_handed_out_is_never_picked_again(monkeypatch):
    # The service's port is unbound until HAProxy starts: a pick for Ray's metrics export once returned it.
    monkeypatch.setattr(ports, "_HANDED_OUT", set())
    ports.reserve(*range(20_000, 29_998))  # all but two ports of the range
    assert {ports.server_port(), ports.server_port()} == {29_998, 29_999}


def test_a_block_is_below_the_ranges_the_os_and_ray_pick_from_and_free():
    start = ports.free_port_block(8)
    block = range(start, start + 8)
    assert 20_000 <= start and block[-1] < 30_000
    with socket.socket() as s:
        s.bind(("127.0.0.1", block[3]))  # every port of it is free to bind
    assert ports.free_port_block(8) not in block


def test_the_service_config_reserves_its_own_port(monkeypatch, tmp_path):
    monkeypatch.setattr(ports, "_HANDED_OUT", set())
    monkeypatch.setenv("RECSYS_SERVE_PORT", "24321")
    config = ServingConfig.from_settings(Settings(home=tmp_path))
    assert config.port == 24_321 and 24_321 in ports._HANDED_OUT
