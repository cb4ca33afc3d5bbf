"""The web dashboard, served by the API server at `/` with the same tokens: server-rendered Jinja2
pages, htmx and Server-Sent Events for the live parts, uPlot charts; every asset in static/.

`install(app)` adds the pages, the static files and the charts' sampler to the API's FastAPI app;
the API's lifespan starts and stops the sampler (`app.state.sampler`).
"""
