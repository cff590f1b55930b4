"""API keys and ACLs.

python -m fila.testing --api-key bootstrap-key &
python examples/auth.py [addr]
"""

import sys

from fila import Client, Permission
from fila.errors import ForbiddenError

addr = sys.argv[1] if len(sys.argv) > 1 else "localhost:5555"

with Client(addr, api_key="bootstrap-key") as admin:
    admin.create_queue("orders.eu")
    key = admin.create_api_key("order-service")  # key.key is shown only once
    admin.set_acl(key.key_id, [Permission.produce("orders.*"), Permission.consume("orders.*")])
    print(admin.get_acl(key.key_id))

    with Client(addr, api_key=key.key) as service:
        service.enqueue("orders.eu", b"hello")
        try:
            service.list_queues()  # needs admin
        except ForbiddenError as exc:
            print("as expected:", exc)

    admin.revoke_api_key(key.key_id)
