"""A foreign process knocking on a cluster's ports: ``python -m tests.knock ADDRESS...``.

For each address it tries plain TCP and TLS with a certificate of its own, and asks for
the server's identity, as any other user on the node could. It prints one line per
attempt: ``ADDRESS KIND: accepted (...)`` or ``ADDRESS KIND: refused (...)``.
"""

import asyncio
import sys

from distributed.comm import connect
from distributed.security import Security

KINDS = ("plain", "foreign-tls")


async def knock(address: str, kind: str) -> str:
    host_port = address.split("://", 1)[1]
    if kind == "plain":
        target, args = f"tcp://{host_port}", {}
    else:
        target, args = f"tls://{host_port}", Security.temporary().get_connection_args("client")
    try:
        comm = await asyncio.wait_for(connect(target, timeout=5, **args), 10)
        await comm.write({"op": "identity", "reply": True})
        reply = await asyncio.wait_for(comm.read(), 5)
        await comm.close()
    except Exception as err:  # every way of being turned away counts
        return f"refused ({type(err).__name__})"
    return f"accepted ({reply.get('type') if isinstance(reply, dict) else reply!r})"


async def main(addresses: list[str]) -> None:
    for address in addresses:
        for kind in KINDS:
            print(f"{address} {kind}: {await knock(address, kind)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
