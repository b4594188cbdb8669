"""The hub's web dashboard: the files a browser loads (``index.html``, ``app.js``, ``app.css`` and
the vendored uPlot under ``vendor/``, copied by ``make dashboard-assets``), served from this package
by the hub's HTTP side (:mod:`kiln.hub.io.http`). The pages' data comes from :mod:`kiln.hub.views`
over the ``/api/live`` WebSocket (:mod:`kiln.hub.io.live`)."""
