"""The client side of oretrace: wallet (keys, openings), GraphQL client,
publisher (builds, proves, submits), the `oretrace` CLI and the demo."""
