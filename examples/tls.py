"""TLS and mutual TLS: the client takes PEM bytes.

python examples/tls.py    # starts its own TLS test broker with throwaway certificates (needs cryptography)
"""

import tempfile

from fila import Client
from fila.testing import Broker
from fila.testing import make_test_pki

with tempfile.TemporaryDirectory() as d:
    pki = make_test_pki(d)  # each file's path (pki.ca_cert) and its PEM bytes (pki.ca_cert_pem)
    with Broker(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca_cert) as broker:
        # ca_cert replaces the system trust store; tls=True alone would use the system's.
        with Client(
            broker.address, ca_cert=pki.ca_cert_pem, client_cert=pki.client_cert_pem, client_key=pki.client_key_pem
        ) as client:
            client.create_queue("secure")
            print("enqueued over mTLS:", client.enqueue("secure", None, b"secret"))
