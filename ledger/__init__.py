"""The oretrace domain, pure: models, signed envelopes, validation rules,
proof statements, sealed openings, payload builders and disclosure bundles.
Used by the server (api) and the client (sdk); does no I/O."""
