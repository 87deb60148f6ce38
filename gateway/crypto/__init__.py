"""Crypto recipes: ``seal`` / ``open_sealed`` for messages, ``sign`` / ``verify`` for receipts.

Only :mod:`gateway.crypto.primitives` touches raw primitives; everything else in the
gateway uses the recipes of :mod:`gateway.crypto.seal`.
"""
