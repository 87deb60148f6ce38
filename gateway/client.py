"""A small client of the local REST API (used by the demo, the tests and operators)."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp


class ApiError(Exception):
    def __init__(self, http_status: int, body) -> None:
        super().__init__(f"HTTP {http_status}: {body}")
        self.http_status = http_status
        self.body = body


class LocalApiClient:
    """Talks to one node's local API as one local system (bearer token)."""

    def __init__(self, base_url: str, token: str, ca_file: Path) -> None:
        self.base_url = base_url.rstrip("/")
        context = ssl.create_default_context(cafile=str(ca_file))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=300),
        )

    async def __aenter__(self) -> LocalApiClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def submit(self, envelope_xml: bytes, payload, payload_name: str = "data.xml") -> tuple[int, dict]:
        """Submit a message; ``payload`` is bytes or an open binary file (streamed)."""
        form = aiohttp.FormData()
        form.add_field("envelope", envelope_xml, filename="envelope.xml", content_type="application/xml")
        form.add_field("payload", payload, filename=payload_name, content_type="application/octet-stream")
        async with self._session.post(f"{self.base_url}/api/v1/messages", data=form) as response:
            return response.status, await response.json(content_type=None)

    async def _get_json(self, path: str):
        async with self._session.get(self.base_url + path) as response:
            if response.status != 200:
                raise ApiError(response.status, await response.text())
            return await response.json(content_type=None)

    async def status(self, sender: str, message_id: str) -> dict:
        return await self._get_json(f"/api/v1/messages/{sender}/{message_id}")

    async def inbox(self, participant: str) -> list[dict]:
        return await self._get_json(f"/api/v1/participants/{participant}/inbox")

    async def receipts(self, participant: str, after: int = 0) -> list[dict]:
        return await self._get_json(f"/api/v1/participants/{participant}/receipts?after={after}")

    async def payload(self, participant: str, sender: str, message_id: str, sink=None) -> bytes:
        url = f"{self.base_url}/api/v1/participants/{participant}/inbox/{sender}/{message_id}/payload"
        async with self._session.get(url) as response:
            if response.status != 200:
                raise ApiError(response.status, await response.text())
            if sink is None:
                return await response.read()
            async for chunk in response.content.iter_chunked(256 * 1024):
                sink.write(chunk)
            return b""

    async def envelope(self, participant: str, sender: str, message_id: str) -> bytes:
        url = f"{self.base_url}/api/v1/participants/{participant}/inbox/{sender}/{message_id}/envelope"
        async with self._session.get(url) as response:
            if response.status != 200:
                raise ApiError(response.status, await response.text())
            return await response.read()

    async def acknowledge(self, participant: str, sender: str, message_id: str) -> int:
        url = f"{self.base_url}/api/v1/participants/{participant}/inbox/{sender}/{message_id}/ack"
        async with self._session.post(url) as response:
            return response.status
