"""The web dashboard, mounted by `api.app.create_app` through `mount(app)`.

Pages: `/` (campaigns), `/campaigns/{id}`, `/programs/{id}`, `/problems` (list and upload),
`/problems/{id}` (files, config, a campaign form); assets under `/dashboard/static`
(from this package) and `/dashboard/vendor/plotly.min.js` (from the installed plotly package);
read-only aggregates under `/dashboard-api`. See docs/dashboard.md.
"""
from __future__ import annotations

from fastapi import FastAPI


def mount(app: FastAPI) -> None:
    from fastapi.staticfiles import StaticFiles

    from evoforge.api.dashboard.pages import STATIC_DIR, STATIC_URL
    from evoforge.api.dashboard.routes import router

    app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="dashboard-static")
