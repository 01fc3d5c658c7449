"""Imported once by the supervisor's fork server, before it forks the service processes.

Where dlib's 68-point landmark model is installed (the opt-in ``landmarks: dlib68``, package extra
``dlib68``): it is 100 MB of regression trees, and every landmark call reads
megabytes of them. Loaded here, every camera process forked afterwards shares one copy of it
(copy-on-write, never written), which the CPU's caches can then hold for all of them: with 12
processes on 2 cores a landmark call took 2.3 ms with a copy each and 1.2-1.4 ms with one
shared copy. A model that is missing or fails to load is left for each camera that chose it to
report as it starts. The default face mesh is 2.5 MB and loads in each camera process.
"""

from liveness.errors import ModelError
from liveness.landmarks import shape_predictor

try:
    shape_predictor()
except (ModelError, RuntimeError):
    pass
