"""``/docs`` and ``/redoc`` load their assets from the gateway, never from a CDN (the browser test
in ``tests/console/test_browser.py`` renders them with every other host blocked)."""

from __future__ import annotations

import re

import httpx


async def test_docs_pages_name_only_local_assets(client: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        response = await client.get(page)
        assert response.status_code == 200
        assert "default-src 'self'" in response.headers["content-security-policy"]
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", response.text)
        assert urls, page
        assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls
        assert "cdn" not in response.text.lower(), page
        for url in urls:
            if url.startswith("/docs-assets/"):
                asset = await client.get(url)
                assert asset.status_code == 200, url
                assert len(asset.content) > 1000, url
    response = await client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
