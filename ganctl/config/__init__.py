"""What the config may hold and build: its typed schemas, the range of every value, and the safe
builder that turns a node into one of ganctl's own objects."""
