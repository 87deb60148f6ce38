"""``python -m gateway.auth``: a new client secret and the ``secret_hash`` line for ``[[oauth_clients]]``."""

from .hashing import main

main()
