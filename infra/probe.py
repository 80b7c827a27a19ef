#!/usr/bin/env python3
"""Readiness probes that speak each server's own protocol (standard library only).

    probe.py kafka [HOST] [PORT]   Kafka ApiVersions, then a Metadata request:
                                   ready when the broker lists itself.
    probe.py cql [HOST] [PORT]     CQL native protocol v4: OPTIONS, STARTUP, then
                                   SELECT release_version FROM system.local.

Prints one line on success and exits 0; prints why on stderr and exits 1
otherwise. An open port is not enough: a Kafka broker accepts connections
before it is unfenced, and Cassandra's port can open before queries work.
"""

import socket
import struct
import sys

TIMEOUT = 5.0


class ProbeError(Exception):
    pass


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("connection closed by the server")
        buf += chunk
    return bytes(buf)


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, fmt):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ProbeError("short response")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def raw(self, n):
        if n < 0:
            return None
        if self.pos + n > len(self.data):
            raise ProbeError("short response")
        value = self.data[self.pos:self.pos + n]
        self.pos += n
        return value

    def short_string(self):
        n = self.take(">h")
        value = self.raw(n)
        return None if value is None else value.decode("utf-8", "replace")


# ---- Kafka -------------------------------------------------------------------

API_METADATA = 3
API_VERSIONS = 18


def kafka_request(sock, api_key, version, correlation, body):
    client = b"tern-infra-probe"
    # request header v1: api_key, api_version, correlation_id, client_id
    header = struct.pack(">hhih", api_key, version, correlation, len(client)) + client
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    reader = Reader(recv_exact(sock, size))
    if reader.take(">i") != correlation:  # response header v0
        raise ProbeError("mismatched correlation id")
    return reader


def probe_kafka(host, port):
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        r = kafka_request(sock, API_VERSIONS, 0, 1, b"")
        error = r.take(">h")
        if error != 0:
            raise ProbeError(f"ApiVersions error code {error}")
        ranges = {}
        for _ in range(r.take(">i")):
            key, lo, hi = r.take(">h"), r.take(">h"), r.take(">h")
            ranges[key] = (lo, hi)
        if API_METADATA not in ranges:
            raise ProbeError("broker does not offer Metadata")
        lo, hi = ranges[API_METADATA]
        # v4..v8 share one non-flexible layout; Kafka 4 still serves them.
        version = max(lo, 4)
        if version > min(hi, 8):
            raise ProbeError(f"Metadata versions {lo}..{hi} do not include 4..8")
        # topics: null (all topics), allow_auto_topic_creation: false
        r = kafka_request(sock, API_METADATA, version, 2, struct.pack(">ib", -1, 0))
        r.take(">i")  # throttle_time_ms
        brokers = []
        for _ in range(r.take(">i")):
            node, host_, port_ = r.take(">i"), r.short_string(), r.take(">i")
            r.short_string()  # rack
            brokers.append(f"{node}@{host_}:{port_}")
        cluster = r.short_string()
        if not brokers:
            raise ProbeError("Metadata lists no broker yet (broker still fenced)")
        return f"kafka: metadata v{version} ok, cluster {cluster}, brokers {' '.join(brokers)}"


# ---- CQL (native protocol v4) ------------------------------------------------

OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE = 0x00, 0x01, 0x02, 0x03
OP_OPTIONS, OP_SUPPORTED, OP_QUERY, OP_RESULT = 0x05, 0x06, 0x07, 0x08


def cql_string(s):
    b = s.encode("utf-8")
    return struct.pack(">H", len(b)) + b


def cql_request(sock, stream, opcode, body):
    sock.sendall(struct.pack(">BBhBi", 0x04, 0, stream, opcode, len(body)) + body)
    version, _flags, rstream, ropcode, length = struct.unpack(">BBhBi", recv_exact(sock, 9))
    if version != 0x84:
        raise ProbeError(f"unexpected protocol version byte {version:#x}")
    if rstream != stream:
        raise ProbeError("mismatched stream id")
    reader = Reader(recv_exact(sock, length))
    if ropcode == OP_ERROR:
        code = reader.take(">i")
        raise ProbeError(f"server error {code:#x}: {reader.short_string()}")
    return ropcode, reader


def probe_cql(host, port):
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        op, _ = cql_request(sock, 1, OP_OPTIONS, b"")
        if op != OP_SUPPORTED:
            raise ProbeError(f"OPTIONS answered opcode {op:#x}")
        startup = struct.pack(">H", 1) + cql_string("CQL_VERSION") + cql_string("3.0.0")
        op, _ = cql_request(sock, 2, OP_STARTUP, startup)
        if op == OP_AUTHENTICATE:
            raise ProbeError("server asks for authentication")
        if op != OP_READY:
            raise ProbeError(f"STARTUP answered opcode {op:#x}")
        query = b"SELECT release_version FROM system.local"
        # long string query, consistency ONE, no flags
        body = struct.pack(">i", len(query)) + query + struct.pack(">HB", 0x0001, 0)
        op, r = cql_request(sock, 3, OP_QUERY, body)
        if op != OP_RESULT or r.take(">i") != 0x0002:  # kind Rows
            raise ProbeError("QUERY did not return rows")
        flags, columns = r.take(">i"), r.take(">i")
        if flags & 0x0002:  # has_more_pages: paging state
            r.raw(r.take(">i"))
        if not flags & 0x0004:  # metadata present
            if flags & 0x0001:  # global table spec
                r.short_string()
                r.short_string()
            for _ in range(columns):
                if not flags & 0x0001:
                    r.short_string()
                    r.short_string()
                r.short_string()  # column name
                if r.take(">H") not in (0x000D, 0x000A):  # varchar / text
                    raise ProbeError("release_version is not text")
        if r.take(">i") < 1:
            raise ProbeError("system.local has no row")
        value = r.raw(r.take(">i"))
        release = value.decode("utf-8") if value is not None else "?"
        return f"cassandra: CQL v4 ok, release_version {release}"


def main(argv):
    probes = {"kafka": (probe_kafka, 9092), "cql": (probe_cql, 9042)}
    if len(argv) < 2 or argv[1] not in probes:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    probe, default_port = probes[argv[1]]
    host = argv[2] if len(argv) > 2 else "127.0.0.1"
    port = int(argv[3]) if len(argv) > 3 else default_port
    try:
        print(probe(host, port))
        return 0
    except (OSError, ProbeError, struct.error, UnicodeDecodeError) as e:
        print(f"{argv[1]} probe on {host}:{port} failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
