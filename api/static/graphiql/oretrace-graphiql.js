// oretrace's GraphiQL page: every asset comes from this server (/graphiql/...), none from a CDN.
// The landing query is an oretrace example; ?query=... and ?variables=... override it.
(function () {
  "use strict";
  var EXAMPLE_QUERY = [
    "# oretrace: confidential cobalt provenance (docs/api.md).",
    "# Lots carry Pedersen commitments, never amounts in the clear; claims about a lot",
    "# are verified offline from its disclosure bundle (`oretrace verify`).",
    "#",
    "# Run with Ctrl-Enter. Lists take `first` (cost budget: docs/api.md, Limits).",
    "{",
    "  lots(first: 5) {",
    "    edges {",
    "      node {",
    "        id",
    "        product",
    "        originClass",
    "        consumed",
    "        owner { id name country }",
    "        site { name country originClass }",
    "        claims(first: 5) { id kind originClass p q }",
    "      }",
    "    }",
    "    pageInfo { hasNextPage endCursor }",
    "  }",
    "}",
    "",
  ].join("\n");
  var parameters = new URLSearchParams(window.location.search);
  var url = window.location.origin + window.location.pathname;
  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: GraphiQL.createFetcher({ url: url }),
      defaultQuery: EXAMPLE_QUERY,
      query: parameters.get("query") || undefined,
      variables: parameters.get("variables") || undefined,
      defaultEditorToolsVisibility: true,
    }),
  );
})();
