"""GraphiQL is served entirely by the server (issue 10, item 7): the page
loads only this server's assets, each of them is served, and its landing
query is an oretrace example that runs as is."""

from __future__ import annotations

import json
import re

import httpx

from api.app import GRAPHIQL_DIR


async def page(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/graphql", headers={"accept": "text/html"})


async def test_the_page_loads_only_local_assets(client: httpx.AsyncClient) -> None:
    response = await page(client)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert len(assets) == 5 and all(a.startswith("/graphiql/") for a in assets), assets
    assert "//" not in "".join(assets) and "http" not in response.text.replace("http-equiv", "")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    for asset in assets:
        served = await client.get(asset)
        assert served.status_code == 200 and len(served.content) > 100, asset
        kind = "text/css" if asset.endswith(".css") else "javascript"
        assert kind in served.headers["content-type"], (asset, served.headers["content-type"])


async def test_the_vendored_files_carry_their_licences(client: httpx.AsyncClient) -> None:
    for name in ("LICENSE.graphiql", "LICENSE.react"):
        assert "MIT License" in (GRAPHIQL_DIR / name).read_text()
    readme = (GRAPHIQL_DIR / "README.md").read_text()
    for name in ("graphiql.min.js", "graphiql.min.css", "react.production.min.js", "react-dom.production.min.js"):
        assert name in readme and (GRAPHIQL_DIR / name).stat().st_size > 1000


def landing_query() -> str:
    script = (GRAPHIQL_DIR / "oretrace-graphiql.js").read_text()
    lines = re.search(r"EXAMPLE_QUERY = \[(.*?)\]\.join", script, re.S).group(1)
    return "\n".join(json.loads(f"[{lines.rstrip().rstrip(',')}]"))


async def test_the_landing_query_is_an_oretrace_example_that_runs(gql) -> None:
    query = landing_query()
    assert query.startswith("# oretrace") and "lots(first: 5)" in query
    body = await gql(query)
    assert "errors" not in body and "edges" in body["data"]["lots"], body


async def test_a_missing_asset_is_a_404(client: httpx.AsyncClient) -> None:
    for path in ("/graphiql/nope.js", "/graphiql/../app.py", "/graphiql/%2e%2e/app.py"):
        assert (await client.get(path)).status_code == 404, path
