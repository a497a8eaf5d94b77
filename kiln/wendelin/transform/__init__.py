"""Transformations: stream ranges into data arrays, in the background of `kiln wendelin serve`.

``kinds`` (what each transformation reads and writes, one step at a time), ``wav``,
``spectrum`` and ``records`` (the decoding and computing), ``compute`` (Dask: threads or a
``dask.distributed`` scheduler), ``declarations`` (what is declared, by hand or per policy),
``runner`` (the background loop in the service and its status), ``cli`` (`kiln wendelin
transform`, `kiln wendelin policy transform`, `kiln wendelin status`).
"""
