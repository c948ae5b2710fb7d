"""The Worker's entry point: hands each request to the adapter, which runs the app."""

from workers import WorkerEntrypoint

from routes.table import build_app
from workers_adapter import WorkersAdapter

# Built at import time, so the route table is compiled once per isolate (and captured
# in the runtime's memory snapshot).
ADAPTER = WorkersAdapter(build_app().handle)


class Default(WorkerEntrypoint):
    async def fetch(self, request):  # type: ignore[no-untyped-def]
        return await ADAPTER.serve(request, self.env, self.ctx)
