#!/usr/bin/env python3
"""Writes the fuzz seeds from the extracted reference captures (../tests/fixtures)."""
import glob
import os

here = os.path.dirname(os.path.abspath(__file__))
fixtures = os.path.join(here, "..", "tests", "fixtures")
for kind, pattern in [("dhcp_message", "*.dhcp"), ("tftp_packet", "*.tftp")]:
    out = os.path.join(here, "corpus", kind)
    os.makedirs(out, exist_ok=True)
    seen = set()
    for path in sorted(glob.glob(os.path.join(fixtures, pattern))):
        for line in open(path):
            fields = line.split()
            payload = bytes.fromhex(fields[3])
            if kind == "dhcp_message":
                # dhcp_message reads the request's source (4 address bytes, 2 port bytes) first.
                ip, port = fields[1].rsplit(":", 1)
                payload = bytes(int(o) for o in ip.split(".")) + int(port).to_bytes(2, "big") + payload
            if payload in seen:
                continue
            seen.add(payload)
            with open(os.path.join(out, f"seed-{len(seen):03}"), "wb") as f:
                f.write(payload)
# Session seeds: options header, then ACK 0, ACK 1, a timeout, garbage.
out = os.path.join(here, "corpus", "tftp_session")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "seed-001"), "wb") as f:
    f.write(bytes([0x05, 0xb4, 3, 40, 4, 0, 4, 0, 0, 4, 0, 4, 0, 1, 0, 3, 9, 9, 9]))
