"""The commands: the ``liveness`` CLI, ``run`` and ``demo`` (a whole installation in one process
tree), replay, benchmarks and end-to-end runs. It sits above the services and ``liveness.models``,
which never import it."""
