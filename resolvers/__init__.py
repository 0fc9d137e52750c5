"""GraphQL layer: Strawberry types, thin resolvers, DataLoaders, federation v2."""
