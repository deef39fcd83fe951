"""The engine's libbpf binding against the real kernel: pinning, attach modes, errors."""
import errno
import os
import socket
import subprocess

import pytest

from lbtest import BPF_DIR, XDP_PASS

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi, libbpf

BALANCER = os.path.join(BPF_DIR, "balancer.o")


def test_pinned_maps_and_rings_survive_a_reload(bpf_objects, bpffs_dir):
    key, meta = bytes(abi.addr_key("192.0.2.1")), bytes(abi.LbAddrMeta(flags=abi.ADDR_F_NO_ECHO))
    vkey, vmeta = abi.vip_key("192.0.2.1", 80, "tcp"), abi.vip_meta(3, abi.VIP_F_NO_SPORT)
    with libbpf.BpfObject(BALANCER, pin_root_path=bpffs_dir) as obj:
        obj.load()
        obj.map(abi.MAP_VIP_ADDRS).update(key, meta)
        abi.vip_set(obj.map(abi.MAP_VIP_TABLE), vkey, vmeta)
        abi.ring_replace(obj.map(abi.MAP_RINGS), 3, [7] * abi.RING_SIZE)
        assert obj.map_pin_path(abi.MAP_VIP_ADDRS) == os.path.join(bpffs_dir, abi.MAP_VIP_ADDRS)
    assert sorted(os.listdir(bpffs_dir)) == sorted(n for n in abi.__dict__.values()
                                                   if isinstance(n, str) and n.startswith("lb_"))
    with libbpf.BpfObject(BALANCER, pin_root_path=bpffs_dir) as obj:  # a new program reuses the maps
        obj.load()
        assert obj.map(abi.MAP_VIP_ADDRS).lookup(key) == meta
        assert [(bytes(k), bytes(m)) for k, m in abi.vips(obj.map(abi.MAP_VIP_TABLE))] == [(bytes(vkey), bytes(vmeta))]
        assert abi.ring_read(obj.map(abi.MAP_RINGS), 3) == [7] * abi.RING_SIZE
    with libbpf.Map.from_pin(os.path.join(bpffs_dir, abi.MAP_VIP_ADDRS)) as m:  # what a CLI does
        assert dict(m.items()) == {key: meta}


def test_unpinned_load_leaves_bpffs_alone(bpf_objects, bpffs_dir):
    with libbpf.BpfObject(BALANCER, pin_root_path=bpffs_dir, pin_maps=False) as obj:
        obj.load()
        assert obj.map_pin_path(abi.MAP_VIP_ADDRS) is None
    assert os.listdir(bpffs_dir) == []


def test_program_info(lb):
    info = libbpf.prog_info(lb.fd)
    assert info["name"] == abi.PROG_BALANCER
    assert len(info["tag"]) == 16 and info["id"] > 0
    assert {libbpf.map_info(lb.obj.map_fd(n))["id"] for n in lb.obj.map_names()} == set(info["map_ids"])


def test_errors_carry_errno_and_libbpf_message(bpf_objects, tmp_path):
    junk = tmp_path / "junk.o"
    junk.write_bytes(b"not an ELF file")
    with pytest.raises(libbpf.BpfError) as exc:
        libbpf.BpfObject(str(junk))
    assert exc.value.errno and "libbpf" in exc.value.message
    with libbpf.BpfObject(BALANCER, pin_maps=False) as obj:
        obj.load()
        with pytest.raises(libbpf.BpfError) as exc:
            obj.program_fd("nope")
        assert exc.value.errno == errno.ENOENT
        m = obj.map(abi.MAP_VIP_ADDRS)
        with pytest.raises(libbpf.BpfError, match="key is 3 bytes"):
            m.lookup(b"abc")
        assert m.lookup(bytes(abi.LbAddr())) is None and m.delete(bytes(abi.LbAddr())) is False


def test_missing_libbpf_names_the_package(monkeypatch):
    monkeypatch.setattr(libbpf, "_LIBBPF_SONAME", "libbpf-does-not-exist.so.1")
    monkeypatch.setattr(libbpf, "_lib", None)
    with pytest.raises(libbpf.BpfError, match="libbpf-does-not-exist.so.1 is missing.*libbpf1"):
        libbpf.BpfObject(BALANCER)


@pytest.fixture
def veth():
    name = "xlbt%d" % (os.getpid() % 100000)
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    try:
        yield socket.if_nametoindex(name)
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


def test_xdp_attach_replace_detach(lb, pass_prog, veth):
    assert libbpf.xdp_query(veth)["prog_id"] == 0
    assert libbpf.xdp_attach(veth, lb.fd) == "native"  # veth has native XDP
    q = libbpf.xdp_query(veth)
    assert (q["prog_id"], q["mode"]) == (libbpf.prog_info(lb.fd)["id"], "native")
    with pytest.raises(libbpf.BpfError) as exc:  # atomic replace refuses a stale expectation
        libbpf.xdp_attach(veth, lb.fd, old_prog_fd=pass_prog)
    assert exc.value.errno == errno.EEXIST
    libbpf.xdp_attach(veth, pass_prog, old_prog_fd=lb.fd)
    assert libbpf.xdp_query(veth)["prog_id"] == libbpf.prog_info(pass_prog)["id"]
    with pytest.raises(libbpf.BpfError):
        libbpf.xdp_attach(veth, lb.fd, no_replace=True)
    libbpf.xdp_detach(veth)
    assert libbpf.xdp_query(veth) == {"prog_id": 0, "mode": None, "drv_prog_id": 0, "skb_prog_id": 0,
                                      "hw_prog_id": 0}
    assert libbpf.xdp_attach(veth, lb.fd, mode="generic") == "generic"
    libbpf.xdp_detach(veth, mode="generic")


def test_pass_program_is_a_no_op(pass_prog):
    frame = bytes(range(64))
    res = libbpf.prog_test_run(pass_prog, frame)
    assert (res.retval, res.data) == (XDP_PASS, frame)
