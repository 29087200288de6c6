"""The dashboard's pages, loaded when somebody first asks for them.

distributed imports the pages (bokeh) inside ``Scheduler()``: most of a second of CPU,
and far more from a parallel file system, on the path to a ready cluster where every
rank is busy starting. Imported in the background instead, they hold the scheduler
rank's GIL while the user's code runs there. Most batch jobs are never looked at, so
the port is bound (and printed) from the start and the pages are imported on the first
request: that visitor waits for the import, then is sent on to the page they asked for.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
from typing import Any

from tornado import web

log = logging.getLogger("launcher")


class DashboardOnFirstVisit:
    """Stands in for the dashboard on a scheduler's HTTP server until it is loaded."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.placeholder = web.Application([(r".*", _FirstVisit, {"dashboard": self})])
        self._loading: asyncio.Future[str | None] | None = None

    def install(self) -> None:
        """Answer every dashboard path with the loader; on the scheduler's event loop."""
        self.scheduler.http_application.add_application(self.placeholder)

    async def load(self) -> str | None:
        """Mount the pages once; why they cannot be, or None."""
        if self._loading is None:
            loop = asyncio.get_running_loop()
            self._loading = loop.create_future()
            # A daemon thread: asyncio's default executor would make the scheduler's
            # loop wait for an unfinished import at the job's end.
            threading.Thread(target=self._import, args=(loop, self._loading), daemon=True).start()
        return await asyncio.shield(self._loading)

    def _import(self, loop: asyncio.AbstractEventLoop, done: asyncio.Future) -> None:
        try:
            pages = importlib.import_module("distributed.dashboard.scheduler")
        except Exception as err:
            log.warning("the dashboard is not available: %s", err)
            result: Any = f"the dashboard is not available: {err}"
        else:
            result = pages
        loop.call_soon_threadsafe(self._mount, done, result)

    def _mount(self, done: asyncio.Future, pages: Any) -> None:
        if isinstance(pages, str):
            done.set_result(pages)
            return
        application = self.scheduler.http_application
        pages.connect(application, self.scheduler.http_server, self.scheduler, "/")
        application.applications.remove(self.placeholder)
        done.set_result(None)


class _FirstVisit(web.RequestHandler):
    def initialize(self, dashboard: DashboardOnFirstVisit) -> None:
        self.dashboard = dashboard

    async def get(self) -> None:
        problem = await self.dashboard.load()
        if problem is not None:
            raise web.HTTPError(503, reason=problem)
        self.redirect(self.request.uri or "/")  # now served by the pages
