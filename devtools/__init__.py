"""Everything that runs the app locally without being the app.

- ``harness``: the runtime harness (load, index and invoke ``function_app.py``
  through ``azure-functions-runtime``, playing the Functions host);
- ``azurite``: the Azurite runner (Blob and Queue storage on free loopback ports);
- ``emulator_process``: the emulated tenant in its own process;
- ``demo``: ``./scripts/demo``;
- ``serve``: ``./scripts/serve``, the app on :7071 as ``func start`` serves it (with ``ncrontab``
  for the timer's schedule).

The deployed app never imports this package (``.funcignore`` leaves it out);
tests, scripts and benchmarks do.
"""
