"""Performance tooling, outside the paper's code path: nothing in training, evaluation or
prediction imports it.

- ``bench``          ``python -m tcl bench``: training and inference throughput of one
                     configuration, FLOPs, fraction of peak, memory, the stem's share.
- ``stem``           ``python -m tcl.perf.stem``: the stem convolution alone in each
                     implementation of tcl.models.stem.
- ``bench_predict``  ``python -m tcl.perf.bench_predict``: ``tcl predict``'s seconds per patient.
- ``gpu_check``      ``make gpu-check`` (``bash tcl/perf/gpu_check.sh``): every GPU figure in one
                     run on a GPU machine without network; standard library only until its
                     first phase has installed the project's wheels.
- ``gpu_wheels``     ``make gpu-wheels``: the wheels that check installs there.
"""
