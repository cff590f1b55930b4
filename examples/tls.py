"""TLS and mutual TLS from PEM bytes.

python examples/tls.py    # starts its own TLS broker with throw-away certificates
"""

import tempfile
from pathlib import Path

from fila import Client
from fila.testing import Broker, make_test_pki

with tempfile.TemporaryDirectory() as d:
    pki = make_test_pki(d)  # needs the 'cryptography' package
    ca = Path(pki.ca_cert).read_bytes()
    cert = Path(pki.client_cert).read_bytes()
    key = Path(pki.client_key).read_bytes()
    with Broker(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca_cert) as broker:
        # tls=True alone would verify against the system trust store instead of ca_cert.
        with Client(broker.address, ca_cert=ca, client_cert=cert, client_key=key) as client:
            client.create_queue("secure")
            print("enqueued over mTLS:", client.enqueue("secure", b"secret"))
