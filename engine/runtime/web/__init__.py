"""The web: the Starlette application, JSON API, OpenAPI, authentication, webhooks route, widgets and screens."""
