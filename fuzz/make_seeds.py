"""Write seed inputs for fuzz_codec.py: valid bodies and frame streams from the pure codec."""

from __future__ import annotations

import sys
from pathlib import Path

from fila.protocol import pure


def seeds() -> list[bytes]:
    msg = pure.ConsumeMessage("id-1", {"k": "v", "é": "日本"}, b"payload", "tenant", 2, "orders", 3, ["t1", "t2"], 5, 6)
    delivery = pure.encode_delivery(7, [msg, msg])
    result = pure.encode_enqueue_result(1, [(0, "id-1"), (9, "")])
    ack = pure.encode_ack_result(1, [0, 1, 0x42])
    split = pure.encode_delivery(7, [msg], 20)
    stream = delivery + result + split + ack
    out = []
    for selector in range(8):
        payload = (delivery, result, ack, ack)[selector % 4][10:]
        out.append(bytes([selector, 0]) + payload)
    for selector in (4, 0x14, 0x24):
        for seed in (0, 0x43, 0xFF):
            out.append(bytes([selector, seed]) + stream)
    return out


def main() -> None:
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seeds()):
        (target / f"seed-{i:02d}").write_bytes(data)


if __name__ == "__main__":
    main()
