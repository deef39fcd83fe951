"""Entries of any pinned BPF map, present or absent, keys and values by BTF field names or raw hex.

Every entry is encoded before the first write, so a bad entry changes nothing. Per-CPU maps get
the same value on every CPU (and count as present only when every CPU holds it). Array maps
cannot delete: `absent` writes zeros there, and a zeroed slot counts as absent.
"""
import os

from . import btf as btfmod
from . import libbpf
from ..errors import EngineError

_ARRAYS = {libbpf.BPF_MAP_TYPE_ARRAY, libbpf.BPF_MAP_TYPE_PERCPU_ARRAY}
_TYPE_NAMES = {1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array", 9: "lru_hash",
               10: "lru_percpu_hash", 12: "array_of_maps", 13: "hash_of_maps"}
_MAP_IN_MAP = {libbpf.BPF_MAP_TYPE_ARRAY_OF_MAPS, libbpf.BPF_MAP_TYPE_HASH_OF_MAPS}


def _hex(value, size, field):
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return value.to_bytes(size, "little")
        except OverflowError:
            raise EngineError("%s: %d does not fit in %d bytes" % (field, value, size), field=field, value=value)
    if not isinstance(value, str):
        raise EngineError("%s: %r must be a hex string of %d bytes" % (field, value, size), field=field, value=value)
    text = value.strip().lower()
    text = text[2:] if text.startswith("0x") else text
    for sep in (":", "-", " "):
        text = text.replace(sep, "")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise EngineError("%s: %r is not hex" % (field, value), field=field, value=value)
    if len(raw) != size:
        raise EngineError("%s: %r is %d bytes, the map's are %d" % (field, value, len(raw), size),
                          field=field, value=value)
    return raw


class PinnedMap:
    def __init__(self, path, raw=False):
        if not isinstance(path, str) or not os.path.isabs(path):
            raise EngineError("path: %r must be the absolute path of a pinned map" % (path,), field="path", value=path)
        if not os.path.exists(path):
            raise EngineError("path: %r does not exist (no map pinned there)" % path, field="path", value=path)
        try:
            self.map = libbpf.Map.from_pin(path)
        except libbpf.BpfError as exc:
            raise EngineError("path: %r is not a pinned map: %s" % (path, exc), field="path", value=path)
        self.path = path
        self.info = self.map.info
        self.raw = raw
        self.btf = None
        if self.info["type"] in _MAP_IN_MAP:
            self.close()
            raise EngineError("path: %r is a map of maps; its values are map fds, not data" % path,
                              field="path", value=path)
        if not raw:
            btf_id, self.key_tid, self.value_tid = btfmod.map_btf_ids(self.map.fd)
            if not btf_id or not self.key_tid or not self.value_tid:
                self.close()
                raise EngineError("path: the map at %r has no BTF for its key and value; give them as hex "
                                  "with raw=true" % path, field="raw", value=raw)
            self.btf = btfmod.Btf(btfmod.raw_btf(btf_id))

    def close(self):
        self.map.close()

    def describe(self):
        d = {"name": self.info["name"], "id": self.info["id"], "type": _TYPE_NAMES.get(self.info["type"],
                                                                                       self.info["type"]),
             "key_size": self.info["key_size"], "value_size": self.info["value_size"],
             "max_entries": self.info["max_entries"]}
        if self.btf:
            d["key_type"] = self.btf.describe(self.key_tid)
            d["value_type"] = self.btf.describe(self.value_tid)
        return d

    def enc_key(self, value, field):
        if self.raw:
            return _hex(value, self.info["key_size"], field)
        return self.btf.encode(self.key_tid, value, field)

    def enc_value(self, value, field):
        if self.raw:
            return _hex(value, self.info["value_size"], field)
        return self.btf.encode(self.value_tid, value, field)

    def dec_key(self, raw):
        return raw.hex() if self.raw else self.btf.decode(self.key_tid, raw)

    def dec_value(self, raw):
        return raw.hex() if self.raw else self.btf.decode(self.value_tid, raw)

    def read(self, key):
        """Stored value bytes (per-CPU maps: the list of each CPU's), or None when absent."""
        if self.map.percpu:
            return self.map.lookup_percpu(key)
        return self.map.lookup(key)

    def write(self, key, value):
        if self.map.percpu:
            slot = ((len(value) + 7) // 8) * 8
            value = (value + bytes(slot - len(value))) * libbpf.num_possible_cpus()
        self.map.update(key, value)


def ensure(path, entries, state="present", raw=False, check_mode=False):
    """entries: [{'key': ..., 'value': ...}] (value ignored for absent). Returns a result dict."""
    if state not in ("present", "absent"):
        raise EngineError("state: %r must be present or absent" % (state,), field="state", value=state)
    pm = PinnedMap(path, raw)
    try:
        is_array = pm.info["type"] in _ARRAYS
        zero = bytes(pm.info["value_size"])
        plan = []
        for i, e in enumerate(entries):
            f = "entries[%d]" % i if len(entries) > 1 else ""
            if not isinstance(e, dict) or "key" not in e:
                raise EngineError("%s: each entry needs a key" % (f or "key"), field=f or "key")
            key = pm.enc_key(e["key"], (f + ".key") if f else "key")
            if state == "present":
                if e.get("value") is None:
                    raise EngineError("%s: a value is required with state=present" % ((f + ".value") if f else "value"),
                                      field=(f + ".value") if f else "value")
                value = pm.enc_value(e["value"], (f + ".value") if f else "value")
            else:
                value = zero if is_array else None
            plan.append((e, key, value))
        out, changed = [], False
        for e, key, value in plan:
            cur = _flatten(pm.read(key))
            if state == "absent" and is_array and cur is not None and all(c == zero for c in cur):
                cur = None
            want = None if value is None or (state == "absent" and is_array) else [value] * len(cur or [value])
            same = (cur is None) if state == "absent" else (cur is not None and all(c == value for c in cur))
            entry = {"key": pm.dec_key(key), "before": _dec_all(pm, cur), "after": _dec_all(pm, want),
                     "changed": not same}
            out.append(entry)
            if same:
                continue
            changed = True
            if check_mode:
                continue
            try:
                if state == "present" or is_array:
                    pm.write(key, value)
                else:
                    pm.map.delete(key)
            except libbpf.BpfError as exc:
                raise EngineError("%s: cannot write the entry %r: %s" % (path, entry["key"], exc), field="path")
        return {"changed": changed, "entries": out, "map": pm.describe()}
    finally:
        pm.close()


def _flatten(cur):
    if cur is None:
        return None
    return cur if isinstance(cur, list) else [cur]


def _dec_all(pm, values):
    if values is None:
        return None
    decoded = [pm.dec_value(v) for v in values]
    if pm.map.percpu and any(d != decoded[0] for d in decoded):
        return {"per_cpu": decoded}
    return decoded[0]


def dump(path, raw=False, limit=1000):
    """All entries (up to limit), decoded: for reading a map from a playbook."""
    pm = PinnedMap(path, raw)
    try:
        out = []
        for k, v in pm.map.items():
            if len(out) >= limit:
                break
            vals = pm.map.lookup_percpu(k) if pm.map.percpu else [v]
            out.append({"key": pm.dec_key(k), "value": _dec_all(pm, vals)})
        return {"changed": False, "entries": out, "map": pm.describe()}
    finally:
        pm.close()
