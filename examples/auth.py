"""API keys and ACLs.

python -m fila.testing --port 5555 --api-key bootstrap-key &
python examples/auth.py [addr]             # safe to run again and again
"""

import sys

from fila import Client
from fila.errors import ForbiddenError
from fila.errors import QueueAlreadyExistsError

addr = sys.argv[1] if len(sys.argv) > 1 else "localhost:5555"

with Client(addr, api_key="bootstrap-key") as admin:  # the server's bootstrap key: a superadmin
    try:
        admin.create_queue("orders.eu")
    except QueueAlreadyExistsError:
        pass
    created = admin.create_api_key("order-service")  # created.raw_key is shown only this once
    admin.set_acl(created.key_id, [("produce", "orders.*"), ("consume", "orders.*")])
    print(admin.get_acl(created.key_id))

    with Client(addr, api_key=created.raw_key) as service:
        service.enqueue("orders.eu", None, b"hello")
        try:
            service.list_queues()  # needs admin on "*"
        except ForbiddenError as exc:
            print("as expected:", exc)

        admin.revoke_api_key(created.key_id)  # takes effect at the service's next request
        try:
            service.enqueue("orders.eu", None, b"again")
        except ForbiddenError as exc:
            print("after revoking:", exc)

    print("keys left:", [k.name for k in admin.list_api_keys()])
