"""Serving a checkpoint over HTTP (`visionkit-serve`, on LitServe): uploads checked in `uploads`, results put on
the wire in `encode`, the workers' API in `api`, the server and its page in `app`. LitServe is imported here
only, so the rest of visionkit runs without it."""
